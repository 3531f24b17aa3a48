"""Invitations in the store (eventstore/invitations.py) on real PostgreSQL: the inviter
of a pending invitation is an owner at every commit, and a code is used once."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

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


async def _invite_user(
    store: PostgresEventStore, space: str, by: str, user_id: str
) -> Invitation | RoleChange:
    """An editor invitation to the email of the account ``user_id``."""
    return await store.invite(
        space_id=space,
        email=f"{user_id}@example.test",
        role="editor",
        by=by,
        code_digest=_code(),
        ttl_seconds=DAY,
        user_id=user_id,
    )


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
    changed = await _invite_user(store, space, owner, member)
    assert isinstance(changed, RoleChange)
    assert (changed.space_id, changed.user_id, changed.role) == (space, member, "editor")
    assert changed.event is not None
    assert changed.event.kind == "member_role_changed"
    assert await store.invitations_of(space, after=None, limit=10) == []
    # a user_id that is no member's gets an invitation: nobody joins without accepting
    stranger = await _user(pool)
    invited = await _invite_user(store, space, owner, stranger)
    assert isinstance(invited, Invitation)
    assert await store.role_of(space, stranger) is None


async def test_accepting_never_lowers_a_members_role(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    owner, editor = await _user(pool), await _user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    await store.change_member(space_id=space, user_id=editor, role="editor", by=owner)
    for role in ("reader", "editor"):  # lower, then the same: kept, and no event
        _, digest = await _invite(store, space, owner, role)
        kept = await store.accept_invitation(code_digest=digest, user_id=editor)
        assert kept == Acceptance(space_id=space, role="editor", event=None)
    assert await store.role_of(space, editor) == "editor"
    _, digest = await _invite(store, space, owner, "owner")
    raised = await store.accept_invitation(code_digest=digest, user_id=editor)
    assert raised is not None
    assert (raised.space_id, raised.role) == (space, "owner")
    assert raised.event is not None
    assert (raised.event.kind, raised.event.entity_id) == ("member_role_changed", editor)
    assert await store.role_of(space, editor) == "owner"


async def test_invitations_are_listed_oldest_first_in_pages(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    owner = await _user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    emails = [f"{n}-{new_id()}@example.test" for n in range(3)]
    made = [(await _invite(store, space, owner, email=email))[0] for email in emails]
    assert [i.email for i in made] == emails
    first = await store.invitations_of(space, after=None, limit=2)
    assert first == made[:2]
    cursor = (first[-1].created_at, first[-1].invitation_id)
    assert await store.invitations_of(space, after=cursor, limit=2) == made[2:]
    assert await store.invitations_of(space, after=None, limit=1) == made[:1]
    assert await store.invitations_of(space, after=None, limit=0) == []
    assert await store.invitations_of("nope", after=None, limit=2) == []
    # made in the same instant, they are in id order, and the cursor's id splits them
    await pool.execute("UPDATE invitations SET created_at = now() WHERE space_id = $1", space)
    tied = await store.invitations_of(space, after=None, limit=10)
    assert [i.invitation_id for i in tied] == sorted(i.invitation_id for i in made)
    cursor = (tied[0].created_at, tied[0].invitation_id)
    assert await store.invitations_of(space, after=cursor, limit=10) == tied[1:]


async def test_inviting_or_cancelling_with_ids_that_are_no_uuids(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    owner = await _user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    for space_id, by in (("nope", owner), (space, "nope")):
        with pytest.raises(NotFound, match=r"^no such space$"):
            await _invite(store, space_id, by)
    with pytest.raises(NotFound, match=r"^no such space$"):
        await _invite(store, new_id(), owner)
    with pytest.raises(Forbidden, match=r"^only owners manage members$"):
        await _invite(store, space, await _user(pool))
    invitation, _ = await _invite(store, space, owner)
    known = invitation.invitation_id
    assert not await store.cancel_invitation(space_id="nope", invitation_id=known)
    assert not await store.cancel_invitation(space_id=space, invitation_id="nope")
    assert await store.invitations_of(space, after=None, limit=10) == [invitation]


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


async def test_inviting_an_email_again_replaces_its_invitation(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    owner = await _user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    _, first = await _invite(store, space, owner, email="again@example.test")
    other, _ = await _invite(store, space, owner, email="other@example.test")
    second, _ = await _invite(store, space, owner, "reader", email="again@example.test")
    assert await store.invitations_of(space, after=None, limit=10) == [other, second]
    assert await store.accept_invitation(code_digest=first, user_id=await _user(pool)) is None


async def test_an_invitation_lives_exactly_its_ttl(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    """``expires_at`` is ``created_at`` plus the ttl to the microsecond: the clock is read
    once per row. Read twice, the two differ in about 2% of rows (1 - 0.98^300: this
    fails nearly always), which a test of the listing once met in CI."""
    owner = await _user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    spans = set()
    for _ in range(300):
        made, _ = await _invite(store, space, owner)
        spans.add(made.expires_at - made.created_at)
    assert spans == {timedelta(seconds=DAY)}
