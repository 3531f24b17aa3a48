-- Refresh grace returns the very same pair (PROTOCOL section 6, docs/auth.md): the
-- refresh token is re-derived from its token_id (an HMAC under the refresh-token key),
-- and the access token issued with it is signed again from the same claims, so the
-- times of that access token are kept here. Nothing secret is stored.
--
-- NULL for tokens issued before this migration: their pair cannot be made again, so a
-- grace retry of the token they replaced is answered 401 unauthenticated (nothing is
-- revoked; the device signs in again).

ALTER TABLE refresh_tokens
    ADD COLUMN access_iat bigint,
    ADD COLUMN access_exp bigint;
