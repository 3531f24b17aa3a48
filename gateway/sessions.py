"""Sessions: register, login, refresh (with the grace rule), logout, device revocation.

The rules are docs/protocol.md section 6's; docs/auth.md explains them. Every change of a
session or token family happens in one transaction holding the session row lock, so
two refreshes of one family are strictly ordered. Revocations are announced (cache +
NATS) only after COMMIT.
"""

from __future__ import annotations

import time
from typing import Literal

import asyncpg
import msgspec
import structlog

from core.errors import Conflict, RefreshReused, Unauthenticated
from core.metrics import AUTH_FAILURES, AUTH_RENEWALS
from core.ports import EventStore
from core.wire import AuthResponse
from gateway import accounts
from gateway.passwords import Passwords
from gateway.revocation import RevocationCache
from gateway.tokens import (
    AccessTokens,
    RefreshTokens,
    iso_utc,
    plausible_refresh_token,
    refresh_digest,
)

log = structlog.get_logger("concord.gateway.sessions")

PERSONAL_SPACE_NAME = "Personal"


class _Issued(msgspec.Struct, frozen=True, kw_only=True):
    """A pair as issued: the refresh token and the claims of its access token."""

    user_id: str
    device_id: str
    session_id: str
    token_id: str
    refresh_token: str
    access_iat: int
    access_exp: int


class _RefreshOutcome(msgspec.Struct, frozen=True, kw_only=True):
    verdict: Literal["ok", "unauthenticated", "reused"]
    issued: _Issued | None = None
    revoked_sessions: list[str] = msgspec.field(default_factory=list)


class Sessions:
    """The account and session service behind ``/v1/auth`` and ``/v1/devices``."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        store: EventStore,
        passwords: Passwords,
        access: AccessTokens,
        refresh_tokens: RefreshTokens,
        revocations: RevocationCache,
        refresh_ttl: int,
        grace_seconds: float,
    ) -> None:
        self.pool = pool
        self.store = store
        self.passwords = passwords
        self.access = access
        self.refresh_tokens = refresh_tokens
        self.revocations = revocations
        self.refresh_ttl = refresh_ttl
        self.grace_seconds = grace_seconds

    # ----------------------------------------------------------------------- issuing

    async def _issue(self, conn: accounts.Conn, session: accounts.SessionRow) -> _Issued:
        """A new pair of ``session``: its refresh token stored (as a digest), with the
        times of the access token that goes with it, so the pair can be answered again."""
        token_id = accounts.new_id()
        token = self.refresh_tokens.token(token_id)
        iat = int(time.time())
        exp = iat + self.access.ttl
        await accounts.insert_refresh(
            conn,
            token_id=token_id,
            session_id=session.session_id,
            digest=refresh_digest(token),
            ttl_seconds=self.refresh_ttl,
            access_iat=iat,
            access_exp=exp,
        )
        return _Issued(
            user_id=session.user_id,
            device_id=session.device_id,
            session_id=session.session_id,
            token_id=token_id,
            refresh_token=token,
            access_iat=iat,
            access_exp=exp,
        )

    async def _new_session(self, conn: accounts.Conn, user_id: str, device_id: str) -> _Issued:
        session_id = await accounts.insert_session(conn, user_id, device_id)
        row = accounts.SessionRow(
            session_id=session_id, user_id=user_id, device_id=device_id, revoked=False
        )
        return await self._issue(conn, row)

    def _answer(self, issued: _Issued, personal_space_id: str) -> AuthResponse:
        access = self.access.sign(
            user_id=issued.user_id,
            device_id=issued.device_id,
            session_id=issued.session_id,
            generation=issued.token_id,
            issued_at=issued.access_iat,
            expires_at=issued.access_exp,
        )
        return AuthResponse(
            user_id=issued.user_id,
            device_id=issued.device_id,
            access_token=access,
            refresh_token=issued.refresh_token,
            access_expires_at=iso_utc(issued.access_exp),
            personal_space_id=personal_space_id,
        )

    # ----------------------------------------------------------------------- register, login

    async def register(self, email: str, password: str, device_name: str) -> AuthResponse:
        """A new user with a device, a session and a personal space, all in one
        transaction (a failure leaves no account behind); 409 if the email is taken.

        Nothing else is granted: invitations are codes, used at /v1/invitations/accept."""
        password_hash = await self.passwords.hash(password)
        async with self.pool.acquire() as conn, conn.transaction():
            user_id = await accounts.insert_user(conn, email, password_hash)
            if user_id is None:
                raise Conflict("this email is already registered")
            device_id = await accounts.insert_device(conn, user_id, device_name)
            issued = await self._new_session(conn, user_id, device_id)
            space_id = await self._create_personal_space(conn, user_id)
        return self._answer(issued, space_id)

    async def authenticate_password(self, email: str, password: str) -> accounts.UserRow | None:
        """The user when the password matches; None otherwise, after the same work."""
        async with self.pool.acquire() as conn:
            user = await accounts.user_by_email(conn, email)
        if user is None:
            await self.passwords.verify_unknown(password)
            return None
        if not await self.passwords.verify(user.password_hash, password):
            return None
        if self.passwords.needs_rehash(user.password_hash):
            fresh = await self.passwords.hash(password)
            async with self.pool.acquire() as conn:
                await accounts.set_password_hash(conn, user.user_id, fresh)
        return user

    async def login(
        self, user: accounts.UserRow, device_name: str, device_id: str | None
    ) -> AuthResponse:
        """A new session: for ``device_id`` if it is a live device of the user, else a new one.

        Resuming a device ends its earlier sessions: an installation holds one session.
        """
        revoked: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            resumed = device_id is not None and await accounts.resume_device(
                conn, user.user_id, device_id, device_name
            )
            if resumed and device_id is not None:
                revoked = await accounts.revoke_sessions(conn, "relogin", device_id=device_id)
            else:
                device_id = await accounts.insert_device(conn, user.user_id, device_name)
            issued = await self._new_session(conn, user.user_id, device_id)
        await self.revocations.announce(revoked)
        space_id = user.personal_space_id or await self.ensure_personal_space(user.user_id)
        return self._answer(issued, space_id)

    async def ensure_personal_space(self, user_id: str) -> str:
        """The user's personal space, created on first need (under the user row lock).

        Registration creates it; this repairs accounts made before it did so atomically."""
        async with self.pool.acquire() as conn, conn.transaction():
            user = await accounts.lock_user(conn, user_id)
            assert user is not None
            if user.personal_space_id is not None:
                return user.personal_space_id
            return await self._create_personal_space(conn, user_id)

    async def _create_personal_space(self, conn: accounts.Conn, user_id: str) -> str:
        """The personal space (its ``member_added`` is seq 1), in the caller's transaction."""
        space_id = await self.store.create_space_in(
            conn, name=PERSONAL_SPACE_NAME, creator_user_id=user_id, personal=True
        )
        await accounts.set_personal_space(conn, user_id, space_id)
        return space_id

    # ----------------------------------------------------------------------- refresh

    async def refresh(self, token: str) -> AuthResponse:
        """Rotate a refresh token (docs/protocol.md section 6, including the grace rule)."""
        if not plausible_refresh_token(token):
            AUTH_FAILURES.labels(reason="refresh_unknown").inc()
            raise Unauthenticated("unknown refresh token")
        outcome = await self._rotate(refresh_digest(token))
        await self.revocations.announce(outcome.revoked_sessions)
        if outcome.verdict == "reused":
            AUTH_FAILURES.labels(reason="refresh_reused").inc()
            raise RefreshReused("this refresh token was already used; the session is revoked")
        if outcome.issued is None:
            AUTH_FAILURES.labels(reason="refresh_invalid").inc()
            raise Unauthenticated("refresh token is not valid")
        async with self.pool.acquire() as conn:
            space_id = await accounts.personal_space_of(conn, outcome.issued.user_id)
        if space_id is None:
            space_id = await self.ensure_personal_space(outcome.issued.user_id)
        AUTH_RENEWALS.labels(route="refresh").inc()
        return self._answer(outcome.issued, space_id)

    async def _rotate(self, digest: bytes) -> _RefreshOutcome:
        """Decide one presentation of a refresh token (docs/auth.md, "Refresh").

        Spent tokens form a chain T -> C (``replaced_by``). Presenting a spent T again is
        the retry of a lost answer only while C, the token T's rotation issued, is itself
        unspent, and within the grace window of T's rotation: then the answer is that
        rotation's pair again (C and its access token, made again from what is stored),
        and nothing changes. Everything else spent is reuse, and ends the session.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            session_id = await accounts.session_of_digest(conn, digest)
            if session_id is None:
                return _RefreshOutcome(verdict="unauthenticated")
            # The session row lock orders every rotation of this family.
            session = await accounts.lock_session(conn, session_id)
            row = await accounts.token_by_digest(conn, digest, self.grace_seconds)
            assert row is not None
            if session.revoked or row.revoked or row.expired:
                return _RefreshOutcome(verdict="unauthenticated")
            if not row.spent:
                issued = await self._issue(conn, session)
                await accounts.mark_spent(conn, row.token_id, issued.token_id)
                await accounts.touch_device(conn, session.device_id)
                return _RefreshOutcome(verdict="ok", issued=issued)
            if row.in_grace and row.replaced_by is not None:
                successor = await accounts.issued_token(conn, row.replaced_by)
                if successor is not None and not successor.spent and not successor.revoked:
                    return self._repeat(session, successor)
            revoked_ids = await accounts.revoke_sessions(
                conn, "refresh_reused", session_id=session_id
            )
            log.warning("refresh token reused", session_id=session_id, device_id=session.device_id)
            return _RefreshOutcome(verdict="reused", revoked_sessions=revoked_ids)

    def _repeat(
        self, session: accounts.SessionRow, successor: accounts.IssuedToken
    ) -> _RefreshOutcome:
        """The pair a rotation answered, made again; nothing is stored or revoked."""
        if successor.access_iat is None or successor.access_exp is None:
            # Issued before the times were recorded (migration 0007): that pair cannot be
            # made again, and a new one would hand the session to whoever asked.
            log.info("grace retry of a pre-upgrade token", session_id=session.session_id)
            return _RefreshOutcome(verdict="unauthenticated")
        issued = _Issued(
            user_id=session.user_id,
            device_id=session.device_id,
            session_id=session.session_id,
            token_id=successor.token_id,
            refresh_token=self.refresh_tokens.token(successor.token_id),
            access_iat=successor.access_iat,
            access_exp=successor.access_exp,
        )
        return _RefreshOutcome(verdict="ok", issued=issued)

    # ----------------------------------------------------------------------- revocation

    async def logout(self, session_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            revoked = await accounts.revoke_sessions(conn, "logout", session_id=session_id)
        await self.revocations.announce(revoked)

    async def revoke_device(self, user_id: str, device_id: str) -> bool:
        """Revoke a device of ``user_id`` and all its sessions; False when not theirs."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await accounts.revoke_device(conn, user_id, device_id):
                return False
            revoked = await accounts.revoke_sessions(conn, "device_revoked", device_id=device_id)
        await self.revocations.announce(revoked)
        return True
