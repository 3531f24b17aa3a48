"""Accounts and sessions (gateway/sessions.py) in one process, on real PostgreSQL and
NATS: registration, login, refresh rotation with its grace rule (docs/protocol.md section
6), reuse, logout and device revocation.

tests/e2e/test_http_auth*.py hold the same rules over HTTP; these hold them where a
mutation run can see them (docs/development.md, Mutation testing)."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from core.errors import Conflict, RefreshReused, Unauthenticated
from core.metrics import AUTH_FAILURES, AUTH_RENEWALS
from core.natsbus import NatsBus
from core.settings import Settings
from core.wire import AuthResponse
from eventstore.postgres import PostgresEventStore
from gateway import accounts
from gateway.passwords import Passwords
from gateway.revocation import RevocationCache
from gateway.sessions import Sessions
from gateway.tokens import AccessTokens, RefreshTokens, iso_utc, refresh_digest
from tests.conftest import TEST_SECRET

GRACE = 30.0
MakeSessions = Callable[..., Awaitable[Sessions]]


@pytest.fixture
async def make_sessions(
    pool: asyncpg.Pool, bus: NatsBus, settings: Settings
) -> AsyncIterator[MakeSessions]:
    """Sessions as a gateway builds them (gateway/app.py), with cheap password hashing;
    ``grace`` sets the refresh grace window."""
    stack: list[tuple[PostgresEventStore, Sessions]] = []

    async def make(grace: float = GRACE) -> Sessions:
        store = PostgresEventStore(pool, secret_key=TEST_SECRET)
        # re-read PostgreSQL at the first check only: later checks see what was announced
        revocations = RevocationCache(
            pool,
            bus,
            f"{settings.nats_prefix}.test.revocations.{uuid.uuid4().hex}",
            horizon_seconds=3600,
            refresh_seconds=3600,
        )
        await revocations.start()
        sessions = Sessions(
            pool=pool,
            store=store,
            passwords=_passwords(),
            access=AccessTokens(secrets.token_bytes(32), 900),
            refresh_tokens=RefreshTokens(secrets.token_bytes(32)),
            revocations=revocations,
            refresh_ttl=3600,
            grace_seconds=grace,
        )
        stack.append((store, sessions))
        return sessions

    yield make
    for store, sessions in stack:  # as gateway/app.py closes them
        await sessions.revocations.close()
        await store.close()
        sessions.passwords.close()


def _passwords(time_cost: int = 1) -> Passwords:
    """Hashing cheap enough for tests."""
    return Passwords(time_cost=time_cost, memory_cost=1024)


def _email() -> str:
    return f"{uuid.uuid4()}@example.test"


async def _signed_up(
    sessions: Sessions, device: str = "phone"
) -> tuple[AuthResponse, accounts.UserRow]:
    """A new account (password ``pw``) with its first device, and its user row as a
    password sign-in finds it."""
    email = _email()
    answer = await sessions.register(email, "pw", device)
    user = await sessions.authenticate_password(email, "pw")
    assert user is not None
    return answer, user


def _session_of(sessions: Sessions, answer: AuthResponse) -> str:
    return sessions.access.verify(answer.access_token, now=0).session_id


async def test_registration_answers_a_pair_and_a_personal_space(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    sessions = await make_sessions()
    email = _email()
    answer = await sessions.register(email, "correct horse", "phone")
    claims = sessions.access.verify(answer.access_token, now=0)
    assert (claims.user_id, claims.device_id) == (answer.user_id, answer.device_id)
    assert await sessions.store.role_of(answer.personal_space_id, answer.user_id) == "owner"
    personal = "SELECT personal FROM spaces WHERE space_id = $1::uuid"
    assert await pool.fetchval(personal, answer.personal_space_id) is True
    with pytest.raises(Conflict, match=r"^this email is already registered$"):
        await sessions.register(email, "another", "laptop")
    user = await sessions.authenticate_password(email, "correct horse")
    assert user is not None
    assert user.user_id == answer.user_id
    assert await sessions.authenticate_password(email, "wrong") is None
    assert await sessions.authenticate_password(_email(), "correct horse") is None


async def test_a_refresh_rotates_the_pair(make_sessions: MakeSessions) -> None:
    sessions = await make_sessions()
    first = await sessions.register(_email(), "pw", "phone")
    second = await sessions.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert (second.user_id, second.device_id, second.personal_space_id) == (
        first.user_id, first.device_id, first.personal_space_id,
    )  # fmt: skip
    assert _session_of(sessions, second) == _session_of(sessions, first)
    third = await sessions.refresh(second.refresh_token)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)


async def test_a_retry_inside_the_grace_window_gets_the_same_pair(
    make_sessions: MakeSessions,
) -> None:
    """The answer to a rotation was lost: presenting the spent token again, while its
    successor is unused, answers that very pair, and changes nothing."""
    sessions = await make_sessions()
    first = await sessions.register(_email(), "pw", "phone")
    second = await sessions.refresh(first.refresh_token)
    again = await sessions.refresh(first.refresh_token)
    assert again == second
    # the successor is still good, and once it is used the retry window is closed
    third = await sessions.refresh(second.refresh_token)
    with pytest.raises(RefreshReused):
        await sessions.refresh(first.refresh_token)
    # reuse ends the whole session, the newest pair included
    with pytest.raises(Unauthenticated, match=r"^refresh token is not valid$"):
        await sessions.refresh(third.refresh_token)
    session = _session_of(sessions, first)
    assert await sessions.revocations.is_revoked(session)


async def test_a_spent_token_after_the_grace_window_is_reuse(make_sessions: MakeSessions) -> None:
    sessions = await make_sessions(grace=0.0)
    first = await sessions.register(_email(), "pw", "phone")
    second = await sessions.refresh(first.refresh_token)
    with pytest.raises(
        RefreshReused, match=r"^this refresh token was already used; the session is revoked$"
    ):
        await sessions.refresh(first.refresh_token)
    with pytest.raises(Unauthenticated):
        await sessions.refresh(second.refresh_token)


async def test_unknown_and_expired_refresh_tokens(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    sessions = await make_sessions()
    for token in ("", "x" * 129):
        with pytest.raises(Unauthenticated, match=r"^unknown refresh token$"):
            await sessions.refresh(token)
    with pytest.raises(Unauthenticated, match=r"^refresh token is not valid$"):
        await sessions.refresh(secrets.token_urlsafe(32))
    answer = await sessions.register(_email(), "pw", "phone")
    await pool.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' "
        "WHERE session_id = $1::uuid",
        _session_of(sessions, answer),
    )
    with pytest.raises(Unauthenticated, match=r"^refresh token is not valid$"):
        await sessions.refresh(answer.refresh_token)


async def test_logout_and_device_revocation_end_refresh(make_sessions: MakeSessions) -> None:
    sessions = await make_sessions()
    out = await sessions.register(_email(), "pw", "phone")
    await sessions.logout(_session_of(sessions, out))
    assert await sessions.revocations.is_revoked(_session_of(sessions, out))
    with pytest.raises(Unauthenticated):
        await sessions.refresh(out.refresh_token)
    mine = await sessions.register(_email(), "pw", "phone")
    other = await sessions.register(_email(), "pw", "laptop")
    assert not await sessions.revoke_device(other.user_id, mine.device_id)
    assert (await sessions.refresh(mine.refresh_token)).user_id == mine.user_id
    fresh = await sessions.register(_email(), "pw", "tablet")
    assert await sessions.revoke_device(fresh.user_id, fresh.device_id)
    assert await sessions.revocations.is_revoked(_session_of(sessions, fresh))
    with pytest.raises(Unauthenticated):
        await sessions.refresh(fresh.refresh_token)


async def test_logging_in_on_a_known_device_ends_its_earlier_sessions(
    make_sessions: MakeSessions,
) -> None:
    sessions = await make_sessions()
    first, user = await _signed_up(sessions)
    again = await sessions.login(user, "phone", first.device_id)
    assert again.device_id == first.device_id
    assert again.personal_space_id == first.personal_space_id
    assert await sessions.revocations.is_revoked(_session_of(sessions, first))
    with pytest.raises(Unauthenticated):
        await sessions.refresh(first.refresh_token)
    elsewhere = await sessions.login(user, "laptop", None)
    assert elsewhere.device_id != first.device_id
    assert (await sessions.refresh(again.refresh_token)).device_id == first.device_id


async def test_an_issued_access_token_lives_its_ttl(make_sessions: MakeSessions) -> None:
    sessions = await make_sessions()
    before = int(time.time())
    for answer in (
        first := await sessions.register(_email(), "pw", "phone"),
        await sessions.refresh(first.refresh_token),
    ):
        claims = sessions.access.verify(answer.access_token, now=time.time())
        assert claims.expired is False
        assert before + 900 <= claims.expires_at <= int(time.time()) + 900
        assert answer.access_expires_at == iso_utc(claims.expires_at)


async def _revoke_reason(pool: asyncpg.Pool, session_id: str) -> str | None:
    reason: str | None = await pool.fetchval(
        "SELECT revoke_reason FROM auth_sessions WHERE session_id = $1::uuid", session_id
    )
    return reason


async def test_each_revocation_is_recorded_with_its_reason_and_announced(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    """The reason is kept for operators, the session id in ``token_revocations``; and the
    announcement reaches this gateway's cache at once (the fixture's cache re-reads
    PostgreSQL only at its first check)."""
    sessions = await make_sessions()
    relogged, user = await _signed_up(sessions)
    logged_out = await sessions.register(_email(), "pw", "phone")
    device = await sessions.register(_email(), "pw", "phone")
    assert not await sessions.revocations.is_revoked("warm")  # its one read of PostgreSQL
    await sessions.login(user, "phone", relogged.device_id)
    await sessions.logout(_session_of(sessions, logged_out))
    await sessions.revoke_device(device.user_id, device.device_id)
    for answer, reason in (
        (relogged, "relogin"),
        (logged_out, "logout"),
        (device, "device_revoked"),
    ):
        session = _session_of(sessions, answer)
        assert await _revoke_reason(pool, session) == reason
        assert await sessions.revocations.is_revoked(session)
        kind = await pool.fetchval(
            "SELECT kind FROM token_revocations WHERE ref = $1::uuid", session
        )
        assert kind == "session"


async def test_reuse_is_recorded_and_announced(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    sessions = await make_sessions(grace=0.0)
    first = await sessions.register(_email(), "pw", "phone")
    assert not await sessions.revocations.is_revoked("warm")
    await sessions.refresh(first.refresh_token)
    with pytest.raises(RefreshReused):
        await sessions.refresh(first.refresh_token)
    session = _session_of(sessions, first)
    assert await _revoke_reason(pool, session) == "refresh_reused"
    assert await sessions.revocations.is_revoked(session)


async def test_logging_in_with_another_users_device_id_makes_a_new_device(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    """A device id is resumed only for its own user: naming someone else's neither takes
    it over nor ends its sessions."""
    sessions = await make_sessions()
    theirs = await sessions.register(_email(), "pw", "phone")
    _, user = await _signed_up(sessions, "laptop")
    mine = await sessions.login(user, "phone", theirs.device_id)
    assert mine.device_id != theirs.device_id
    assert await _revoke_reason(pool, _session_of(sessions, theirs)) is None
    assert (await sessions.refresh(theirs.refresh_token)).device_id == theirs.device_id


async def test_a_refresh_touches_the_device_and_is_counted(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    sessions = await make_sessions()
    answer = await sessions.register(_email(), "pw", "phone")
    seen = "SELECT last_seen_at FROM devices WHERE device_id = $1::uuid"
    await pool.execute(
        "UPDATE devices SET last_seen_at = now() - interval '1 day' WHERE device_id = $1::uuid",
        answer.device_id,
    )
    day_ago = await pool.fetchval(seen, answer.device_id)
    renewals = AUTH_RENEWALS.labels(route="refresh")._value.get()
    answer = await sessions.refresh(answer.refresh_token)
    assert await pool.fetchval(seen, answer.device_id) > day_ago
    assert AUTH_RENEWALS.labels(route="refresh")._value.get() == renewals + 1
    failures = {
        reason: AUTH_FAILURES.labels(reason=reason)._value.get()
        for reason in ("refresh_unknown", "refresh_invalid", "refresh_reused")
    }
    for token in ("", secrets.token_urlsafe(32)):
        with pytest.raises(Unauthenticated):
            await sessions.refresh(token)
    reusing = await make_sessions(grace=0.0)
    first = await reusing.register(_email(), "pw", "phone")
    await reusing.refresh(first.refresh_token)
    with pytest.raises(RefreshReused):
        await reusing.refresh(first.refresh_token)
    for reason, before in failures.items():
        assert AUTH_FAILURES.labels(reason=reason)._value.get() == before + 1, reason


async def test_a_user_without_a_personal_space_gets_one_on_login(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    """Accounts made before registration created the space atomically are repaired on
    their next login, once."""
    sessions = await make_sessions()
    email = _email()
    answer = await sessions.register(email, "pw", "phone")
    await pool.execute(
        "UPDATE users SET personal_space_id = NULL WHERE user_id = $1::uuid", answer.user_id
    )
    user = await sessions.authenticate_password(email, "pw")
    assert user is not None
    assert user.personal_space_id is None
    repaired = await sessions.login(user, "phone", None)
    assert repaired.personal_space_id != answer.personal_space_id
    assert await sessions.store.role_of(repaired.personal_space_id, answer.user_id) == "owner"
    assert await sessions.ensure_personal_space(answer.user_id) == repaired.personal_space_id
    stored = await pool.fetchval(
        "SELECT personal_space_id::text FROM users WHERE user_id = $1::uuid", answer.user_id
    )
    assert stored == repaired.personal_space_id
    # a refresh finds it too
    assert (await sessions.refresh(repaired.refresh_token)).personal_space_id == stored


async def test_a_password_hashed_with_other_parameters_is_rehashed_on_login(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    sessions = await make_sessions()
    email = _email()
    answer = await sessions.register(email, "pw", "phone")
    stored = "SELECT password_hash FROM users WHERE user_id = $1::uuid"
    old = await pool.fetchval(stored, answer.user_id)
    sessions.passwords.close()
    sessions.passwords = _passwords(time_cost=2)
    assert sessions.passwords.needs_rehash(old)
    assert await sessions.authenticate_password(email, "pw") is not None
    new = await pool.fetchval(stored, answer.user_id)
    assert new != old
    assert not sessions.passwords.needs_rehash(new)
    assert await sessions.authenticate_password(email, "pw") is not None


async def test_a_users_devices_in_pages_and_their_id_by_email(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    sessions = await make_sessions()
    first, user = await _signed_up(sessions)
    email = user.email
    others = [await sessions.login(user, f"device {n}", None) for n in range(2)]
    await sessions.revoke_device(user.user_id, others[0].device_id)
    async with pool.acquire() as conn:
        assert await accounts.user_id_by_email(conn, email) == first.user_id
        assert await accounts.user_id_by_email(conn, _email()) is None
        every = await accounts.devices_of(conn, user.user_id, None, 10)
        assert [d.device_id for d in every] == [first.device_id] + [o.device_id for o in others]
        assert [(d.name, d.revoked) for d in every] == [
            ("phone", False), ("device 0", True), ("device 1", False),
        ]  # fmt: skip
        assert all(d.last_seen_at is not None for d in every)
        page = await accounts.devices_of(conn, user.user_id, None, 2)
        assert page == every[:2]
        cursor = (page[-1].created_at, page[-1].device_id)
        assert await accounts.devices_of(conn, user.user_id, cursor, 2) == every[2:]
        # devices made in the same instant are in id order, the cursor's id splits them
        await conn.execute(
            "UPDATE devices SET created_at = now() WHERE user_id = $1::uuid", user.user_id
        )
        tied = await accounts.devices_of(conn, user.user_id, None, 10)
        assert [d.device_id for d in tied] == sorted(d.device_id for d in every)
        cursor = (tied[0].created_at, tied[0].device_id)
        assert await accounts.devices_of(conn, user.user_id, cursor, 10) == tied[1:]


async def test_a_retry_whose_successor_retention_deleted_is_reuse(
    make_sessions: MakeSessions, pool: asyncpg.Pool
) -> None:
    """The pair of a rotation can be answered again only while its refresh token is
    kept: once retention has deleted that row, presenting the spent token is reuse."""
    sessions = await make_sessions()
    first = await sessions.register(_email(), "pw", "phone")
    second = await sessions.refresh(first.refresh_token)
    await pool.execute(
        "DELETE FROM refresh_tokens WHERE token_hash = $1", refresh_digest(second.refresh_token)
    )
    with pytest.raises(RefreshReused):
        await sessions.refresh(first.refresh_token)
