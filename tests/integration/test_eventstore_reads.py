"""``eventstore.reads``: the reads other packages make of the log, on their own
connections (the relay's range, the projector's op rows and whole-log scan, the panel's
recent events, the sandbox's counts)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import msgspec
import pytest

from core.ops import op_from_event, op_from_row
from eventstore import reads
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from tests.conftest import TEST_SECRET


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def _space(store: PostgresEventStore, ops: int) -> tuple[str, str]:
    user = new_id()
    space = await store.create_space(name="r", creator_user_id=user, personal=False)
    raw = [op(space, entity_id=f"t{i % 3}", value=f"v{i}", lamport=i + 1) for i in range(ops)]
    out = await store.append(user_id=user, device_id=new_id(), ops=raw)
    assert all(r.status == "applied" for r in out.results)
    return space, user


async def test_ranges_as_events_and_as_op_rows(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    space, _ = await _space(store, 6)
    events = await store.read(space, 0, 100)
    async with pool.acquire() as conn:
        assert await reads.events_between(conn, space, 2, 5) == events[2:5]
        assert await reads.events_between(conn, uuid.UUID(space), 7, 9) == []
        rows = await reads.op_rows_between(conn, space, 1, 7, 3)
    assert [r[0] for r in rows] == [2, 3, 4]
    assert [op_from_row(r) for r in rows] == [op_from_event(e) for e in events[1:4]]


async def test_several_ranges_in_one_query(store: PostgresEventStore, pool: asyncpg.Pool) -> None:
    a, _ = await _space(store, 5)
    b, _ = await _space(store, 3)
    ids = [uuid.UUID(b), uuid.UUID(a)]
    async with pool.acquire() as conn:
        wire = await reads.wire_rows_of_ranges(conn, ids, [0, 2], [2, 6])
        ops = await reads.op_rows_of_ranges(conn, ids, [0, 2], [2, 6], limit=3)
        firsts = await reads.wire_rows_of_ranges(conn, ids, [0, 2], [2, 6], limit=1)
    assert [(str(r[0]), r["seq"]) for r in wire] == [(b, 1), (b, 2), (a, 3), (a, 4), (a, 5), (a, 6)]
    assert [(str(r[0]), r["seq"]) for r in firsts] == [(b, 1), (a, 3)]  # at most 1 each
    stored = await store.read(a, 2, 10)
    as_wire = {k: v for k, v in msgspec.to_builtins(stored[0]).items() if k != "value"}
    row = wire[2]
    assert {k: row[k] for k in as_wire} == as_wire
    assert msgspec.json.decode(row["value"]) == stored[0].value
    assert [(r[10], r[0]) for r in ops] == [(b, 1), (b, 2), (a, 3), (a, 4), (a, 5)]
    assert [op_from_row(r) for r in ops[2:]] == [op_from_event(e) for e in stored[:3]]


async def test_everything_in_key_order_and_by_range(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    spaces = sorted([(await _space(store, 3))[0] for _ in range(3)], key=uuid.UUID)
    first, last = uuid.UUID(spaces[0]), uuid.UUID(spaces[1])
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        every = [r async for chunk in reads.everything(conn, size=2) for r in chunk]
        some = [r async for chunk in reads.everything(conn, spaces=(first, last)) for r in chunk]
    keys = [(uuid.UUID(r[10]), r[0]) for r in every]
    assert keys == sorted(keys)  # (space_id, seq) order, across chunks
    mine = [(r[10], r[0]) for r in every if r[10] in spaces]
    assert mine == [(s, seq) for s in spaces for seq in range(1, 5)]
    assert {r[10] for r in some} >= set(spaces[:2])
    assert spaces[2] not in {r[10] for r in some}
    events = await store.read(spaces[0], 0, 10)
    assert [op_from_row(r) for r in every if r[10] == spaces[0]] == [
        op_from_event(e) for e in events
    ]


async def test_recent_and_counts(store: PostgresEventStore, pool: asyncpg.Pool) -> None:
    space, _ = await _space(store, 4)
    async with pool.acquire() as conn:
        latest = await reads.recent(conn, within=timedelta(hours=1), limit=3)
        none = await reads.recent(conn, within=timedelta(0), limit=3)
        counted = await reads.counts(conn, [space])
    assert len(latest) == 3
    stamps = [r["recorded_at"] for r in latest]
    assert stamps == sorted(stamps, reverse=True)
    assert list(latest[0].keys()) == [
        "space_id", "seq", "op_id", "kind", "entity_type", "entity_id", "field", "device_id",
        "recorded_at",
    ]  # fmt: skip
    assert none == []
    by = {(r["kind"], r["server"]): r["n"] for r in counted}
    assert by == {("set", False): 4, ("member_added", True): 1}


async def test_a_scan_left_early_leaves_no_read_running(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    """A consumer that stops reading ``everything`` part way: the chunk read ahead is
    cancelled and awaited, and the connection is free for its next query."""
    await _space(store, 5)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        before = asyncio.all_tasks()
        async with contextlib.aclosing(reads.everything(conn, size=1)) as scan:
            async for chunk in scan:
                assert len(chunk) == 1
                break
        assert asyncio.all_tasks() - before == set(), "the read ahead was left running"
        assert await conn.fetchval("SELECT 1") == 1


async def test_recent_gives_up_after_its_query_timeout(fresh_pool: asyncpg.Pool) -> None:
    """The panel's read of recent events is bounded: with ``events`` locked by another
    transaction, it raises after ``query_timeout`` instead of waiting for the lock."""
    async with (
        fresh_pool.acquire() as locker,
        fresh_pool.acquire() as conn,
        locker.transaction(),
    ):
        await locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                reads.recent(conn, within=timedelta(hours=1), limit=3, query_timeout=0.2), 5
            )
        assert time.monotonic() - started < 2
