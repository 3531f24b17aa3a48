"""The reminder core on an injected clock: real PostgreSQL, no sleeping.

Tasks are written as real client ops through ``PostgresEventStore.append``
(``TaskWriter``) and projected with the projector's apply step (``apply_space``). The
scheduler is then fed either the ReminderChanges that step produced (``apply_changes``,
what NATS carries) or nothing at all (``reconcile``, reading ``entity_states``); each
test says which. Every test runs on a database of its own, because claims are global:
another test's leftover reminder must not fire here when the manual clock jumps ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from core.events import ReminderChange
from core.wire import Event
from eventstore.postgres import PostgresEventStore
from projector.apply import apply_space
from scheduler.clock import ManualClock, format_time
from scheduler.engine import ReminderEngine
from scheduler.faults import Faults
from scheduler.options import SchedulerOptions
from scheduler.testing import TaskWriter
from tests.conftest import TEST_SECRET, sample

# A fixed, whole-second start keeps lateness arithmetic exact.
T0 = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)


def iso(seconds: float) -> str:
    return format_time(T0 + timedelta(seconds=seconds))


@dataclass
class World:
    pool: asyncpg.Pool
    store: PostgresEventStore
    clock: ManualClock
    make_engine: Callable[..., ReminderEngine]

    async def writer(self) -> TaskWriter:
        return await TaskWriter.new_space(self.store)

    async def project(self, writer: TaskWriter) -> list[ReminderChange]:
        """The projector's apply step for the writer's space; the changes it publishes."""
        async with self.pool.acquire() as conn:
            applied = await apply_space(conn, writer.space_id)
        return [] if applied is None else applied.reminders

    async def events(self, space_id: str, kind: str) -> list[Event]:
        return [e for e in await self.store.read(space_id, 0, 10_000) if e.kind == kind]

    async def row(self, reminder_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "SELECT * FROM reminders WHERE reminder_id = $1", reminder_id
        )
        assert row is not None, reminder_id
        return row


@contextlib.asynccontextmanager
async def open_world(dsn: str) -> AsyncIterator[World]:
    """Pools, the event store and a manual clock at T0 on the database ``dsn``. Engines
    append a batch's events through the store's ``append_server_events``, as the
    service does, on a pool of their own."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    events_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
    store = PostgresEventStore(events_pool, secret_key=TEST_SECRET)
    clock = ManualClock(T0)

    def make_engine(
        instance: str = "a", max_lateness: float = 3600, faults: Faults | None = None, **kw: object
    ) -> ReminderEngine:
        options = SchedulerOptions(**{"lease_seconds": 30.0, **kw})  # type: ignore[arg-type]
        return ReminderEngine(
            pool=pool,
            events=store,
            clock=clock,
            instance=instance,
            max_lateness=max_lateness,
            options=options,
            faults=faults,
        )

    try:
        yield World(pool, store, clock, make_engine)
    finally:
        await store.close()
        await events_pool.close()
        await pool.close()


@pytest.fixture
async def world(fresh_database: Callable[..., Awaitable[str]]) -> AsyncIterator[World]:
    async with open_world(await fresh_database()) as opened:
        yield opened


async def test_fires_once_at_its_time_with_lateness_recorded(world: World) -> None:
    engine, w = world.make_engine(), await world.writer()
    rid = await w.task("t1", iso(60))
    applied = await engine.apply_changes(await world.project(w))  # fed as NATS would
    assert applied.scheduled == [(rid, T0 + timedelta(seconds=60))]

    world.clock.set(T0 + timedelta(seconds=59.9))
    assert await engine.drain_due() == []
    world.clock.set(T0 + timedelta(seconds=60.25))
    [firing] = await engine.drain_due()
    assert (firing.reminder_id, firing.outcome, firing.lateness_ms) == (rid, "fired", 250)
    assert await engine.drain_due() == []

    [event] = await world.events(w.space_id, "reminder_fired")
    assert (event.entity_type, event.entity_id, event.user_id) == ("task", "t1", None)
    assert event.value == {
        "reminder_id": rid,
        "fire_at": iso(60),
        "fired_at": format_time(T0 + timedelta(seconds=60.25)),
        "lateness_ms": 250,
    }
    row = await world.row(rid)
    assert (row["status"], row["attempts"], row["lateness_ms"], row["event_seq"]) == (
        "fired",
        1,
        250,
        event.seq,
    )
    assert row["claimed_by"] is None

    # The reminder_fired event itself reaches the read model; re-projecting and
    # reconciling must not schedule the reminder again.
    await engine.apply_changes(await world.project(w))
    await engine.reconcile()
    world.clock.advance(3600)
    assert await engine.drain_due() == []
    assert len(await world.events(w.space_id, "reminder_fired")) == 1


async def test_changing_remind_at_twice_fires_once_at_the_last_value(world: World) -> None:
    engine, w = world.make_engine(), await world.writer()
    first = await w.task("t1", iso(10))
    await engine.apply_changes(await world.project(w))
    second = await w.set("t1", "remind_at", iso(20))
    await engine.apply_changes(await world.project(w))
    last = await w.set("t1", "remind_at", iso(30))
    await engine.apply_changes(await world.project(w))

    world.clock.set(T0 + timedelta(seconds=25))
    assert await engine.drain_due() == []
    world.clock.set(T0 + timedelta(seconds=31))
    assert [f.reminder_id for f in await engine.drain_due()] == [last]
    [event] = await world.events(w.space_id, "reminder_fired")
    assert event.value["fire_at"] == iso(30)
    statuses = {r: (await world.row(r))["status"] for r in (first, second, last)}
    assert statuses == {first: "cancelled", second: "cancelled", last: "fired"}


async def test_done_before_due_never_fires_and_undoing_it_fires_at_once(world: World) -> None:
    engine, w = world.make_engine(), await world.writer()
    rid = await w.task("t1", iso(10))
    await engine.apply_changes(await world.project(w))
    await w.set("t1", "done", True)
    applied = await engine.apply_changes(await world.project(w))
    assert applied.cancelled == [rid]

    world.clock.set(T0 + timedelta(seconds=15))
    assert await engine.drain_due() == []
    assert (await world.row(rid))["status"] == "cancelled"

    await w.set("t1", "done", False)  # undo: the reminder is active again, and due
    applied = await engine.apply_changes(await world.project(w))
    assert applied.scheduled == [(rid, T0 + timedelta(seconds=10))]
    [firing] = await engine.drain_due()
    assert (firing.reminder_id, firing.lateness_ms) == (rid, 5000)
    assert len(await world.events(w.space_id, "reminder_fired")) == 1


async def test_done_for_good_leaves_no_firing(world: World) -> None:
    engine, w = world.make_engine(), await world.writer()
    rid = await w.task("t1", iso(10))
    await engine.apply_changes(await world.project(w))
    await w.set("t1", "done", True)
    await engine.apply_changes(await world.project(w))
    world.clock.advance(7200)
    await engine.reconcile()
    assert await engine.drain_due() == []
    assert (await world.row(rid))["status"] == "cancelled"
    assert await world.events(w.space_id, "reminder_fired") == []
    assert await world.events(w.space_id, "reminder_skipped") == []


async def test_delete_cancels_and_restore_past_max_lateness_skips(world: World) -> None:
    engine, w = world.make_engine(max_lateness=60), await world.writer()
    rid = await w.task("t1", iso(10))
    await engine.apply_changes(await world.project(w))
    await w.delete("t1")
    assert (await engine.apply_changes(await world.project(w))).cancelled == [rid]

    world.clock.set(T0 + timedelta(seconds=100))  # 90 s late when restored: > 60 s
    await w.restore("t1")
    await engine.apply_changes(await world.project(w))
    [firing] = await engine.drain_due()
    assert (firing.outcome, firing.lateness_ms) == ("skipped", 90_000)
    assert await world.events(w.space_id, "reminder_fired") == []
    [skipped] = await world.events(w.space_id, "reminder_skipped")
    assert skipped.value == {
        "reminder_id": rid,
        "fire_at": iso(10),
        "lateness_ms": 90_000,
        "reason": "too_late",
    }
    assert (skipped.entity_type, skipped.entity_id) == ("task", "t1")
    assert (await world.row(rid))["status"] == "skipped"


async def test_setting_the_same_time_again_is_a_new_reminder(world: World) -> None:
    """10:00 fires; then 9:00 and 10:00 again are set: the new 10:00 fires too, once."""
    engine, w = world.make_engine(), await world.writer()
    ten, nine = 3600.0, 0.0  # T0 is 9:00
    first = await w.task("t1", iso(ten))
    await engine.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=ten))
    assert [f.reminder_id for f in await engine.drain_due()] == [first]

    world.clock.advance(30)
    nine_id = await w.set("t1", "remind_at", iso(nine))
    again = await w.set("t1", "remind_at", iso(ten))
    await engine.apply_changes(await world.project(w))
    [firing] = await engine.drain_due()
    assert (firing.reminder_id, firing.lateness_ms) == (again, 30_000)
    fired = await world.events(w.space_id, "reminder_fired")
    assert [(e.value["reminder_id"], e.value["fire_at"]) for e in fired] == [
        (first, iso(ten)),
        (again, iso(ten)),
    ]
    assert nine_id not in {e.value["reminder_id"] for e in fired}


async def test_past_remind_at_fires_at_once_or_is_skipped_past_max_lateness(world: World) -> None:
    engine, w = world.make_engine(max_lateness=120), await world.writer()
    recent = await w.task("recent", iso(-60))
    old = await w.task("old", iso(-600))
    await engine.apply_changes(await world.project(w))
    outcomes = {f.reminder_id: (f.outcome, f.lateness_ms) for f in await engine.drain_due()}
    assert outcomes == {recent: ("fired", 60_000), old: ("skipped", 600_000)}


async def test_reconciliation_alone_schedules_and_cancels(world: World) -> None:
    """No ReminderChange reaches the scheduler (lost NATS messages): entity_states does."""
    engine, w = world.make_engine(), await world.writer()
    keep = await w.task("keep", iso(10))
    drop = await w.task("drop", iso(10))
    await world.project(w)  # the changes are dropped on the floor
    applied = await engine.reconcile()
    assert sorted(r for r, _ in applied.scheduled) == sorted([keep, drop])
    assert (await engine.reconcile()).tasks == 0  # incremental: the space's cursor moved
    cursor = await world.pool.fetchval(
        "SELECT seq FROM reminder_cursors WHERE space_id = $1", w.space_id
    )
    assert cursor == await world.store.head(w.space_id)

    await w.set("drop", "remind_at", None)  # cleared
    await world.project(w)
    assert (await engine.reconcile()).cancelled == [drop]
    world.clock.advance(20)
    assert [f.reminder_id for f in await engine.drain_due()] == [keep]


async def test_a_stale_change_never_undoes_a_newer_one(world: World) -> None:
    engine, w = world.make_engine(), await world.writer()
    old = await w.task("t1", iso(10))
    [stale] = await world.project(w)
    new = await w.set("t1", "remind_at", iso(20))
    [fresh] = await world.project(w)
    await engine.apply_changes([fresh])
    applied = await engine.apply_changes([stale])  # a late NATS message
    assert (applied.scheduled, applied.cancelled) == ([], [])
    world.clock.advance(30)
    assert [f.reminder_id for f in await engine.drain_due()] == [new]
    assert (
        await world.pool.fetchval("SELECT count(*) FROM reminders WHERE reminder_id = $1", old)
    ) == 0


class Crash(Exception):
    """Stands in for the process dying at a fault point (the subprocess test does it for real)."""


class CrashingFaults(Faults):
    def point(self, name: str) -> None:
        raise Crash(name)


async def test_crash_between_append_and_update_leaves_one_event(world: World) -> None:
    crashing = world.make_engine(instance="a", faults=CrashingFaults())
    w = await world.writer()
    rid = await w.task("t1", iso(10))
    await crashing.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=12))
    assert await crashing.drain_due() == []  # appended, then "died" before the update
    row = await world.row(rid)
    assert (row["status"], row["claimed_by"], row["decision"]) == ("scheduled", "a", "fire")
    assert len(await world.events(w.space_id, "reminder_fired")) == 1

    survivor = world.make_engine(instance="b", max_lateness=20)
    world.clock.advance(10)  # lease (30 s) still held by the dead instance
    assert await survivor.drain_due() == []
    world.clock.advance(30)  # 52 s late now: past max lateness, yet the decision holds
    [firing] = await survivor.drain_due()
    assert (firing.outcome, firing.duplicate, firing.lateness_ms) == ("fired", True, 2000)
    [event] = await world.events(w.space_id, "reminder_fired")
    assert event.value["lateness_ms"] == 2000
    assert await world.events(w.space_id, "reminder_skipped") == []
    row = await world.row(rid)
    assert (row["status"], row["lateness_ms"], row["fired_at"]) == (
        "fired",
        2000,
        T0 + timedelta(seconds=12),
    )


async def test_a_firing_cut_after_its_append_is_not_cancelled_by_a_later_change(
    world: World,
) -> None:
    """Found by ``concord lab chaos --quick --seed 7``: the scheduler was killed between
    the ``reminder_fired`` append and the row's update, the task's ``remind_at`` had
    changed meanwhile, and the next reconcile cancelled the decided row: the log held a
    firing that the reminder's record said never happened. A decided row is a firing in
    progress; the retry finishes it (a duplicate append) and it is recorded fired."""
    crashing = world.make_engine(instance="a", faults=CrashingFaults())
    w = await world.writer()
    rid = await w.task("t1", iso(10))
    await crashing.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=12))
    assert await crashing.drain_due() == []  # appended, then "died" before the update
    await w.set("t1", "remind_at", iso(300))  # superseded while the firing was cut off
    survivor = world.make_engine(instance="b")
    applied = await survivor.apply_changes(await world.project(w))
    assert rid not in applied.cancelled
    world.clock.advance(40)  # the dead instance's lease ran out
    [firing] = await survivor.drain_due()
    assert (firing.reminder_id, firing.outcome, firing.duplicate) == (rid, "fired", True)
    assert (await world.row(rid))["status"] == "fired"
    assert len(await world.events(w.space_id, "reminder_fired")) == 1


async def test_two_instances_fire_each_reminder_once(world: World) -> None:
    w = await world.writer()
    ops = []
    for i in range(200):
        ops += [w.op(f"t{i}", "set", "remind_at", iso(5))]
    ids = await w.push(ops)
    a, b = world.make_engine(instance="a", claim_batch=20), world.make_engine(instance="b")
    await a.apply_changes(await world.project(w))
    await b.reconcile()  # b learns of them from the read model; nothing to add
    world.clock.advance(6)
    done_a, done_b = await asyncio.gather(a.drain_due(), b.drain_due())
    assert done_a
    assert done_b  # both took part: claims split the work, never duplicate it
    fired = [f.reminder_id for f in done_a + done_b]
    assert sorted(fired) == sorted(ids)
    events = await world.events(w.space_id, "reminder_fired")
    assert sorted(e.value["reminder_id"] for e in events) == sorted(ids)


async def test_metrics_count_outcomes_lateness_and_backlog(world: World) -> None:
    crashing = world.make_engine(instance="dead", max_lateness=60, faults=CrashingFaults())
    engine, w = world.make_engine(max_lateness=60), await world.writer()
    fired, fired_late = (
        sample("concord_reminders_total", outcome="fired"),
        sample("concord_reminder_lateness_seconds_sum"),
    )
    skipped = sample("concord_reminders_total", outcome="skipped")
    observed = sample("concord_reminder_lateness_seconds_count")
    await w.task("on-time", iso(10))
    await w.task("too-late", iso(-600))
    await engine.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=12))
    await engine.drain_due()
    assert sample("concord_reminders_total", outcome="fired") - fired == 1
    assert sample("concord_reminders_total", outcome="skipped") - skipped == 1
    assert sample("concord_reminder_lateness_seconds_count") - observed == 1
    assert sample("concord_reminder_lateness_seconds_sum") - fired_late == pytest.approx(2.0)

    assert await engine.backlog_age() == 0.0
    assert sample("concord_reminder_backlog_age_seconds") == 0.0
    await w.task("stuck", iso(20))
    await engine.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=21))
    await crashing.drain_due()  # claimed, then the instance "died"
    world.clock.set(T0 + timedelta(seconds=26))
    assert await engine.backlog_age() == 6.0
    assert sample("concord_reminder_backlog_age_seconds") == 6.0
