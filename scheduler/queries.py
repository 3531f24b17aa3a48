"""Read functions for the gateway: the reminders of a space, and diagnostics. The one
place outside the scheduler that knows the ``reminders`` and ``job_runs`` tables.

``GET /v1/spaces/{space_id}/reminders`` is :func:`list_reminders` (after the gateway
checked membership); ``/v1/diagnostics`` and the diagnostics page's
``/v1/diagnostics/activity`` use :func:`reminder_counts`, :func:`dead_reminders` and
:func:`recent_job_runs`; the sandbox's figures use :func:`reminders_in_spaces`.
Diagnostics show counts, ids and errors, never field values. ``timeout`` (seconds) bounds
each query where a page must not hang on a busy database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec

from core.errors import BadMessage
from core.ids import canonical_id, keyset_cursor, parse_keyset_cursor
from core.wire import ReminderInfo, ReminderStatus
from eventstore.errors import translated
from scheduler.clock import format_time, millis

STATUSES: tuple[ReminderStatus, ...] = (
    "scheduled",
    "fired",
    "cancelled",
    "retrying",
    "dead",
    "skipped",
)
MAX_LIMIT = 1000

_LIST = """
SELECT reminder_id, entity_type, entity_id, fire_at, status, attempts, lateness_ms,
       last_error
FROM reminders
WHERE space_id = $1 AND ($2::text IS NULL OR status = $2) {after}
ORDER BY fire_at, reminder_id
LIMIT $3
"""


class DeadReminder(msgspec.Struct, frozen=True, kw_only=True):
    reminder_id: str
    space_id: str
    entity_type: str
    entity_id: str
    fire_at: str
    attempts: int
    last_error: str | None
    since: str


class JobRun(msgspec.Struct, frozen=True, kw_only=True):
    run_id: int
    job: str
    instance: str
    started_at: str
    finished_at: str | None
    #: ``finished_at - started_at`` in whole milliseconds; None while it runs.
    duration_ms: int | None
    outcome: str
    error: str | None
    items: int


class SpaceReminder(msgspec.Struct, frozen=True, kw_only=True):
    """One reminder of the sandbox's figures: when it was due and when it fired."""

    reminder_id: str
    entity_type: str
    entity_id: str
    fire_at: str
    status: str
    fired_at: str | None
    lateness_ms: int | None


class ReminderCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Reminders per status, and the backlog: due but not fired, oldest first."""

    by_status: dict[str, int]
    due_unfired: int
    backlog_age_seconds: float


def _clamped(limit: int) -> int:
    """A page size: ``limit`` brought into 1..``MAX_LIMIT``."""
    return max(1, min(limit, MAX_LIMIT))


def encode_cursor(fire_at: datetime, reminder_id: str) -> str:
    """An opaque cursor naming the last row of a page: ``core.ids.keyset_cursor``."""
    return keyset_cursor(fire_at, reminder_id)


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (fire_at, reminder_id) a cursor names; 400 ``bad_message`` when malformed."""
    position = parse_keyset_cursor(cursor)
    if position is None:
        raise BadMessage("after: not a cursor returned by this route")
    return position


def _valid_status(status: str | None) -> str | None:
    if status is not None and status not in STATUSES:
        raise BadMessage(f"status: one of {', '.join(STATUSES)}")
    return status


async def list_reminders(
    pool: asyncpg.Pool, space_id: str, status: str | None, limit: int, after: str | None
) -> tuple[list[ReminderInfo], str | None]:
    """One page of a space's reminders, whatever their status (or only ``status``),
    ordered by (fire_at, reminder_id); the cursor of the next page, or None at the end.

    ``limit`` is clamped to 1..1000. A malformed ``status`` or ``after`` is 400
    ``bad_message``; a ``space_id`` that is not a UUID names nothing (an empty page)."""
    wanted = _valid_status(status)
    sid = canonical_id(space_id)
    if sid is None:
        return [], None
    size = _clamped(limit)
    args: list[object] = [sid, wanted, size + 1]
    clause = ""
    if after is not None:
        at, rid = decode_cursor(after)
        clause = "AND (fire_at, reminder_id) > ($4, $5::uuid)"
        args += [at, rid]
    with translated():  # driver errors become core.errors (Unavailable when transient)
        rows = await pool.fetch(_LIST.format(after=clause), *args)
    page = [
        ReminderInfo(
            reminder_id=str(r["reminder_id"]),
            entity_type=r["entity_type"],
            entity_id=r["entity_id"],
            fire_at=format_time(r["fire_at"]),
            status=r["status"],
            attempts=r["attempts"],
            lateness_ms=r["lateness_ms"],
            last_error=r["last_error"],
        )
        for r in rows[:size]
    ]
    if len(rows) <= size:
        return page, None
    last = rows[size - 1]
    return page, encode_cursor(last["fire_at"], str(last["reminder_id"]))


async def dead_reminders(pool: asyncpg.Pool, limit: int = 100) -> list[DeadReminder]:
    """Reminders whose delivery ran out of attempts (or that could not fire), newest first."""
    with translated():
        rows = await pool.fetch(
            "SELECT reminder_id, space_id, entity_type, entity_id, fire_at, attempts, "
            "last_error, updated_at FROM reminders WHERE status = 'dead' "
            "ORDER BY updated_at DESC LIMIT $1",
            _clamped(limit),
        )
    return [
        DeadReminder(
            reminder_id=str(r["reminder_id"]),
            space_id=str(r["space_id"]),
            entity_type=r["entity_type"],
            entity_id=r["entity_id"],
            fire_at=format_time(r["fire_at"]),
            attempts=r["attempts"],
            last_error=r["last_error"],
            since=format_time(r["updated_at"]),
        )
        for r in rows
    ]


async def recent_job_runs(
    pool: asyncpg.Pool,
    limit: int = 100,
    job: str | None = None,
) -> list[JobRun]:
    """The latest job runs (of every job, or of ``job``), newest first."""
    with translated():
        rows = await pool.fetch(
            "SELECT run_id, job, instance, started_at, finished_at, outcome, error, items "
            "FROM job_runs WHERE $2::text IS NULL OR job = $2 "
            "ORDER BY started_at DESC, run_id DESC LIMIT $1",
            _clamped(limit),
            job,
        )
    return [
        JobRun(
            run_id=r["run_id"],
            job=r["job"],
            instance=r["instance"],
            started_at=format_time(r["started_at"]),
            finished_at=None if r["finished_at"] is None else format_time(r["finished_at"]),
            duration_ms=None
            if r["finished_at"] is None
            else millis(r["finished_at"] - r["started_at"]),
            outcome=r["outcome"],
            error=r["error"],
            items=r["items"],
        )
        for r in rows
    ]


async def reminder_counts(pool: asyncpg.Pool, now: datetime | None = None) -> ReminderCounts:
    """Reminders per status and the due-but-unfired backlog (count and oldest age)."""
    at = now or datetime.now(UTC)
    with translated():
        rows = await pool.fetch("SELECT status, count(*) AS n FROM reminders GROUP BY status")
        backlog = await pool.fetchrow(
            "SELECT count(*) AS n, min(fire_at) AS oldest FROM reminders "
            "WHERE status = 'scheduled' AND fire_at <= $1",
            at,
        )
    assert backlog is not None
    oldest: datetime | None = backlog["oldest"]
    return ReminderCounts(
        by_status={s: 0 for s in STATUSES} | {r["status"]: r["n"] for r in rows},
        due_unfired=backlog["n"],
        backlog_age_seconds=0.0 if oldest is None else max(0.0, (at - oldest).total_seconds()),
    )


class SchedulerDiagnostics(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``/v1/diagnostics`` shows of missed background work, in one value."""

    reminders: ReminderCounts
    dead: list[DeadReminder]
    job_runs: list[JobRun]


async def scheduler_diagnostics(pool: asyncpg.Pool, limit: int = 20) -> SchedulerDiagnostics:
    """Reminder counts and backlog, the latest dead reminders and the latest job runs."""
    return SchedulerDiagnostics(
        reminders=await reminder_counts(pool),
        dead=await dead_reminders(pool, limit),
        job_runs=await recent_job_runs(pool, limit),
    )


async def reminders_in_spaces(
    pool: asyncpg.Pool, space_ids: Sequence[str], limit: int
) -> tuple[dict[str, int], list[SpaceReminder]]:
    """The reminders of some spaces: how many per status, and the ``limit`` latest due."""
    with translated():
        counts = await pool.fetch(
            "SELECT status, count(*) AS n FROM reminders WHERE space_id = ANY($1::uuid[]) "
            "GROUP BY 1",
            space_ids,
        )
        rows = await pool.fetch(
            "SELECT reminder_id::text, entity_type, entity_id, fire_at, status, fired_at, "
            "lateness_ms FROM reminders WHERE space_id = ANY($1::uuid[]) "
            "ORDER BY fire_at DESC LIMIT $2",
            space_ids,
            _clamped(limit),
        )
    latest = [
        SpaceReminder(
            reminder_id=r["reminder_id"],
            entity_type=r["entity_type"],
            entity_id=r["entity_id"],
            fire_at=format_time(r["fire_at"]),
            status=r["status"],
            fired_at=None if r["fired_at"] is None else format_time(r["fired_at"]),
            lateness_ms=r["lateness_ms"],
        )
        for r in rows
    ]
    return {r["status"]: r["n"] for r in counts}, latest
