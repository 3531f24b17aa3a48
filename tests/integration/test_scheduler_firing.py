"""What a firing reports, stores and publishes, field by field: the ``Firing`` records,
the reminder rows (with and without webhooks), the counters, the space hints and
notifications on the bus (a recording bus, and once real NATS), and the engine's small
paths (malformed changes, paging, ``upcoming``, deadlock retries, a failed batch).
Real PostgreSQL, manual clock (the world of test_scheduler_engine.py).

These tests exist to kill the mutants of ``scheduler/engine.py`` and
``scheduler/firing.py`` (``make mutation MUTATION_ARGS=scheduler``,
docs/development.md): each assertion pins down something a firing must get right.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from core.errors import Unavailable
from core.events import NotificationEnvelope, ReminderChange, SpaceHint
from core.natsbus import NatsBus
from core.ports import Handler, ServerEvent, ServerOutcome
from core.settings import Settings
from core.wire import Notification
from scheduler import engine as engine_module
from scheduler import store
from scheduler.clock import ManualClock
from scheduler.engine import ReminderEngine, notification_of
from scheduler.faults import Faults
from scheduler.firing import Firing
from scheduler.options import SchedulerOptions
from scheduler.store import TaskState
from tests.conftest import sample
from tests.integration.test_scheduler_engine import T0, World, iso, open_world

PREFIX = "tfire"


@pytest.fixture
async def world(fresh_database: Callable[..., Awaitable[str]]) -> AsyncIterator[World]:
    async with open_world(await fresh_database()) as opened:
        yield opened


class RecordingBus:
    """A bus that keeps what is published, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes) -> None:
        self.sent.append((subject, payload))

    async def subscribe(self, subject: str, handler: Handler) -> object:
        return object()

    async def unsubscribe(self, token: object) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True

    def hints(self) -> list[tuple[str, SpaceHint]]:
        return [(s, msgspec.json.decode(p, type=SpaceHint)) for s, p in self.sent if ".space." in s]

    def notes(self) -> list[tuple[str, NotificationEnvelope]]:
        return [
            (s, msgspec.json.decode(p, type=NotificationEnvelope))
            for s, p in self.sent
            if ".notifications." in s
        ]


def engine(world: World, **kw: Any) -> ReminderEngine:
    """The world's engine; ``events``, ``prefix`` and the rest may be given."""
    options = kw.pop("options", SchedulerOptions(lease_seconds=30.0))
    return ReminderEngine(
        pool=world.pool,
        events=kw.pop("events", world.store),
        clock=world.clock,
        instance=kw.pop("instance", "a"),
        max_lateness=kw.pop("max_lateness", 60),
        options=options,
        prefix=kw.pop("prefix", PREFIX),
        **kw,
    )


async def orphan(world: World, seconds: float) -> tuple[str, str]:
    """A scheduled reminder of a space that does not exist; (reminder_id, space_id)."""
    rid, gone = str(uuid.uuid4()), str(uuid.uuid4())
    await world.pool.execute(
        "INSERT INTO reminders (reminder_id, space_id, entity_type, entity_id, fire_at, "
        "status, lateness_ms, event_seq, last_error) "
        "VALUES ($1, $2, 'note', 'orphan', $3, 'scheduled', 17, 99, 'before')",
        rid,
        gone,
        T0 + timedelta(seconds=seconds),
    )
    return rid, gone


def counts() -> dict[str, float]:
    outcomes = ("fired", "skipped", "dead", "duplicate", "error", "cancelled")
    return {o: sample("concord_reminders_total", outcome=o) for o in outcomes}


def moved(before: dict[str, float]) -> dict[str, float]:
    return {k: v - before[k] for k, v in counts().items() if v != before[k]}


# ------------------------------------------------------------------ what a batch reports


async def test_a_batch_reports_each_reminder_as_fired_skipped_or_dead(world: World) -> None:
    bus = RecordingBus()
    eng = engine(world, bus=bus)
    w = await world.writer()
    on_time = await w.task("on-time", iso(10))
    late = await w.task("late", iso(-120))  # past max lateness (60 s): skipped
    await eng.apply_changes(await world.project(w))
    dead, gone = await orphan(world, 5)
    world.clock.set(T0 + timedelta(seconds=10.5))
    before = counts()
    lateness_count = sample("concord_reminder_lateness_seconds_count")
    lateness_sum = sample("concord_reminder_lateness_seconds_sum")

    firings = {f.reminder_id: f for f in await eng.fire_due()}
    now = T0 + timedelta(seconds=10.5)
    [fired_event] = await world.events(w.space_id, "reminder_fired")
    [skipped_event] = await world.events(w.space_id, "reminder_skipped")
    assert firings[on_time] == Firing(
        reminder_id=on_time,
        space_id=w.space_id,
        entity_type="task",
        entity_id="on-time",
        outcome="fired",
        fire_at=T0 + timedelta(seconds=10),
        fired_at=now,
        lateness_ms=500,
        duplicate=False,
        seq=fired_event.seq,
        error=None,
    )
    assert firings[late] == Firing(
        reminder_id=late,
        space_id=w.space_id,
        entity_type="task",
        entity_id="late",
        outcome="skipped",
        fire_at=T0 - timedelta(seconds=120),
        fired_at=None,
        lateness_ms=130_500,
        duplicate=False,
        seq=skipped_event.seq,
        error=None,
    )
    assert firings[dead] == Firing(
        reminder_id=dead,
        space_id=gone,
        entity_type="note",
        entity_id="orphan",
        outcome="dead",
        fire_at=T0 + timedelta(seconds=5),
        fired_at=None,
        lateness_ms=0,
        duplicate=False,
        seq=0,
        error=f"not_found: no such space: {gone}",
    )
    assert skipped_event.value == {
        "reminder_id": late,
        "fire_at": iso(-120),
        "lateness_ms": 130_500,
        "reason": "too_late",
    }
    assert (skipped_event.entity_type, skipped_event.entity_id) == ("task", "late")
    assert moved(before) == {"fired": 1, "skipped": 1, "dead": 1}
    # The lateness histogram sees the fired reminder only.
    assert sample("concord_reminder_lateness_seconds_count") - lateness_count == 1
    assert sample("concord_reminder_lateness_seconds_sum") - lateness_sum == pytest.approx(0.5)

    # On the bus: the space's hint (both events, nothing for the dead one), then one
    # notification, for the fired reminder only.
    assert [s for s, _ in bus.sent] == [
        f"{PREFIX}.space.{w.space_id}",
        f"{PREFIX}.notifications.{w.space_id}",
    ]
    [(_, hint)] = bus.hints()
    seqs = sorted([fired_event.seq, skipped_event.seq])
    assert (hint.space_id, hint.first_seq, hint.last_seq) == (w.space_id, seqs[0], seqs[1])
    [(_, envelope)] = bus.notes()
    assert envelope == NotificationEnvelope(
        space_id=w.space_id,
        notification=Notification(
            id=on_time,
            space_id=w.space_id,
            entity_type="task",
            entity_id="on-time",
            kind="reminder",
            fire_at=iso(10),
            fired_at="2030-01-07T09:00:10.500000Z",
        ),
    )


async def test_the_rows_record_each_outcome_without_webhooks(world: World) -> None:
    eng = engine(world)
    w = await world.writer()
    on_time = await w.task("on-time", iso(10))
    late = await w.task("late", iso(-120))
    await eng.apply_changes(await world.project(w))
    dead, gone = await orphan(world, 5)
    await world.pool.execute(
        "UPDATE reminders SET last_error = 'kept', attempts = 4 WHERE reminder_id = $1", late
    )
    now = T0 + timedelta(seconds=10.5)
    world.clock.set(now)
    await eng.fire_due()
    [fired_event] = await world.events(w.space_id, "reminder_fired")
    [skipped_event] = await world.events(w.space_id, "reminder_skipped")
    columns = (
        "status", "fired_at", "lateness_ms", "event_seq", "attempts", "next_attempt_at",
        "last_error", "claimed_by", "claim_until", "updated_at",
    )  # fmt: skip

    async def row(rid: str) -> tuple[Any, ...]:
        r = await world.row(rid)
        return tuple(r[c] for c in columns)

    # The one in-app notification is the one attempt; no webhook to retry.
    assert await row(on_time) == (
        "fired", now, 500, fired_event.seq, 1, None, None, None, None, now,
    )  # fmt: skip
    # Skipped: lateness and event; attempts, next attempt and last error as they were.
    assert await row(late) == (
        "skipped", None, 130_500, skipped_event.seq, 4, None, "kept", None, None, now,
    )  # fmt: skip
    # Dead: only the reason; lateness and seq as they were.
    assert await row(dead) == (
        "dead", None, 17, 99, 0, None, f"not_found: no such space: {gone}", None, None, now,
    )  # fmt: skip


async def test_with_webhooks_a_fired_row_waits_for_its_first_post(world: World) -> None:
    eng = engine(world, webhook_enabled=True)
    w = await world.writer()
    rid = await w.task("t1", iso(10))
    await eng.apply_changes(await world.project(w))
    await world.pool.execute(
        "UPDATE reminders SET last_error = 'old', attempts = 3 WHERE reminder_id = $1", rid
    )
    now = T0 + timedelta(seconds=11)
    world.clock.set(now)
    [firing] = await eng.fire_due()
    assert firing.outcome == "fired"
    row = await world.row(rid)
    assert (row["status"], row["attempts"], row["next_attempt_at"], row["last_error"]) == (
        "fired",
        0,
        now,
        None,
    )


# ------------------------------------------------------------------ retries and duplicates


class Crash(Exception):
    """The fault a test injects to stop a firing half way."""


class CrashAfterAppend(Faults):
    def point(self, name: str) -> None:
        if name == "after_fire_append":
            raise Crash(name)


async def test_a_retried_firing_reports_the_stored_event_and_hints_it_again(
    world: World,
) -> None:
    crashing = engine(world, instance="dead", faults=CrashAfterAppend())
    w = await world.writer()
    rid = await w.task("t1", iso(10))
    skip = await w.task("t2", iso(-100))
    await crashing.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=10.25))
    before = counts()
    assert await crashing.fire_due() == []  # appended, then "died" before recording
    assert moved(before) == {"error": 2}  # the whole batch, left claimed
    [stored] = await world.events(w.space_id, "reminder_fired")
    [stored_skip] = await world.events(w.space_id, "reminder_skipped")

    bus = RecordingBus()
    survivor = engine(world, instance="b", bus=bus)
    world.clock.advance(40)  # the lease ran out
    before = counts()
    firings = {f.reminder_id: f for f in await survivor.fire_due()}
    f = firings[rid]
    assert (f.outcome, f.duplicate, f.seq) == ("fired", True, stored.seq)
    # From the stored event, not from this retry's clock.
    assert (f.fired_at, f.lateness_ms) == (T0 + timedelta(seconds=10.25), 250)
    g = firings[skip]
    assert (g.outcome, g.duplicate, g.seq, g.fired_at) == ("skipped", True, stored_skip.seq, None)
    assert g.lateness_ms == stored_skip.value["lateness_ms"] == 110_250
    assert moved(before) == {"fired": 1, "skipped": 1, "duplicate": 2}
    assert len(await world.events(w.space_id, "reminder_fired")) == 1
    row = await world.row(rid)
    assert (row["fired_at"], row["lateness_ms"]) == (T0 + timedelta(seconds=10.25), 250)
    # Hinted again (the crashed firing never did), and notified with the stored time.
    [(_, hint)] = bus.hints()
    seqs = sorted([stored.seq, stored_skip.seq])
    assert (hint.first_seq, hint.last_seq) == (seqs[0], seqs[1])
    [(_, envelope)] = bus.notes()
    assert envelope.notification.fired_at == "2030-01-07T09:00:10.250000Z"


class FailingStore:
    """The event store with its batch append unavailable."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append_server_events(self, events: list[ServerEvent]) -> list[ServerOutcome]:
        raise Unavailable("event store unavailable: test")


async def test_a_batch_that_cannot_append_stays_claimed_and_counts_errors(
    world: World,
) -> None:
    bus = RecordingBus()
    failing = engine(world, events=FailingStore(world.store), bus=bus)
    w = await world.writer()
    ids = [await w.task(f"t{i}", iso(5)) for i in range(3)]
    await failing.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=6))
    before = counts()
    assert await failing.fire_due() == []
    assert moved(before) == {"error": 3}
    assert bus.sent == []
    for rid in ids:
        row = await world.row(rid)
        assert (row["status"], row["claimed_by"]) == ("scheduled", "a")
        assert row["claim_until"] == T0 + timedelta(seconds=36)
    # Once the leases run out, a working engine fires them.
    world.clock.advance(31)
    assert len(await engine(world, instance="b").drain_due()) == 3


# ------------------------------------------------------------------ the claim's limits


async def test_a_claim_takes_at_most_claim_batch_and_drain_takes_the_rest(world: World) -> None:
    eng = engine(world, options=SchedulerOptions(lease_seconds=30.0, claim_batch=3))
    w = await world.writer()
    ids = await w.push([w.op(f"t{i}", "set", "remind_at", iso(5 + i)) for i in range(7)])
    await eng.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=20))
    first = await eng.fire_due()
    assert sorted(f.reminder_id for f in first) == sorted(ids[:3])  # the earliest due first
    assert sorted(f.reminder_id for f in await eng.drain_due(rounds=1)) == sorted(ids[3:6])
    assert [f.reminder_id for f in await eng.drain_due()] == ids[6:]
    assert await eng.drain_due() == []


async def test_complete_leaves_rows_that_are_not_ours(world: World) -> None:
    eng = engine(world)
    w = await world.writer()
    rid = await w.task("t1", iso(5))
    await eng.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=6))
    assert await eng.complete([rid]) == []  # never claimed
    assert (await world.row(rid))["status"] == "scheduled"
    async with world.pool.acquire() as conn:
        claimed = await store.claim_due(
            conn, now=world.clock.now(), limit=10, instance="other", lease=30, max_lateness=60
        )
    assert [str(r["reminder_id"]) for r in claimed] == [rid]
    assert await eng.complete([rid]) == []  # another instance's claim
    assert await world.events(w.space_id, "reminder_fired") == []
    [done] = await engine(world, instance="other").complete([rid])
    assert done.outcome == "fired"


# ------------------------------------------------------------------ task states


async def test_a_malformed_change_is_dropped_and_the_others_applied(world: World) -> None:
    eng = engine(world)
    w = await world.writer()
    await w.task("t1", iso(30))
    good = await world.project(w)
    bad = ReminderChange(
        space_id=w.space_id, entity_type="task", entity_id="bad", seq=99,
        reminder_id=str(uuid.uuid4()), remind_at="not a time", done=False, deleted=False,
    )  # fmt: skip
    applied = await eng.apply_changes([bad, *good])
    assert applied.tasks == 1
    assert [when for _, when in applied.scheduled] == [T0 + timedelta(seconds=30)]
    assert await eng.apply([]) == store.Applied([], [], 0)


async def test_cancellations_are_counted(world: World) -> None:
    eng = engine(world)
    w = await world.writer()
    rid = await w.task("t1", iso(30))
    await eng.apply_changes(await world.project(w))
    await w.set("t1", "remind_at", None)
    before = counts()
    applied = await eng.apply_changes(await world.project(w))
    assert applied.cancelled == [rid]
    assert moved(before) == {"cancelled": 1}


async def test_reconcile_pages_through_every_space(world: World) -> None:
    writers = [await world.writer() for _ in range(5)]
    ids = []
    for i, w in enumerate(writers):
        ids += await w.push([w.op(f"t{j}", "set", "remind_at", iso(10 + i)) for j in range(3)])
        await world.project(w)
    eng = engine(world)
    applied = await eng.reconcile(page=2)
    assert applied.tasks == 15
    assert sorted(r for r, _ in applied.scheduled) == sorted(ids)
    assert await eng.reconcile(page=2) == store.Applied([], [], 0)  # cursors moved
    await writers[0].set("t0", "remind_at", None)
    await world.project(writers[0])
    applied = await eng.reconcile(page=2)
    assert (applied.cancelled, applied.tasks) == ([ids[0]], 1)


async def test_reconcile_stops_after_its_rounds(world: World) -> None:
    writers = [await world.writer() for _ in range(3)]
    for w in writers:
        await w.task("t", iso(10))
        await world.project(w)
    eng = engine(world)
    assert (await eng.reconcile(page=1, rounds=2)).tasks == 2
    assert (await eng.reconcile(page=1, rounds=2)).tasks == 1


async def test_reconcile_applies_a_large_space_in_pages(world: World) -> None:
    w = await world.writer()
    ids = await w.push([w.op(f"t{j}", "set", "remind_at", iso(10)) for j in range(5)])
    await world.project(w)
    eng = engine(world)
    calls: list[int] = []
    apply = eng.apply

    async def counting(states: Any) -> store.Applied:
        calls.append(len(states))
        return await apply(states)

    eng.apply = counting  # type: ignore[method-assign]
    applied = await eng.reconcile(page=2)
    assert calls == [2, 2, 1]
    assert sorted(r for r, _ in applied.scheduled) == sorted(ids)


# ------------------------------------------------------------------ views


async def test_upcoming_lists_what_becomes_due_within_the_horizon(world: World) -> None:
    eng = engine(world)
    w = await world.writer()
    soon = await w.task("soon", iso(30))
    await w.task("later", iso(300))
    overdue = await w.task("overdue", iso(-5))
    await eng.apply_changes(await world.project(w))
    assert await eng.upcoming(60) == [
        (overdue, T0 - timedelta(seconds=5)),
        (soon, T0 + timedelta(seconds=30)),
    ]
    world.clock.advance(-40)
    assert await eng.upcoming(60) == [(overdue, T0 - timedelta(seconds=5))]


def test_a_notification_carries_the_firing_in_rfc3339() -> None:
    firing = Firing(
        reminder_id="r", space_id="s", entity_type="task", entity_id="e", outcome="fired",
        fire_at=T0, fired_at=T0 + timedelta(milliseconds=1500), lateness_ms=1500,
        duplicate=False, seq=4,
    )  # fmt: skip
    assert notification_of(firing) == Notification(
        id="r",
        space_id="s",
        entity_type="task",
        entity_id="e",
        kind="reminder",
        fire_at="2030-01-07T09:00:00Z",
        fired_at="2030-01-07T09:00:01.500000Z",
    )


# ------------------------------------------------------------------ deadlocks


class DeadlockingConn:
    """A stand-in connection, passed through to the patched ``apply_states``, which never
    uses it."""


@pytest.mark.parametrize("failures", [1, 2])
async def test_a_deadlock_is_retried(monkeypatch: pytest.MonkeyPatch, failures: int) -> None:
    calls: list[datetime] = []
    done = store.Applied([], [], 7)

    async def apply_states(conn: object, states: object, now: datetime) -> store.Applied:
        calls.append(now)
        if len(calls) <= failures:
            raise asyncpg.DeadlockDetectedError("deadlock")
        return done

    monkeypatch.setattr(store, "apply_states", apply_states)
    states: list[TaskState] = []
    got = await engine_module._retrying_deadlocks(DeadlockingConn(), states, T0)  # type: ignore[arg-type]
    assert got is done
    assert calls == [T0] * (failures + 1)


async def test_a_third_deadlock_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    async def apply_states(conn: object, states: object, now: datetime) -> store.Applied:
        nonlocal calls
        calls += 1
        raise asyncpg.DeadlockDetectedError("deadlock")

    monkeypatch.setattr(store, "apply_states", apply_states)
    with pytest.raises(asyncpg.DeadlockDetectedError):
        await engine_module._retrying_deadlocks(DeadlockingConn(), [], T0)  # type: ignore[arg-type]
    assert calls == 3


# ------------------------------------------------------------------ real NATS


async def test_the_notification_reaches_a_nats_subscriber(world: World, settings: Settings) -> None:
    bus = NatsBus(settings.nats_url or "", prefix=settings.nats_prefix, name="test-firing")
    await bus.start()
    try:
        assert await bus.wait_connected(10)
        prefix = f"{settings.nats_prefix}.firing"
        eng = engine(world, bus=bus, prefix=prefix)
        w = await world.writer()
        rid = await w.task("t1", iso(10))
        await eng.apply_changes(await world.project(w))
        got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def handler(subject: str, payload: bytes) -> None:
            await got.put((subject, payload))

        token = await bus.subscribe(f"{prefix}.notifications.{w.space_id}", handler)
        hints = await bus.subscribe(f"{prefix}.space.{w.space_id}", handler)
        await bus._nc.flush(timeout=5)  # type: ignore[union-attr]
        world.clock.set(T0 + timedelta(seconds=12))
        [firing] = await eng.fire_due()
        first = await asyncio.wait_for(got.get(), 10)
        second = await asyncio.wait_for(got.get(), 10)
        assert first[0] == f"{prefix}.space.{w.space_id}"
        hint = msgspec.json.decode(first[1], type=SpaceHint)
        assert (hint.first_seq, hint.last_seq) == (firing.seq, firing.seq)
        assert second[0] == f"{prefix}.notifications.{w.space_id}"
        envelope = msgspec.json.decode(second[1], type=NotificationEnvelope)
        assert envelope.notification.id == rid
        assert envelope.notification.fired_at == iso(12)
        await bus.unsubscribe(token)
        await bus.unsubscribe(hints)
    finally:
        await bus.close()


# ------------------------------------------------------------------ edges


async def test_a_reminder_fired_exactly_at_its_time_is_zero_late(world: World) -> None:
    eng = engine(world)
    w = await world.writer()
    rid = await w.task("t1", iso(10))
    await eng.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=10))
    [firing] = await eng.fire_due()
    assert (firing.reminder_id, firing.lateness_ms) == (rid, 0)
    [event] = await world.events(w.space_id, "reminder_fired")
    assert event.value["lateness_ms"] == 0
    assert (await world.row(rid))["lateness_ms"] == 0


async def test_a_failed_batch_is_logged_with_its_size_and_error(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    failing = engine(world, events=FailingStore(world.store))
    w = await world.writer()
    for i in range(2):
        await w.task(f"t{i}", iso(5))
    await failing.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=6))
    with caplog.at_level("WARNING", logger="concord.scheduler"):
        assert await failing.fire_due() == []
    [record] = [r for r in caplog.records if r.name == "concord.scheduler"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        "firing 2 reminders failed, will retry: Unavailable('event store unavailable: test')"
    )


async def test_reconcile_gathers_the_cancellations_of_every_space(world: World) -> None:
    writers = [await world.writer() for _ in range(3)]
    ids = []
    eng = engine(world)
    for w in writers:
        ids.append(await w.task("t", iso(30)))
        await world.project(w)
    await eng.reconcile()
    for w in writers:
        await w.set("t", "remind_at", None)
        await world.project(w)
    applied = await eng.reconcile(page=2)
    assert sorted(applied.cancelled) == sorted(ids)
    assert applied.scheduled == []


class NoPool:
    """A pool whose connections are never used (the store functions are replaced)."""

    def acquire(self) -> Any:
        return _Nothing()


class _Nothing:
    async def __aenter__(self) -> object:
        return object()

    async def __aexit__(self, *exc: object) -> None:
        return None


def bare_engine(**kw: Any) -> ReminderEngine:
    return ReminderEngine(
        pool=NoPool(),  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
        clock=ManualClock(T0),
        instance="a",
        max_lateness=60,
        options=SchedulerOptions(),
        **kw,
    )


async def test_drain_stops_after_a_thousand_batches_by_default() -> None:
    eng = bare_engine()
    calls = 0
    some = [Firing("r", "s", "task", "e", "fired", T0, T0, 0, False, 1)]

    async def fire_due() -> list[Firing]:
        nonlocal calls
        calls += 1
        return some

    eng.fire_due = fire_due  # type: ignore[method-assign]
    assert len(await eng.drain_due()) == 1000
    assert calls == 1000


async def test_reconcile_reads_pages_of_500_spaces_for_100_rounds_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits: list[int] = []

    async def spaces_behind(conn: object, limit: int) -> list[tuple[str, int]]:
        limits.append(limit)
        return [(f"s{i}", 0) for i in range(limit)]  # always a full page

    async def space_states(conn: object, space_id: str, done: int) -> tuple[int, list[Any]]:
        return 1, []

    async def advance_cursor(conn: object, space_id: str, seq: int) -> None:
        return None

    monkeypatch.setattr(store, "spaces_behind", spaces_behind)
    monkeypatch.setattr(store, "space_states", space_states)
    monkeypatch.setattr(store, "advance_cursor", advance_cursor)
    assert await bare_engine().reconcile() == store.Applied([], [], 0)
    assert limits == [500] * 100


async def test_the_default_prefix_is_concord(world: World) -> None:
    bus = RecordingBus()
    eng = ReminderEngine(
        pool=world.pool,
        events=world.store,
        clock=world.clock,
        instance="a",
        max_lateness=60,
        options=SchedulerOptions(lease_seconds=30.0),
        bus=bus,
    )
    w = await world.writer()
    await w.task("t1", iso(10))
    await eng.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=10))
    assert len(await eng.fire_due()) == 1
    assert [s for s, _ in bus.sent] == [
        f"concord.space.{w.space_id}",
        f"concord.notifications.{w.space_id}",
    ]


async def test_what_is_dropped_or_dead_is_logged_with_its_reason(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    eng = engine(world)
    w = await world.writer()
    await w.task("t1", iso(30))
    bad = ReminderChange(
        space_id=w.space_id, entity_type="task", entity_id="bad", seq=99,
        reminder_id=str(uuid.uuid4()), remind_at="not a time", done=False, deleted=False,
    )  # fmt: skip
    dead, gone = await orphan(world, 5)
    with caplog.at_level("WARNING", logger="concord.scheduler"):
        await eng.apply_changes([bad])
        world.clock.set(T0 + timedelta(seconds=6))
        await eng.fire_due()
    records = [r for r in caplog.records if r.name == "concord.scheduler"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("WARNING", "ignoring reminder change of bad: not an RFC 3339 UTC timestamp: 'not a time'"),
        ("ERROR", f"reminder {dead} cannot fire: not_found: no such space: {gone}"),
    ]


class ShortStore(FailingStore):
    """A broken store: one outcome fewer than the events it was given."""

    async def append_server_events(self, events: list[ServerEvent]) -> list[ServerOutcome]:
        outcomes: list[ServerOutcome] = await self.inner.append_server_events(events)
        return outcomes[:-1]


async def test_a_store_answering_fewer_outcomes_than_events_fails_the_batch(
    world: World,
) -> None:
    """The engine records nothing it cannot pair with its outcome: the batch fails and
    stays claimed (retried when the leases run out), rather than losing a reminder."""
    broken = engine(world, events=ShortStore(world.store))
    w = await world.writer()
    ids = [await w.task(f"t{i}", iso(5)) for i in range(3)]
    await broken.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=6))
    before = counts()
    assert await broken.fire_due() == []
    assert moved(before) == {"error": 3}
    for rid in ids:
        assert (await world.row(rid))["status"] == "scheduled"
