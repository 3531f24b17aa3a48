"""Several spaces' delivered events applied in one transaction (``projector.batch``):
the same read model as one space at a time, gaps read from the log, every checkpoint
moved with its states or none, and a batch that fails falls back to one space at a time
(where the event to blame is quarantined)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import msgspec
import pytest

from core.natsbus import NatsBus
from core.wire import Event
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from projector.batch import apply_spaces
from projector.service import Projector
from projector.stream import Names
from tests.conftest import TEST_SECRET
from tests.integration.test_projector_quarantine import refuse_entity
from tests.integration.test_projector_support import (
    assert_matches_replay,
    checkpoint,
    increments,
    new_space,
    push,
)


@dataclass
class Scratch:
    pool: asyncpg.Pool
    store: PostgresEventStore
    dsn: str


@pytest.fixture
async def scratch(fresh_database: Callable[..., Awaitable[str]]) -> AsyncIterator[Scratch]:
    """A database no projector service works on: the test drives every batch."""
    dsn = await fresh_database()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
            yield Scratch(pool, store, dsn)
    finally:
        await pool.close()


async def _spaces(store: PostgresEventStore, n: int, events: int) -> list[str]:
    spaces = []
    for _ in range(n):
        space, owner = await new_space(store)
        await increments(store, space, owner, events)
        spaces.append(space)
    return spaces


async def test_many_spaces_in_one_transaction_equal_a_replay(scratch: Scratch) -> None:
    pool, store = scratch.pool, scratch.store
    spaces = await _spaces(store, 5, 40)  # seqs 1..41 each
    delivered = {s: await store.read(s, 0, 100) for s in spaces}
    calls: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda q: calls.append(q.query))
        applied = (await apply_spaces(conn, delivered)).applied
    assert sorted((a.space_id, a.seq, a.count) for a in applied) == [
        (s, 41, 41) for s in sorted(spaces)
    ]
    # One statement per step, however many spaces: create and lock the checkpoints,
    # load the states, upsert them, move the checkpoints (asyncpg's own type
    # introspection left out).
    ours = [q for q in calls if "projector_checkpoints" in q or "entity_states" in q]
    assert len(ours) == 5
    await assert_matches_replay(pool, store, spaces)
    async with pool.acquire() as conn:
        assert (await apply_spaces(conn, delivered)).applied == []  # all repeats


async def test_a_gap_is_read_from_the_log_per_space(scratch: Scratch) -> None:
    pool, store = scratch.pool, scratch.store
    whole, holed = await _spaces(store, 2, 30)
    events = await store.read(holed, 0, 100)
    delivered: dict[str, list[Event]] = {
        whole: list(await store.read(whole, 0, 100)),
        holed: [e for e in events if e.seq > 20],  # 1..20 never delivered
    }
    async with pool.acquire() as conn:
        applied = (await apply_spaces(conn, delivered, max_events=25)).applied
    reached = {a.space_id: (a.seq, a.count) for a in applied}
    assert reached == {whole: (31, 31), holed: (25, 25)}  # read from the log, capped
    assert await checkpoint(pool, holed) == 25
    async with pool.acquire() as conn:
        applied = (await apply_spaces(conn, {holed: delivered[holed]})).applied
    assert [(a.seq, a.count) for a in applied] == [(31, 6)]
    await assert_matches_replay(pool, store, [whole, holed])


async def test_a_space_another_writer_holds_is_left_out_not_waited_for(
    scratch: Scratch,
) -> None:
    pool, store = scratch.pool, scratch.store
    free, held = await _spaces(store, 2, 10)
    delivered = {s: list(await store.read(s, 0, 100)) for s in (free, held)}
    await pool.execute("INSERT INTO projector_checkpoints (space_id, seq) VALUES ($1, 0)", held)
    async with pool.acquire() as holder, holder.transaction():
        # The tick (or another instance) is applying this space.
        await holder.execute(
            "SELECT 1 FROM projector_checkpoints WHERE space_id = $1 FOR UPDATE", held
        )
        async with pool.acquire() as conn:
            batched = await apply_spaces(conn, delivered)
        assert batched.busy == [held]
        assert [(a.space_id, a.seq) for a in batched.applied] == [(free, 11)]
    assert await checkpoint(pool, held) == 0  # untouched: the caller applies it alone


async def test_a_failed_batch_moves_no_checkpoint(scratch: Scratch) -> None:
    pool, store = scratch.pool, scratch.store
    good, bad = await _spaces(store, 2, 10)
    owner = new_id()
    marker = "x-refused"
    await refuse_entity(pool, marker)
    space_owner = await pool.fetchval("SELECT user_id::text FROM members WHERE space_id = $1", bad)
    await push(store, space_owner, owner, [op(bad, entity_id=marker, value="v", lamport=99)])
    delivered = {s: list(await store.read(s, 0, 100)) for s in (good, bad)}
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError):
            await apply_spaces(conn, delivered)
    # Nothing of the batch committed: not the good space's states, not its checkpoint.
    assert await checkpoint(pool, good) == 0
    assert await pool.fetchval("SELECT count(*) FROM entity_states WHERE space_id = $1", good) == 0


async def test_the_service_falls_back_to_one_space_at_a_time(scratch: Scratch) -> None:
    """A fetch whose batch fails: every other space is applied, the event to blame is
    quarantined, and every checkpoint reaches its head."""
    pool, store = scratch.pool, scratch.store
    spaces = await _spaces(store, 3, 10)
    marker = "x-refused"
    await refuse_entity(pool, marker)
    bad = spaces[1]
    owner = await pool.fetchval("SELECT user_id::text FROM members WHERE space_id = $1", bad)
    await push(store, owner, new_id(), [op(bad, entity_id=marker, value="v", lamport=99)])
    # A bus never started: the announcements are dropped (the test reads the database).
    projector = Projector(pool, NatsBus("nats://127.0.0.1:1"), Names("unused"), scratch.dsn)
    # Two spaces as the relay publishes them (a run of events per message), the third
    # one event per message, as relays did before 2026-12-06.
    runs = [list(await store.read(s, 0, 100)) for s in spaces]
    messages = [msgspec.json.encode(run) for run in runs[:2]]
    await projector.on_messages(messages + [msgspec.json.encode(e) for e in runs[2]])
    for space in spaces:
        top = await pool.fetchval("SELECT head FROM spaces WHERE space_id = $1", space)
        assert await checkpoint(pool, space) == top
    quarantined = await pool.fetch("SELECT space_id::text, seq FROM projector_quarantine")
    assert [(r[0], r[1]) for r in quarantined] == [(bad, 12)]
    await projector.membership.close()
