-- Accounts of the gateway: users, their devices, sessions (refresh token families),
-- refresh tokens, revocations and pending invitations. See docs/auth.md.
--
-- Secrets are never stored: passwords as argon2id hashes, refresh tokens as SHA-256
-- digests (a refresh token is 256 random bits, so a plain hash is enough).

CREATE TABLE users (
    user_id           uuid PRIMARY KEY,
    -- Normalised (trimmed, lowercased) by the gateway before it gets here.
    email             text NOT NULL UNIQUE,
    password_hash     text NOT NULL,
    -- Set right after registration; NULL only if that step failed (login repairs it).
    personal_space_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per installation: a login naming a known, unrevoked device resumes it.
CREATE TABLE devices (
    device_id    uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (user_id),
    name         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz,
    revoked_at   timestamptz
);

CREATE INDEX devices_user_idx ON devices (user_id, created_at, device_id);

-- A session is one refresh token family of one device. Refreshing rotates the token
-- inside the family; revoking the session ends every token and access token of it.
CREATE TABLE auth_sessions (
    session_id    uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (user_id),
    device_id     uuid NOT NULL REFERENCES devices (device_id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    revoke_reason text
);

CREATE INDEX auth_sessions_device_idx ON auth_sessions (device_id) WHERE revoked_at IS NULL;

-- token_id is the "generation" an access token is tied to: revoking one refresh token
-- (the grace-window rule of PROTOCOL section 6) also ends the access token issued with it.
CREATE TABLE refresh_tokens (
    token_id    uuid PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    session_id  uuid NOT NULL REFERENCES auth_sessions (session_id),
    issued_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL,
    -- When this token was rotated, and the token issued for it (the latest, after a
    -- grace-window retry).
    spent_at    timestamptz,
    replaced_by uuid,
    revoked_at  timestamptz
);

CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- What gateways must refuse in access tokens: session ids and token generations. Each
-- gateway keeps the recent ones in memory and re-reads newer rows at most once a second
-- (plus a NATS broadcast), so a revocation takes effect everywhere within a second.
CREATE TABLE token_revocations (
    ref        uuid PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('session', 'token')),
    revoked_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX token_revocations_time_idx ON token_revocations (revoked_at);

-- An invitation of an email without an account; applied (change_member by the inviter)
-- when that email registers. One per space and email: a new invitation replaces the role.
CREATE TABLE invitations (
    space_id   uuid NOT NULL,
    email      text NOT NULL,
    role       text NOT NULL CHECK (role IN ('owner', 'editor', 'reader')),
    invited_by uuid NOT NULL REFERENCES users (user_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (space_id, email)
);

CREATE INDEX invitations_email_idx ON invitations (email);
