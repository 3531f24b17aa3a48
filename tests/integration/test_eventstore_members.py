"""Members in the store (eventstore/members.py) on real PostgreSQL: spaces made with their
creator as owner, member changes as events of the log, server events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from core.errors import Conflict, NotFound
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, new_user
from eventstore.writer import server_op_id
from tests.conftest import TEST_SECRET, local_zone


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def test_a_space_records_its_creator(store: PostgresEventStore, pool: asyncpg.Pool) -> None:
    owner = await new_user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    created_by = await pool.fetchval(
        "SELECT created_by::text FROM spaces WHERE space_id = $1", space
    )
    assert created_by == owner
    assert await store.role_of(space, owner) == "owner"
    with pytest.raises(NotFound, match=r"^no such user: 'nope'$"):
        await store.create_space(name="s", creator_user_id="nope", personal=False)


async def test_a_member_events_op_id_is_keyed_by_its_seq(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    """A member event's op_id is the HMAC of ``member:<space>:<seq>``: the same change
    retried after its commit names the same op_id, and no two member events share one."""
    owner, member = await new_user(pool), await new_user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    added = await store.change_member(space_id=space, user_id=member, role="editor", by=owner)
    assert added is not None
    events = await store.read(space, 0, 10)
    assert [e.seq for e in events] == [1, 2]
    for event in events:
        assert event.op_id == server_op_id(TEST_SECRET, f"member:{space}:{event.seq}")


async def test_a_change_naming_no_valid_space_or_user_is_not_found(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    owner, member = await new_user(pool), await new_user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    for space_id, user_id, by in (
        ("nope", member, owner),
        (space, "nope", owner),
        (space, member, "nope"),
    ):
        with pytest.raises(NotFound, match=r"^no such space or user$"):
            await store.change_member(space_id=space_id, user_id=user_id, role="editor", by=by)
    unknown = new_id()
    with pytest.raises(NotFound, match=rf"^no such space: {unknown}$"):
        await store.change_member(space_id=unknown, user_id=member, role="editor", by=owner)
    assert await store.role_of(space, member) is None


async def test_the_last_owner_stays(store: PostgresEventStore, pool: asyncpg.Pool) -> None:
    owner = await new_user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)
    for role in (None, "editor"):
        with pytest.raises(Conflict, match=r"^a space keeps at least one owner$") as raised:
            await store.change_member(space_id=space, user_id=owner, role=role, by=owner)
        assert raised.value.facts == {"space_id": space, "user_id": owner}
    assert await store.role_of(space, owner) == "owner"


async def test_server_events_are_appended_once_per_key(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    owner = await new_user(pool)
    space = await store.create_space(name="s", creator_user_id=owner, personal=False)

    async def append(space_id: str) -> tuple[int, bool]:
        done = await store.append_server_event(
            space_id=space_id,
            kind="reminder_fired",
            entity_type="task",
            entity_id="t-1",
            value={"reminder_id": "r"},
            key="k",
        )
        return done.event.seq, done.duplicate

    assert await append(space) == (2, False)
    assert await append(space) == (2, True)
    with pytest.raises(NotFound, match=r"^no such space: nope$"):  # as in a batch
        await append("nope")
    unknown = new_id()
    with pytest.raises(NotFound, match=rf"^no such space: {unknown}$"):
        await append(unknown)


async def test_member_and_server_events_are_stamped_in_utc_whatever_the_local_zone(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    with local_zone("America/New_York"):  # five hours or so behind UTC
        owner, member = await new_user(pool), await new_user(pool)
        space = await store.create_space(name="s", creator_user_id=owner, personal=False)
        await store.change_member(space_id=space, user_id=member, role="reader", by=owner)
        await store.append_server_event(
            space_id=space, kind="reminder_fired", entity_type="task", entity_id="t-1",
            value={}, key="k",
        )  # fmt: skip
    now = datetime.now(UTC)
    stamps = await pool.fetch("SELECT recorded_at FROM events WHERE space_id = $1", space)
    assert len(stamps) == 3
    for row in stamps:
        assert abs(row["recorded_at"] - now) < timedelta(minutes=5)
