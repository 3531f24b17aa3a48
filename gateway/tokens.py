"""Access tokens (short-lived JWTs) and refresh tokens (opaque, stored as SHA-256).

An access token names its user, device, session and *generation* (the id of the
refresh token it was issued with), so revoking either the session or one refresh
token also ends the access tokens that came with it (docs/auth.md).

Both can be made again, byte for byte, from what the database keeps: a refresh token is
an HMAC of its token id under its own key, and an access token is a deterministic HS256
signature of claims whose times are stored with the refresh token. That is how a retried
refresh gets the very same pair (docs/protocol.md section 6) without any token kept in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import jwt
import msgspec

from core.errors import Unauthenticated

_ALGORITHM = "HS256"
_TYPE = "concord.access"
#: Refresh tokens are 32 random bytes in URL-safe base64 (43 chars); anything much
#: longer is not one of ours and is refused before hashing.
_MAX_REFRESH_CHARS = 128
_MAX_ACCESS_CHARS = 4096


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified access token says. ``expired`` is decided against ``now``."""

    user_id: str
    device_id: str
    session_id: str
    generation: str
    expires_at: int
    expired: bool


class _Payload(msgspec.Struct, frozen=True, kw_only=True):
    typ: str
    sub: str
    device: str
    session: str
    gen: str
    iat: int
    exp: int


def iso_utc(epoch: float) -> str:
    """RFC 3339 UTC with a ``Z`` suffix, second precision."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AccessTokens:
    """Signs and verifies access tokens (HS256) with the access-token key of
    ``core.keys`` (never the root secret itself).

    ``legacy_key`` is the key tokens were signed with before keys were separated (the
    root secret): a token it verifies is reported *expired*, never valid, so a client
    holding one after the upgrade refreshes (``auth_expired``) instead of being signed
    out, and gains nothing else by it.
    """

    def __init__(self, key: bytes, ttl_seconds: int, *, legacy_key: bytes | None = None) -> None:
        self._key = key
        self._legacy_key = legacy_key
        self.ttl = ttl_seconds

    def issue(
        self, *, user_id: str, device_id: str, session_id: str, generation: str, now: float
    ) -> tuple[str, int]:
        """A signed token and its expiry (epoch seconds)."""
        exp = int(now) + self.ttl
        token = self.sign(
            user_id=user_id,
            device_id=device_id,
            session_id=session_id,
            generation=generation,
            issued_at=int(now),
            expires_at=exp,
        )
        return token, exp

    def sign(
        self,
        *,
        user_id: str,
        device_id: str,
        session_id: str,
        generation: str,
        issued_at: int,
        expires_at: int,
    ) -> str:
        """The token of exactly these claims: the same claims always give the same bytes
        (fixed claim order, HS256 is deterministic), so a stored ``iat``/``exp`` pair is
        enough to hand out an earlier answer again."""
        payload = _Payload(
            typ=_TYPE,
            sub=user_id,
            device=device_id,
            session=session_id,
            gen=generation,
            iat=issued_at,
            exp=expires_at,
        )
        return jwt.encode(msgspec.to_builtins(payload), self._key, algorithm=_ALGORITHM)

    def verify(self, token: str, *, now: float) -> AccessClaims:
        """Check signature and shape; expiry is reported, not raised (revocation first)."""
        if not token or len(token) > _MAX_ACCESS_CHARS:
            raise Unauthenticated("no valid access token")
        payload = _decode(token, self._key)
        legacy = False
        if payload is None and self._legacy_key is not None:
            payload, legacy = _decode(token, self._legacy_key), True
        if payload is None or payload.typ != _TYPE:
            raise Unauthenticated("no valid access token")
        return AccessClaims(
            user_id=payload.sub,
            device_id=payload.device,
            session_id=payload.session,
            generation=payload.gen,
            expires_at=payload.exp,
            expired=legacy or payload.exp <= now,
        )


def _decode(token: str, key: bytes) -> _Payload | None:
    try:
        raw = jwt.decode(
            token,
            key,
            algorithms=[_ALGORITHM],
            options={"verify_exp": False, "verify_iat": False, "require": ["exp"]},
        )
        return msgspec.convert(raw, _Payload)
    except (jwt.InvalidTokenError, msgspec.ValidationError):
        return None


class RefreshTokens:
    """Refresh tokens as a function of their token id: HMAC-SHA256 under the
    refresh-token key of ``core.keys``, in URL-safe base64 (43 characters).

    Token ids are random UUIDs made by the server, and the key never leaves it, so a
    token is as unguessable as 256 random bits; the database still keeps only its
    SHA-256 (:func:`refresh_digest`), and the server can make the token again from its
    id when a lost answer must be repeated."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def token(self, token_id: str) -> str:
        mac = hmac.new(self._key, token_id.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def refresh_digest(token: str) -> bytes:
    """SHA-256 of a refresh token (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def plausible_refresh_token(token: str) -> bool:
    """Cheap shape check before any database work."""
    return 0 < len(token) <= _MAX_REFRESH_CHARS
