"""Invitations in the store (eventstore/invitations.py) on real PostgreSQL: the inviter
of a pending invitation is an owner at every commit, and a code is used once."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from core.errors import Forbidden, NotFound
from core.ports import Acceptance, Invitation, RoleChange
from core.wire import Role
from eventstore import invitations, members
from eventstore.migrations import discover, migrate
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, new_user
from tests.conftest import TEST_SECRET

DAY = 86_400.0


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def _user(pool: asyncpg.Pool) -> str:
    """A row in ``users`` (invitations name their inviter by foreign key)."""
    return await new_user(pool)


def _code() -> bytes:
    return hashlib.sha256(secrets.token_urlsafe(32).encode()).digest()


async def _invite(
    store: PostgresEventStore, space: str, by: str, role: Role = "editor", email: str = ""
) -> tuple[Invitation, bytes]:
    digest = _code()
    made = await store.invite(
        space_id=space,
        email=email or f"{new_id()}@example.test",
        role=role,
        by=by,
        code_digest=digest,
        ttl_seconds=DAY,
        user_id=None,
    )
    assert isinstance(made, Invitation)
    return made, digest


async def test_only_an_owner_invites(store: PostgresEventStore, pool: asyncpg.Pool) -> None:
    owner, editor = await _user(pool), await _user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    await store.change_member(space_id=space, user_id=editor, role="editor", by=owner)
    with pytest.raises(Forbidden):
        await _invite(store, space, editor)
    with pytest.raises(NotFound):
        await _invite(store, new_id(), owner)
    invitation, _ = await _invite(store, space, owner)
    assert (invitation.space_id, invitation.invited_by) == (space, owner)
    assert await store.invitations_of(space, after=None, limit=10) == [invitation]


async def test_a_members_user_id_gets_the_role_at_once(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    owner, member = await _user(pool), await _user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    await store.change_member(space_id=space, user_id=member, role="reader", by=owner)
    changed = await store.invite(
        space_id=space,
        email="member@example.test",
        role="editor",
        by=owner,
        code_digest=_code(),
        ttl_seconds=DAY,
        user_id=member,
    )
    assert isinstance(changed, RoleChange)
    assert changed.event is not None
    assert changed.event.kind == "member_role_changed"
    assert await store.invitations_of(space, after=None, limit=10) == []


async def test_losing_the_owner_role_withdraws_the_invitations_sent(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    a, b = await _user(pool), await _user(pool)
    space = await store.create_space(name="s", creator_user_id=a, personal=False)
    await store.change_member(space_id=space, user_id=b, role="owner", by=a)
    _, from_a = await _invite(store, space, a)
    kept, from_b = await _invite(store, space, b)
    await store.change_member(space_id=space, user_id=a, role="editor", by=b)
    assert await store.invitations_of(space, after=None, limit=10) == [kept]
    assert await store.accept_invitation(code_digest=from_a, user_id=await _user(pool)) is None
    joined = await store.accept_invitation(code_digest=from_b, user_id=await _user(pool))
    assert joined is not None
    assert joined.role == "editor"


async def test_concurrent_acceptances_use_a_code_once(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    owner = await _user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    users = [await _user(pool) for _ in range(6)]
    for _ in range(5):
        _, digest = await _invite(store, space, owner, "reader")
        outcomes = await asyncio.gather(
            *(store.accept_invitation(code_digest=digest, user_id=u) for u in users)
        )
        accepted = [o for o in outcomes if o is not None]
        assert len(accepted) == 1
        [winner] = [u for u, o in zip(users, outcomes, strict=True) if o is not None]
        assert accepted[0].event is not None
        assert accepted[0].event.entity_id == winner
        users[users.index(winner)] = await _user(pool)
    members = await store.members_of(space)
    assert sorted(r for u, r in members.items() if u != owner) == ["reader"] * 5


async def test_acceptance_and_the_inviters_removal_are_ordered(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    """Whichever commits first, a member never joins by an invitation whose inviter was
    removed before: the member_added event precedes the inviter's member_removed."""
    for _ in range(8):
        keeper, inviter, joiner = await _user(pool), await _user(pool), await _user(pool)
        space = await store.create_space(name="s", creator_user_id=keeper, personal=False)
        await store.change_member(space_id=space, user_id=inviter, role="owner", by=keeper)
        _, digest = await _invite(store, space, inviter)
        accepted, removal = await asyncio.gather(
            store.accept_invitation(code_digest=digest, user_id=joiner),
            store.change_member(space_id=space, user_id=inviter, role=None, by=keeper),
        )
        assert removal is not None
        if isinstance(accepted, Acceptance):
            assert accepted.event is not None
            assert accepted.event.seq < removal.seq
            assert accepted.event.value["by"] == inviter
            assert await store.role_of(space, joiner) == "editor"
        else:
            assert await store.role_of(space, joiner) is None
        assert await store.invitations_of(space, after=None, limit=10) == []


async def test_expired_and_cancelled_invitations_cannot_be_used(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    owner = await _user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    expired, old = await _invite(store, space, owner)
    await pool.execute(
        "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE invitation_id = $1",
        expired.invitation_id,
    )
    cancelled, gone = await _invite(store, space, owner)
    assert await store.cancel_invitation(space_id=space, invitation_id=cancelled.invitation_id)
    assert not await store.cancel_invitation(space_id=space, invitation_id=cancelled.invitation_id)
    assert await store.invitations_of(space, after=None, limit=10) == []
    for digest in (old, gone):
        assert await store.accept_invitation(code_digest=digest, user_id=await _user(pool)) is None
    # An expired row nobody tried stays until the space's next invitation purges it.
    await _invite(store, space, owner)
    await pool.execute(
        "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE space_id = $1",
        space,
    )
    count = "SELECT count(*) FROM invitations WHERE space_id = $1"
    assert await pool.fetchval(count, space) == 1
    fresh, _ = await _invite(store, space, owner)
    assert await pool.fetchval(count, space) == 1
    assert await store.invitations_of(space, after=None, limit=10) == [fresh]


async def test_migration_0005_drops_the_old_email_keyed_invitations(
    fresh_database: Callable[..., Awaitable[str]],
) -> None:
    """Old rows carry no code, so nobody could ever use them: the migration removes
    them, and the altered table takes invitations as the store writes them."""
    conn = await asyncpg.connect(await fresh_database(migrated=False))
    try:
        migrations = discover()
        before = [m for m in migrations if m.version < 5]
        await migrate(conn, before)
        owner = new_id()
        await conn.execute(
            "INSERT INTO users (user_id, email, password_hash) VALUES ($1, 'o@example.test', 'x')",
            owner,
        )
        await conn.execute(
            "INSERT INTO invitations (space_id, email, role, invited_by)"
            " VALUES ($1, 'old@example.test', 'owner', $2)",
            new_id(),
            owner,
        )
        assert await migrate(conn, migrations) == [m.version for m in migrations if m.version >= 5]
        assert await conn.fetchval("SELECT count(*) FROM invitations") == 0
        space = await members.create_space(
            conn,
            secret_key=TEST_SECRET,
            schema_version=1,
            name="s",
            creator=owner,
            personal=False,
        )
        made = await invitations.invite(
            conn,
            space_id=space,
            email="new@example.test",
            role="reader",
            by=owner,
            code_digest=_code(),
            ttl_seconds=DAY,
            user_id=None,
            secret_key=TEST_SECRET,
            schema_version=1,
        )
        assert isinstance(made, Invitation)
    finally:
        await conn.close()
