"""Reminders due together fire as one batch: one append of all their events, each
reminder still exactly once, and one reminder that cannot fire does not hold back the
others. Real PostgreSQL, manual clock (see test_scheduler_engine.py for the world)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from scheduler import store
from tests.integration.test_scheduler_engine import T0, World, iso, open_world


@pytest.fixture
async def world(fresh_database: Callable[..., Awaitable[str]]) -> AsyncIterator[World]:
    async with open_world(await fresh_database()) as opened:
        yield opened


async def _outbox_rows(world: World) -> int:
    return int(await world.pool.fetchval("SELECT count(*) FROM outbox"))


async def test_a_batch_is_one_append_per_transaction(world: World) -> None:
    """Forty reminders over two spaces: one outbox row per space, seqs contiguous."""
    engine = world.make_engine()
    writers = [await world.writer(), await world.writer()]
    ids: list[str] = []
    for w in writers:
        ids += await w.push([w.op(f"t{i}", "set", "remind_at", iso(5)) for i in range(20)])
        await engine.apply_changes(await world.project(w))
    before = await _outbox_rows(world)
    world.clock.advance(6)
    firings = await engine.fire_due()  # ONE claim, one batch
    assert sorted(f.reminder_id for f in firings) == sorted(ids)
    assert {f.outcome for f in firings} == {"fired"}
    # One transaction advanced each space once: one outbox row each (an append per
    # reminder would have written forty).
    assert await _outbox_rows(world) - before == 2
    for w in writers:
        seqs = sorted(e.seq for e in await world.events(w.space_id, "reminder_fired"))
        assert len(seqs) == 20
        assert seqs == list(range(seqs[0], seqs[0] + 20))


async def test_a_reminder_of_a_missing_space_does_not_stop_the_batch(world: World) -> None:
    engine, w = world.make_engine(), await world.writer()
    ids = await w.push([w.op(f"t{i}", "set", "remind_at", iso(5)) for i in range(5)])
    await engine.apply_changes(await world.project(w))
    # A reminder whose space is gone (no such space in the log), due with the others.
    orphan, gone = str(uuid.uuid4()), str(uuid.uuid4())
    await world.pool.execute(
        "INSERT INTO reminders (reminder_id, space_id, entity_type, entity_id, fire_at, "
        "status) VALUES ($1, $2, 'task', 'orphan', $3, 'scheduled')",
        orphan,
        gone,
        T0 + timedelta(seconds=5),
    )
    world.clock.advance(6)
    firings = await engine.fire_due()
    outcomes = {f.reminder_id: f.outcome for f in firings}
    assert outcomes == {**dict.fromkeys(ids, "fired"), orphan: "dead"}
    row = await world.row(orphan)
    assert row["status"] == "dead"
    assert row["last_error"] == f"not_found: no such space: {gone}"
    assert row["claimed_by"] is None
    events = await world.events(w.space_id, "reminder_fired")
    assert sorted(e.value["reminder_id"] for e in events) == sorted(ids)
    for rid in ids:
        assert (await world.row(rid))["status"] == "fired"
    assert await engine.drain_due() == []  # nothing left to retry


async def test_a_lease_taken_over_mid_batch_fires_each_reminder_once(world: World) -> None:
    """Instance a claims a batch and stalls past its lease; b claims the same rows.
    Both then try to complete them at once: each reminder fires once, by b."""
    w = await world.writer()
    ids = await w.push([w.op(f"t{i}", "set", "remind_at", iso(5)) for i in range(30)])
    a, b = world.make_engine(instance="a"), world.make_engine(instance="b")
    await a.apply_changes(await world.project(w))
    world.clock.advance(6)

    async def claim(instance: str) -> list[str]:
        async with world.pool.acquire() as conn:
            rows = await store.claim_due(
                conn,
                now=world.clock.now(),
                limit=100,
                instance=instance,
                lease=30,
                max_lateness=3600,
            )
        return [str(r["reminder_id"]) for r in rows]

    claimed_a = await claim("a")
    assert sorted(claimed_a) == sorted(ids)
    world.clock.advance(31)  # a's lease ran out
    claimed_b = await claim("b")
    assert sorted(claimed_b) == sorted(ids)
    done_a, done_b = await asyncio.gather(a.complete(claimed_a), b.complete(claimed_b))
    assert done_a == []  # no longer a's: left alone under the row locks
    assert sorted(f.reminder_id for f in done_b) == sorted(ids)
    events = await world.events(w.space_id, "reminder_fired")
    assert sorted(e.value["reminder_id"] for e in events) == sorted(ids)


async def test_two_schedulers_draining_one_burst_fire_each_reminder_once(world: World) -> None:
    writers = [await world.writer() for _ in range(3)]
    a = world.make_engine(instance="a", claim_batch=25)
    b = world.make_engine(instance="b", claim_batch=40)
    ids: list[str] = []
    for w in writers:
        ids += await w.push([w.op(f"t{i}", "set", "remind_at", iso(5)) for i in range(60)])
        await a.apply_changes(await world.project(w))
    world.clock.advance(6)
    done_a, done_b = await asyncio.gather(a.drain_due(), b.drain_due())
    fired = [f.reminder_id for f in done_a + done_b]
    assert sorted(fired) == sorted(ids)  # every one, none twice
    stored = []
    for w in writers:
        stored += [e.value["reminder_id"] for e in await world.events(w.space_id, "reminder_fired")]
    assert sorted(stored) == sorted(ids)
