"""The running scheduler (``SchedulerService``: APScheduler, NATS, loops, jobs) on real
PostgreSQL and NATS, in real time.

The device side is modelled by a NATS subscriber on ``<prefix>.notifications.<space>``
plus reading the space's events from the store. Each test has a database of its own
(claims are global). Tasks are written through ``PostgresEventStore.append``; what feeds
the scheduler is said in each test: the real projector, ReminderChanges the test
publishes as the projector would, or reconciliation from ``entity_states``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from prometheus_client import REGISTRY

from core.events import ENCODER, NotificationEnvelope, ReminderChange
from core.natsbus import NatsBus
from core.settings import Settings, with_overrides
from core.wire import Event
from eventstore.postgres import PostgresEventStore
from projector.apply import apply_space
from projector.runner import running as running_projector
from scheduler.clock import parse_time
from scheduler.firing import Firing
from scheduler.jobs import Job
from scheduler.options import SchedulerOptions
from scheduler.queries import JobRun, recent_job_runs
from scheduler.service import SchedulerService
from scheduler.testing import TaskWriter, WebhookReceiver, at

_ENVELOPE = msgspec.json.Decoder(NotificationEnvelope)

FAST = SchedulerOptions(lease_seconds=5, backlog_interval_seconds=0.5)


@dataclass
class Rig:
    settings: Settings
    pool: asyncpg.Pool
    store: PostgresEventStore
    bus: NatsBus
    stack: AsyncExitStack
    notes: list[NotificationEnvelope] = field(default_factory=list)

    async def scheduler(
        self, options: SchedulerOptions = FAST, **changes: object
    ) -> SchedulerService:
        settings = with_overrides(self.settings, **changes) if changes else self.settings
        service = SchedulerService(settings, options=options, environ={})
        await self.stack.enter_async_context(service)
        assert await service.bus.wait_connected(5)
        # Its SUBs are sent on connecting; a PING answered after them means the server
        # has them, so what the test publishes from now on reaches this instance.
        connection = service.bus._nc
        assert connection is not None
        await connection.flush(timeout=5)
        return service

    def record_firings(self, service: SchedulerService) -> list[str]:
        """The reminder_ids ``service`` fires from now on, whatever path fires them (its
        fire loop or its sweep): both go through its engine's ``fire_due``."""
        fired: list[str] = []
        fire_due = service.engine.fire_due

        async def recording() -> list[Firing]:
            firings = await fire_due()
            fired.extend(f.reminder_id for f in firings if f.outcome == "fired")
            return firings

        service.engine.fire_due = recording  # type: ignore[method-assign]
        return fired

    async def listen(self) -> None:
        async def on_note(subject: str, data: bytes) -> None:
            self.notes.append(_ENVELOPE.decode(data))

        await self.bus.subscribe(f"{self.settings.nats_prefix}.notifications.*", on_note)

    async def publish(self, changes: list[ReminderChange]) -> None:
        """What the projector does after committing a batch."""
        for change in changes:
            subject = f"{self.settings.nats_prefix}.reminders.{change.space_id}"
            await self.bus.publish(subject, ENCODER.encode(change))

    async def project(self, writer: TaskWriter) -> list[ReminderChange]:
        async with self.pool.acquire() as conn:
            applied = await apply_space(conn, writer.space_id)
        return [] if applied is None else applied.reminders

    async def fired(self, space_id: str) -> list[Event]:
        return [e for e in await self.store.read(space_id, 0, 10_000) if e.kind == "reminder_fired"]

    async def until(self, check: Callable[[], Awaitable[bool]], within: float = 30) -> None:
        deadline = time.monotonic() + within
        while not await check():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)


@pytest.fixture
async def rig(
    settings: Settings, fresh_database: Callable[..., Awaitable[str]]
) -> AsyncIterator[Rig]:
    dsn = await fresh_database()
    local = with_overrides(settings, database_url=dsn, scheduler_sweep_interval=1)
    async with AsyncExitStack() as stack:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
        stack.push_async_callback(pool.close)
        store = PostgresEventStore(pool, secret_key=local.require_secret_key())
        stack.push_async_callback(store.close)
        bus = NatsBus(local.nats_url or "", prefix=local.nats_prefix, name="test-device")
        await bus.start()
        stack.push_async_callback(bus.close)
        assert await bus.wait_connected(5)
        rig = Rig(local, pool, store, bus, stack)
        await rig.listen()
        # Services entered through rig.stack stop before the pool and bus close.
        async with AsyncExitStack() as services:
            rig.stack = services
            yield rig


async def test_a_reminder_two_seconds_ahead_fires_through_the_real_pipeline(rig: Rig) -> None:
    """Fed by the real projector (relay -> JetStream -> projector -> ReminderChange)."""
    await rig.stack.enter_async_context(running_projector(rig.settings))
    service = await rig.scheduler(scheduler_sweep_interval=300)  # no sweep help
    writer = await TaskWriter.new_space(rig.store)
    due = at(2)
    rid = await writer.task("t1", due)

    async def arrived() -> bool:
        return any(n.notification.id == rid for n in rig.notes)

    await rig.until(arrived, within=20)
    [note] = rig.notes
    assert note.space_id == writer.space_id
    assert (note.notification.kind, note.notification.fire_at) == ("reminder", due)
    [event] = await rig.fired(writer.space_id)
    assert event.value["reminder_id"] == rid
    assert event.value["fired_at"] == note.notification.fired_at
    lateness = event.value["lateness_ms"]
    assert 0 <= lateness < 1500, lateness  # generous: two shared cores
    assert parse_time(event.value["fired_at"]) >= parse_time(due)
    row = await rig.pool.fetchrow("SELECT * FROM reminders WHERE reminder_id = $1", rid)
    assert row is not None
    assert (row["status"], row["lateness_ms"]) == ("fired", lateness)
    assert service.aps.get_job(rid) is None  # its date job ran and is gone


def take_turns(service: SchedulerService, mine: asyncio.Event, theirs: asyncio.Event) -> None:
    """After its first batch that did something, ``service`` waits for the other's."""
    fire_due = service.engine.fire_due

    async def turn() -> list[Firing]:
        firings = await fire_due()
        if firings and not mine.is_set():
            mine.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(theirs.wait(), 10)
        return firings

    service.engine.fire_due = turn  # type: ignore[method-assign]


async def test_two_instances_fire_500_reminders_due_in_one_second_exactly_once(rig: Rig) -> None:
    """Fed by ReminderChanges published as the projector would (both instances get them)."""
    options = SchedulerOptions(lease_seconds=10, claim_batch=50)
    # A sweep each second: an instance that applies a change after the other gets no
    # date job for it (nothing new to schedule), and takes part through its sweep.
    one = await rig.scheduler(options, scheduler_sweep_interval=1)
    two = await rig.scheduler(options, scheduler_sweep_interval=1)
    assert one.instance != two.instance
    fired_by = {one.instance: rig.record_firings(one), two.instance: rig.record_firings(two)}
    # Each instance, after its first batch, waits (at most 10 s) for the other's first:
    # otherwise the one holding the date jobs may fire all ten batches before the other
    # claims any (seen about one run in five: 500 to 0), and the run proves nothing
    # about two instances. Claims still race freely; only the first turn is handed over.
    turns = {one.instance: asyncio.Event(), two.instance: asyncio.Event()}
    take_turns(one, turns[one.instance], turns[two.instance])
    take_turns(two, turns[two.instance], turns[one.instance])
    due = at(6)
    writers = [await TaskWriter.new_space(rig.store, f"s{i}") for i in range(5)]
    ids: list[str] = []
    for w in writers:
        ops = [w.op(f"t{i}", "set", "remind_at", due) for i in range(100)]
        ids += await w.push(ops)
        await rig.publish(await rig.project(w))
    assert parse_time(due) > datetime.now(UTC), "setup took too long"

    async def all_fired() -> bool:
        n = await rig.pool.fetchval("SELECT count(*) FROM reminders WHERE status = 'fired'")
        return bool(n == 500)

    await rig.until(all_fired, within=60)
    await asyncio.sleep(1.0)  # room for a stray second firing to show up
    events = [e for w in writers for e in await rig.fired(w.space_id)]
    assert sorted(e.value["reminder_id"] for e in events) == sorted(ids)
    assert sorted(n.notification.id for n in rig.notes) == sorted(ids)
    # Generous: 500 firings on two shared cores; the point here is "exactly once".
    late = max(e.value["lateness_ms"] for e in events)
    assert late < 20_000, late
    # Both instances did part of the work, and between them each reminder once: a
    # second instance that fired nothing would be no test of "several instances".
    counts = {instance: len(ids) for instance, ids in fired_by.items()}
    assert all(counts.values()), counts
    assert sorted(fired_by[one.instance] + fired_by[two.instance]) == sorted(ids)


async def test_recovery_at_start_fires_what_came_due_while_nothing_ran(rig: Rig) -> None:
    """Fed by reconciliation alone: no scheduler ran when the tasks were projected."""
    writer = await TaskWriter.new_space(rig.store)
    late = await writer.task("late", at(-3))
    too_late = await writer.task("too-late", at(-30))
    await rig.project(writer)  # nobody listens: the changes are lost
    await rig.scheduler(reminder_max_lateness=10, scheduler_sweep_interval=300)

    async def settled() -> bool:
        n = await rig.pool.fetchval(
            "SELECT count(*) FROM reminders WHERE status IN ('fired', 'skipped')"
        )
        return bool(n == 2)

    await rig.until(settled)
    [fired] = await rig.fired(writer.space_id)
    assert fired.value["reminder_id"] == late
    assert 3000 <= fired.value["lateness_ms"] < 8000
    skipped = [
        e for e in await rig.store.read(writer.space_id, 0, 100) if e.kind == "reminder_skipped"
    ]
    assert [e.value["reminder_id"] for e in skipped] == [too_late]
    assert [n.notification.id for n in rig.notes] == [late]


async def test_job_runs_record_every_outcome_and_a_failing_job_keeps_running(rig: Rig) -> None:
    options = SchedulerOptions(
        backlog_interval_seconds=0.3, retention_interval_seconds=0.5, lease_seconds=5
    )
    service = await rig.scheduler(options)
    calls = {"boom": 0}

    async def boom() -> int:
        calls["boom"] += 1
        raise RuntimeError(f"boom {calls['boom']}")

    async def slow() -> int:
        await asyncio.sleep(0.7)
        return 3

    async def hung() -> int:
        await asyncio.Event().wait()
        return 0

    service.add_job(Job("boom", 0.3, 5, boom))
    service.add_job(Job("slow", 0.25, 5, slow))
    service.add_job(Job("hung", 0.4, 0.3, hung))
    runs: list[JobRun] = []
    outcomes: dict[str, set[str]] = {}

    async def every_outcome_recorded() -> bool:
        runs[:] = [r for r in await recent_job_runs(rig.pool, 1000) if r.outcome != "running"]
        outcomes.clear()
        for run in runs:
            outcomes.setdefault(run.job, set()).add(run.outcome)
        return (
            {"sweep", "backlog", "retention"} <= set(outcomes)
            and len([r for r in runs if r.job == "boom"]) >= 3
            and outcomes.get("slow", set()) >= {"ok", "overlap-skipped"}
            and "timeout" in outcomes.get("hung", set())
        )

    await rig.until(every_outcome_recorded, within=30)
    assert {run.instance for run in runs} == {service.instance}
    assert outcomes["sweep"] == {"ok"}
    assert outcomes["backlog"] == {"ok"}
    assert outcomes["retention"] == {"ok"}
    assert outcomes["boom"] == {"failed"}
    assert outcomes["slow"] >= {"ok", "overlap-skipped"}
    assert "timeout" in outcomes["hung"]
    booms = [r for r in runs if r.job == "boom"]
    assert len(booms) >= 3  # it raised, and ran again, and again
    assert {r.error for r in booms} >= {"RuntimeError: boom 1", "RuntimeError: boom 2"}
    failed_total = REGISTRY.get_sample_value(
        "concord_scheduler_job_runs_total", {"job": "boom", "outcome": "failed"}
    )
    assert failed_total is not None
    assert failed_total >= len(booms)
    slow_ok = [r for r in runs if r.job == "slow" and r.outcome == "ok"]
    assert all(r.items == 3 and r.finished_at is not None for r in slow_ok)
    assert all(r.finished_at is not None for r in runs)


async def test_open_circuit_does_not_delay_in_app_firing(rig: Rig) -> None:
    """Fed by ReminderChanges published as the projector would."""
    async with WebhookReceiver(respond=lambda n: 500) as receiver:
        options = SchedulerOptions(
            lease_seconds=5,
            breaker_threshold=2,
            breaker_cooldown_seconds=60,
            backoff_base_seconds=0.1,
            webhook_timeout_seconds=1,
            webhook_concurrency=1,  # so exactly two calls open the circuit
        )
        service = await rig.scheduler(
            options, webhook_url=receiver.url, webhook_secret="s", scheduler_sweep_interval=300
        )
        writer = await TaskWriter.new_space(rig.store)
        for i in range(3):
            await writer.task(f"early{i}", at(1))
        await rig.publish(await rig.project(writer))

        async def opened() -> bool:
            return bool(service.deliveries and service.deliveries.breaker.state == "open")

        await rig.until(opened, within=15)
        assert len(receiver.requests) == 2
        due = at(1.5)
        rid = await writer.task("later", due)
        await rig.publish(await rig.project(writer))

        async def notified() -> bool:
            return any(n.notification.id == rid for n in rig.notes)

        await rig.until(notified, within=15)
        note = next(n for n in rig.notes if n.notification.id == rid)
        lateness = parse_time(note.notification.fired_at) - parse_time(due)
        assert lateness.total_seconds() < 1.5
        await asyncio.sleep(0.5)
        assert len(receiver.requests) == 2  # still no call while the circuit is open
        row = await rig.pool.fetchrow("SELECT * FROM reminders WHERE reminder_id = $1", rid)
        assert row is not None
        assert (row["status"], row["attempts"]) == ("fired", 0)
        assert row["next_attempt_at"] is not None  # its delivery waits for the circuit
