"""``concord scheduler`` as a real process: killed, crashed mid-firing, restarted.

Each test runs on a database of its own. Tasks are written through
``PostgresEventStore.append`` and projected with the projector's apply step; the
scheduler process learns of them by reconciling with ``entity_states`` (its sweep runs
every second here) or, in the pipeline test, from the real projector.

Waits are shortened from the brief's 10 s to 6 s (and max lateness 5 s to 3 s),
keeping the structure: kill before due, restart well after due, and compare the
recorded lateness with the downtime.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec
import pytest
from prometheus_client import CollectorRegistry, multiprocess

from core.events import NotificationEnvelope
from core.natsbus import NatsBus
from core.settings import Settings, with_overrides
from core.wire import Event
from eventstore.postgres import PostgresEventStore
from projector.apply import apply_space
from projector.runner import running as running_projector
from scheduler.clock import parse_time
from scheduler.testing import TaskWriter, at
from tests.conftest import service_env

_ENVELOPE = msgspec.json.Decoder(NotificationEnvelope)
DOWNTIME = 6.0


class SchedulerProcess:
    """``python -m concord.cli scheduler`` against this test's database."""

    def __init__(self, settings: Settings, log: Path, **env: str) -> None:
        self.env = service_env(settings)
        self.env.update(
            CONCORD_SCHEDULER_SWEEP_INTERVAL="1",
            CONCORD_SCHEDULER_OPTIONS=json.dumps({"lease_seconds": 2}),
        )
        self.env.update(env)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **env: str) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "concord", "scheduler"],
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Rig:
    settings: Settings
    pool: asyncpg.Pool
    store: PostgresEventStore
    tmp: Path
    notes: list[NotificationEnvelope] = field(default_factory=list)
    procs: list[SchedulerProcess] = field(default_factory=list)

    def scheduler(self, **env: str) -> SchedulerProcess:
        proc = SchedulerProcess(self.settings, self.tmp / f"scheduler-{len(self.procs)}.log", **env)
        self.procs.append(proc)
        return proc

    async def running(self, proc: SchedulerProcess, within: float = 30) -> None:
        """Up once its first sweep (the recovery) is recorded, whatever the outcome."""

        async def swept() -> bool:
            assert proc.proc is not None
            assert proc.proc.poll() is None, proc.log.read_text()
            n = await self.pool.fetchval(
                "SELECT count(*) FROM job_runs WHERE job = 'sweep' AND outcome <> 'running' "
                "AND instance LIKE $1",
                f"%:{proc.pid}:%",
            )
            return bool(n)

        await until(swept, within)

    async def project(self, writer: TaskWriter) -> None:
        async with self.pool.acquire() as conn:
            await apply_space(conn, writer.space_id)

    async def events(self, space_id: str, kind: str) -> list[Event]:
        return [e for e in await self.store.read(space_id, 0, 10_000) if e.kind == kind]

    async def statuses(self, ids: list[str]) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT status FROM reminders WHERE reminder_id = ANY($1::uuid[])", ids
        )
        return sorted(r["status"] for r in rows)


async def until(check: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest.fixture
async def rig(
    settings: Settings, fresh_database: Callable[..., Awaitable[str]], tmp_path: Path
) -> AsyncIterator[Rig]:
    dsn = await fresh_database()
    local = with_overrides(settings, database_url=dsn)
    async with AsyncExitStack() as stack:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        stack.push_async_callback(pool.close)
        store = PostgresEventStore(pool, secret_key=local.require_secret_key())
        stack.push_async_callback(store.close)
        bus = NatsBus(local.nats_url or "", prefix=local.nats_prefix, name="test-device")
        await bus.start()
        stack.push_async_callback(bus.close)
        assert await bus.wait_connected(5)
        rig = Rig(local, pool, store, tmp_path)

        async def on_note(subject: str, data: bytes) -> None:
            rig.notes.append(_ENVELOPE.decode(data))

        await bus.subscribe(f"{local.nats_prefix}.notifications.*", on_note)
        try:
            yield rig
        finally:
            for proc in rig.procs:
                proc.stop()


@pytest.mark.parametrize(("max_lateness", "outcome"), [(3600, "fired"), (3, "skipped")])
async def test_killed_before_due_fires_or_skips_on_restart(
    rig: Rig, max_lateness: int, outcome: str
) -> None:
    proc = rig.scheduler(CONCORD_REMINDER_MAX_LATENESS=str(max_lateness))
    proc.start()
    await rig.running(proc)
    writer = await TaskWriter.new_space(rig.store)
    due = at(2)
    ids = [await writer.task(f"t{i}", due) for i in range(3)]
    await rig.project(writer)

    async def known() -> bool:
        return await rig.statuses(ids) == ["scheduled"] * 3

    await until(known)  # the running scheduler has them (via reconciliation)
    proc.kill()
    down_until = parse_time(due).timestamp() + DOWNTIME
    await asyncio.sleep(max(0.0, down_until - datetime.now(UTC).timestamp()))
    assert await rig.events(writer.space_id, "reminder_fired") == []

    proc.start()

    async def settled() -> bool:
        return await rig.statuses(ids) == [outcome] * 3

    await until(settled)
    await asyncio.sleep(2.5)  # two more sweeps: room for a second firing to show up
    kind = "reminder_fired" if outcome == "fired" else "reminder_skipped"
    events = await rig.events(writer.space_id, kind)
    assert sorted(e.value["reminder_id"] for e in events) == sorted(ids)
    for event in events:
        assert DOWNTIME * 1000 <= event.value["lateness_ms"] < (DOWNTIME + 5) * 1000
        assert event.value["fire_at"] == due
    other = "reminder_skipped" if outcome == "fired" else "reminder_fired"
    assert await rig.events(writer.space_id, other) == []
    if outcome == "fired":
        assert sorted(n.notification.id for n in rig.notes) == sorted(ids)
    else:
        assert rig.notes == []


async def test_crash_between_append_and_update_leaves_exactly_one_event(rig: Rig) -> None:
    proc = rig.scheduler()
    proc.start(CONCORD_TEST_FAULT="after_fire_append")
    await rig.running(proc)
    writer = await TaskWriter.new_space(rig.store)
    ids = [await writer.task(f"t{i}", at(1.5)) for i in range(3)]
    await rig.project(writer)
    assert proc.proc is not None
    returncode = await asyncio.to_thread(proc.proc.wait, 30)
    assert returncode == 137  # died at the fault point, right after its first append
    # That append holds a firing of every reminder the claim found due: one, or more when
    # the three came due before the scheduler's poll (a timing the test does not control).
    firsts = await rig.events(writer.space_id, "reminder_fired")
    assert 1 <= len(firsts) <= 3
    for first in firsts:
        row = await rig.pool.fetchrow(
            "SELECT status, claimed_by FROM reminders WHERE reminder_id = $1",
            first.value["reminder_id"],
        )
        assert row is not None
        assert row["status"] == "scheduled"  # the update never happened
    assert rig.notes == []

    proc.start()  # no fault this time; the dead instance's lease (2 s) must run out

    async def all_fired() -> bool:
        return await rig.statuses(ids) == ["fired"] * 3

    await until(all_fired)
    await asyncio.sleep(2.5)
    events = await rig.events(writer.space_id, "reminder_fired")
    assert sorted(e.value["reminder_id"] for e in events) == sorted(ids)
    crashed = {first.value["reminder_id"] for first in firsts}
    assert [e for e in events if e.value["reminder_id"] in crashed] == firsts
    assert sorted(n.notification.id for n in rig.notes) == sorted(ids)


async def test_scheduler_process_fires_a_reminder_fed_by_the_real_projector(rig: Rig) -> None:
    proc = rig.scheduler(CONCORD_SCHEDULER_SWEEP_INTERVAL="300")  # no sweep help
    proc.start()
    await rig.running(proc)
    async with running_projector(rig.settings):
        writer = await TaskWriter.new_space(rig.store)
        due = at(2)
        rid = await writer.task("t1", due)

        async def notified() -> bool:
            return [n.notification.id for n in rig.notes] == [rid]

        await until(notified, within=20)
    [event] = await rig.events(writer.space_id, "reminder_fired")
    assert event.value["reminder_id"] == rid
    assert 0 <= event.value["lateness_ms"] < 1500
    assert rig.notes[0].notification.fire_at == due


def fired_by(metrics: Path) -> float:
    """``concord_reminders_total{outcome="fired"}`` of the one process that writes its
    metrics under ``metrics`` (prometheus-client's multiprocess files)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics))  # type: ignore[no-untyped-call]
    return registry.get_sample_value("concord_reminders_total", {"outcome": "fired"}) or 0.0


async def test_two_processes_fire_500_reminders_due_in_one_second_exactly_once(rig: Rig) -> None:
    # Each process counts its own firings in a metrics directory of its own. Claims of
    # 25 (the default takes 500 at once): 20 claims, for both processes to race for.
    metrics = [rig.tmp / f"metrics-{i}" for i in range(2)]
    for directory in metrics:
        directory.mkdir()
    procs = [
        rig.scheduler(
            PROMETHEUS_MULTIPROC_DIR=str(directory),
            CONCORD_SCHEDULER_OPTIONS=json.dumps({"lease_seconds": 2, "claim_batch": 25}),
        )
        for directory in metrics
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        await rig.running(proc)
    due = at(8)
    writers = [await TaskWriter.new_space(rig.store, f"s{i}") for i in range(5)]
    ids: list[str] = []
    for w in writers:
        ids += await w.push([w.op(f"t{i}", "set", "remind_at", due) for i in range(100)])
        await rig.project(w)
    assert parse_time(due) > datetime.now(UTC), "setup took too long"

    async def all_fired() -> bool:
        return await rig.statuses(ids) == ["fired"] * 500

    await until(all_fired, within=60)
    await asyncio.sleep(2.5)  # two more sweeps of each: room for a second firing
    events = [e for w in writers for e in await rig.events(w.space_id, "reminder_fired")]
    assert sorted(e.value["reminder_id"] for e in events) == sorted(ids)
    assert sorted(n.notification.id for n in rig.notes) == sorted(ids)
    assert all(p.proc is not None and p.proc.poll() is None for p in procs)
    # Both processes fired a share, and the shares add up to each reminder once: with
    # one process dead (or idle) the other would have fired all 500.
    shares = [fired_by(directory) for directory in metrics]
    assert all(shares), shares
    assert sum(shares) == 500, shares
