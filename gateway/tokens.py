"""Access tokens (short-lived JWTs) and refresh tokens (opaque, stored as SHA-256).

An access token names its user, device, session and *generation* (the id of the
refresh token it was issued with), so revoking either the session or one refresh
token also ends the access tokens that came with it (docs/auth.md).
"""

from __future__ import annotations

import hashlib
import secrets
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
    """Signs and verifies access tokens with ``settings.secret_key`` (HS256)."""

    def __init__(self, secret_key: str, ttl_seconds: int) -> None:
        self._key = secret_key
        self.ttl = ttl_seconds

    def issue(
        self, *, user_id: str, device_id: str, session_id: str, generation: str, now: float
    ) -> tuple[str, int]:
        """A signed token and its expiry (epoch seconds)."""
        exp = int(now) + self.ttl
        payload = _Payload(
            typ=_TYPE,
            sub=user_id,
            device=device_id,
            session=session_id,
            gen=generation,
            iat=int(now),
            exp=exp,
        )
        return jwt.encode(msgspec.to_builtins(payload), self._key, algorithm=_ALGORITHM), exp

    def verify(self, token: str, *, now: float) -> AccessClaims:
        """Check signature and shape; expiry is reported, not raised (revocation first)."""
        if not token or len(token) > _MAX_ACCESS_CHARS:
            raise Unauthenticated("no valid access token")
        try:
            raw = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "require": ["exp"]},
            )
            payload = msgspec.convert(raw, _Payload)
        except (jwt.InvalidTokenError, msgspec.ValidationError):
            raise Unauthenticated("no valid access token") from None
        if payload.typ != _TYPE:
            raise Unauthenticated("no valid access token")
        return AccessClaims(
            user_id=payload.sub,
            device_id=payload.device,
            session_id=payload.session,
            generation=payload.gen,
            expires_at=payload.exp,
            expired=payload.exp <= now,
        )


def new_refresh_token() -> tuple[str, bytes]:
    """A fresh opaque refresh token and the digest that is stored instead of it."""
    token = secrets.token_urlsafe(32)
    return token, refresh_digest(token)


def refresh_digest(token: str) -> bytes:
    """SHA-256 of a refresh token (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def plausible_refresh_token(token: str) -> bool:
    """Cheap shape check before any database work."""
    return 0 < len(token) <= _MAX_REFRESH_CHARS
