"""What the gateway reads (the reminders route, diagnostics) and the retention job.

Reminders are made by the engine on an injected clock from tasks written through the
event store and projected with the projector's apply step (the ``world`` fixture of the
engine tests); a few rows for retention are inserted directly, as said in each test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import BadMessage
from scheduler import retention
from scheduler.jobs import Job, JobRunner
from scheduler.options import SchedulerOptions
from scheduler.queries import (
    DeadReminder,
    dead_reminders,
    list_reminders,
    recent_job_runs,
    reminder_counts,
    reminders_in_spaces,
    scheduler_diagnostics,
)
from scheduler.retention import run_retention
from tests.integration.test_scheduler_engine import T0, World, iso, open_world


@pytest.fixture
async def world(fresh_database: Callable[..., Awaitable[str]]) -> AsyncIterator[World]:
    async with open_world(await fresh_database()) as opened:
        yield opened


#: When the retention job runs (defaults: reminders 30 days, runs 14, tokens 30).
LATER = T0 + timedelta(days=31)


async def test_list_reminders_pages_filters_and_reports_every_status(world: World) -> None:
    engine, w = world.make_engine(max_lateness=60), await world.writer()
    ids = {}
    for i in range(5):
        ids[f"t{i}"] = await w.task(f"t{i}", iso(10 * (i + 1)))
    ids["done"] = await w.task("done", iso(5))
    ids["old"] = await w.task("old", iso(-600))
    await engine.apply_changes(await world.project(w))
    await w.set("done", "done", True)
    await engine.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=25))
    await engine.drain_due()

    pages, cursor = [], None
    while True:
        page, cursor = await list_reminders(world.pool, w.space_id, None, 3, cursor)
        pages.append(page)
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    listed = [r for p in pages for r in p]
    assert [r.entity_id for r in listed] == ["old", "done", "t0", "t1", "t2", "t3", "t4"]
    by_entity = {r.entity_id: r for r in listed}
    assert by_entity["old"].status == "skipped"
    assert by_entity["old"].lateness_ms == 625_000
    assert by_entity["done"].status == "cancelled"
    assert (by_entity["t0"].status, by_entity["t0"].attempts, by_entity["t0"].lateness_ms) == (
        "fired",
        1,
        15_000,
    )
    assert by_entity["t4"].status == "scheduled"
    assert by_entity["t4"].fire_at == iso(50)
    assert by_entity["t4"].reminder_id == ids["t4"]

    fired, cursor = await list_reminders(world.pool, w.space_id, "fired", 100, None)
    assert ([r.entity_id for r in fired], cursor) == (["t0", "t1"], None)
    assert await list_reminders(world.pool, str(uuid.uuid4()), None, 10, None) == ([], None)
    assert await list_reminders(world.pool, "not-a-uuid", None, 10, None) == ([], None)
    with pytest.raises(BadMessage):
        await list_reminders(world.pool, w.space_id, "exploded", 10, None)
    with pytest.raises(BadMessage):
        await list_reminders(world.pool, w.space_id, None, 10, "garbage")

    counts = await reminder_counts(world.pool, world.clock.now())
    assert counts.by_status == {
        "scheduled": 3,
        "fired": 2,
        "cancelled": 1,
        "retrying": 0,
        "dead": 0,
        "skipped": 1,
    }
    world.clock.set(T0 + timedelta(seconds=45))  # t2 (30 s) and t3 (40 s) are overdue
    counts = await reminder_counts(world.pool, world.clock.now())
    assert (counts.due_unfired, counts.backlog_age_seconds) == (2, 15.0)
    assert await engine.backlog_age() == 15.0

    # What the sandbox shows of the same space: counts per status, the latest due first.
    by_status, latest = await reminders_in_spaces(world.pool, [w.space_id], 2)
    assert by_status == {"scheduled": 3, "fired": 2, "cancelled": 1, "skipped": 1}
    assert [(r.entity_id, r.status, r.fire_at) for r in latest] == [
        ("t4", "scheduled", iso(50)),
        ("t3", "scheduled", iso(40)),
    ]
    every = {r.entity_id: r for r in (await reminders_in_spaces(world.pool, [w.space_id], 10))[1]}
    assert (every["t0"].fired_at, every["t0"].lateness_ms) == (iso(25), 15_000)
    assert every["t4"].fired_at is None
    assert await reminders_in_spaces(world.pool, [str(uuid.uuid4())], 10) == ({}, [])


async def test_job_runner_records_outcomes_and_the_next_run_still_happens(world: World) -> None:
    runner = JobRunner(world.pool, instance="i1", clock=world.clock)
    state = {"n": 0}

    async def flaky() -> int:
        state["n"] += 1
        if state["n"] == 1:
            raise ValueError("first run breaks")
        return 7

    runner.register(Job("flaky", 1, 5, flaky))
    assert await runner.run("flaky") == "failed"
    assert await runner.run("flaky") == "ok"
    runs = await recent_job_runs(world.pool, 10, job="flaky")
    assert [(r.outcome, r.error, r.items) for r in runs] == [
        ("ok", None, 7),
        ("failed", "ValueError: first run breaks", 0),
    ]
    assert runs[0].run_id > runs[1].run_id  # newest first
    with pytest.raises(ValueError, match="twice"):
        runner.register(Job("flaky", 1, 5, flaky))


async def test_a_job_runs_duration_is_in_milliseconds_and_none_while_it_runs(world: World) -> None:
    await world.pool.execute(
        "INSERT INTO job_runs (job, instance, started_at, finished_at, outcome) VALUES "
        "('sweep', 'i1', $1, $2, 'ok'), ('sweep', 'i1', $3, NULL, 'running')",
        T0,
        T0 + timedelta(seconds=1, microseconds=250_900),
        T0 + timedelta(seconds=10),
    )
    running, done = await recent_job_runs(world.pool, 10)
    assert (running.outcome, running.finished_at, running.duration_ms) == ("running", None, None)
    assert (done.started_at, done.finished_at, done.duration_ms) == (iso(0), iso(1.2509), 1250)


async def test_retention_keeps_what_is_still_needed(world: World) -> None:
    engine, w = world.make_engine(), await world.writer()
    superseded = await w.task("t1", iso(10))
    await engine.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=11))
    await engine.drain_due()
    current = await w.set("t1", "remind_at", iso(20))  # supersedes the fired one
    await engine.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=21))
    await engine.drain_due()
    # Job runs and refresh tokens inserted directly (this test owns the database).
    await world.pool.execute(
        "INSERT INTO job_runs (job, instance, started_at, outcome) VALUES "
        "('old', 'x', $1, 'ok'), ('new', 'x', $2, 'ok')",
        LATER - timedelta(days=15),
        LATER - timedelta(days=13),
    )
    user, device, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await world.pool.execute(
        "INSERT INTO users (user_id, email, password_hash) VALUES ($1, 'a@b.test', 'x')", user
    )
    await world.pool.execute(
        "INSERT INTO devices (device_id, user_id, name) VALUES ($1, $2, 'd')", device, user
    )
    await world.pool.execute(
        "INSERT INTO auth_sessions (session_id, user_id, device_id) VALUES ($1, $2, $3)",
        session,
        user,
        device,
    )
    tokens = {
        "old_spent_expired": (LATER - timedelta(days=60), LATER - timedelta(days=40)),
        "recent_spent": (LATER - timedelta(days=1), LATER + timedelta(days=29)),
        "old_spent_unexpired": (LATER - timedelta(days=60), LATER + timedelta(days=1)),
        "unspent_expired": (None, LATER - timedelta(days=40)),
    }
    token_ids = {name: uuid.uuid4() for name in tokens}
    for name, (spent, expires) in tokens.items():
        await world.pool.execute(
            "INSERT INTO refresh_tokens (token_id, token_hash, session_id, expires_at, spent_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            token_ids[name],
            name.encode(),
            session,
            expires,
            spent,
        )

    deleted = await run_retention(world.pool, LATER, SchedulerOptions())
    assert deleted == 3  # the superseded reminder, the old run, the old spent token
    remaining = {str(r[0]) for r in await world.pool.fetch("SELECT reminder_id FROM reminders")}
    assert remaining == {current}
    assert superseded not in remaining
    jobs = {r[0] for r in await world.pool.fetch("SELECT job FROM job_runs")}
    assert jobs == {"new"}
    kept = {r[0] for r in await world.pool.fetch("SELECT token_id FROM refresh_tokens")}
    assert kept == {token_ids[n] for n in tokens if n != "old_spent_expired"}
    assert await run_retention(world.pool, LATER, SchedulerOptions()) == 0


async def test_the_reads_at_their_edges(world: World) -> None:
    """Page sizes below 1 read one row, a last page that is exactly full says so, every
    field of a row is its own, a refusal names what was wrong, and the backlog is 0 when
    nothing is due and at the instant a reminder falls due."""
    engine, w = world.make_engine(), await world.writer()
    ids = [await w.task(f"t{i}", iso(10 * (i + 1))) for i in range(3)]
    await engine.apply_changes(await world.project(w))
    counts = await reminder_counts(world.pool, T0)
    assert (counts.due_unfired, counts.backlog_age_seconds) == (0, 0.0)
    counts = await reminder_counts(world.pool, T0 + timedelta(seconds=10))
    assert (counts.due_unfired, counts.backlog_age_seconds) == (1, 0.0)
    # Without a time: now (2030's reminders are not due yet).
    assert (await reminder_counts(world.pool)).due_unfired == 0
    await world.pool.execute(
        "UPDATE reminders SET fire_at = $2 WHERE reminder_id = $1",
        ids[0],
        datetime.now(UTC) - timedelta(hours=1),
    )
    now_counts = await reminder_counts(world.pool)
    assert now_counts.due_unfired == 1
    assert 3600 <= now_counts.backlog_age_seconds < 3700
    await world.pool.execute(
        "UPDATE reminders SET fire_at = $2 WHERE reminder_id = $1",
        ids[0],
        T0 + timedelta(seconds=10),
    )

    page, cursor = await list_reminders(world.pool, w.space_id, None, 0, None)
    assert ([r.reminder_id for r in page], cursor is not None) == ([ids[0]], True)
    page, cursor = await list_reminders(world.pool, w.space_id, None, 3, None)
    assert ([r.reminder_id for r in page], cursor) == (ids, None)  # exactly full, the last
    assert {(r.entity_type, r.last_error) for r in page} == {("task", None)}

    # Two dead (their delivery ran out of attempts), the second newer.
    for n, rid in enumerate(ids[:2]):
        await world.pool.execute(
            "UPDATE reminders SET status = 'dead', attempts = $2, last_error = $3, "
            "updated_at = $4 WHERE reminder_id = $1",
            rid,
            5 + n,
            f"HTTP 50{n}",
            T0 + timedelta(seconds=100 + n),
        )
    listed = {
        r.reminder_id: r for r in (await list_reminders(world.pool, w.space_id, "dead", 5, None))[0]
    }
    assert listed[ids[1]].last_error == "HTTP 501"
    newest = DeadReminder(
        reminder_id=ids[1],
        space_id=w.space_id,
        entity_type="task",
        entity_id="t1",
        fire_at=iso(20),
        attempts=6,
        last_error="HTTP 501",
        since=iso(101),
    )
    assert await dead_reminders(world.pool, 1) == [newest]
    assert await dead_reminders(world.pool, 0) == [newest]
    assert [d.reminder_id for d in await dead_reminders(world.pool)] == [ids[1], ids[0]]

    latest = await reminders_in_spaces(world.pool, [w.space_id], 0)
    assert [(r.reminder_id, r.entity_type, r.entity_id) for r in latest[1]] == [
        (ids[2], "task", "t2")
    ]

    await world.pool.execute(
        "INSERT INTO job_runs (job, instance, started_at, finished_at, outcome, items) VALUES "
        "('sweep', 'i1', $1, $1, 'ok', 1), ('prune', 'i1', $2, $2, 'ok', 2)",
        T0,
        T0 + timedelta(seconds=1),
    )
    assert [r.job for r in await recent_job_runs(world.pool, 0)] == ["prune"]
    assert [r.job for r in await recent_job_runs(world.pool, 5, job="sweep")] == ["sweep"]
    diagnostics = await scheduler_diagnostics(world.pool, 1)
    assert (diagnostics.dead, [r.job for r in diagnostics.job_runs]) == ([newest], ["prune"])
    assert diagnostics.reminders.by_status["dead"] == 2

    with pytest.raises(BadMessage) as status:
        await list_reminders(world.pool, w.space_id, "late", 10, None)
    assert (
        status.value.message
        == "status: one of scheduled, fired, cancelled, retrying, dead, skipped"
    )
    with pytest.raises(BadMessage) as after:
        await list_reminders(world.pool, w.space_id, None, 10, "garbage")
    assert after.value.message == "after: not a cursor returned by this route"


async def test_retention_deletes_in_batches_until_none_is_left(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH", 2)
    await world.pool.execute(
        "INSERT INTO job_runs (job, instance, started_at, outcome) "
        "SELECT 'old', 'x', $1, 'ok' FROM generate_series(1, 5)",
        LATER - timedelta(days=20),
    )
    assert await run_retention(world.pool, LATER, SchedulerOptions()) == 5
    assert await world.pool.fetchval("SELECT count(*) FROM job_runs") == 0


async def test_the_diagnostics_show_the_latest_20_and_the_lists_100_by_default(
    world: World,
) -> None:
    await world.pool.execute(
        "INSERT INTO reminders (reminder_id, space_id, entity_type, entity_id, fire_at, "
        "status, created_at, updated_at) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 'task', 't' || n, $1, 'dead', $1, "
        "$1::timestamptz + n * interval '1 second' FROM generate_series(1, 101) AS n",
        T0,
    )
    await world.pool.execute(
        "INSERT INTO job_runs (job, instance, started_at, outcome) "
        "SELECT 'sweep', 'i1', $1::timestamptz + n * interval '1 second', 'ok' "
        "FROM generate_series(1, 101) AS n",
        T0,
    )
    dead, runs = await dead_reminders(world.pool), await recent_job_runs(world.pool)
    assert (len(dead), len(runs)) == (100, 100)
    assert (dead[0].entity_id, dead[-1].entity_id) == ("t101", "t2")  # the newest first
    diagnostics = await scheduler_diagnostics(world.pool)
    assert (len(diagnostics.dead), len(diagnostics.job_runs)) == (20, 20)
    assert diagnostics.reminders.by_status["dead"] == 101
