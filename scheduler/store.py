"""SQL of the reminders table: apply task states, claim due work, record outcomes.

Every statement receives ``now`` from the caller's clock (never PostgreSQL's ``now()``),
so the logic is testable on a manual clock. Claims are leases: ``claimed_by`` and
``claim_until`` are set in a short transaction with ``FOR UPDATE SKIP LOCKED`` (two
instances never claim the same row at once, and neither waits on the other); an
expired lease is claimable again, which is how a crashed or hung firing is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from core.events import ReminderChange
from scheduler.clock import parse_time

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

REMINDER_COLUMNS = (
    "reminder_id, space_id, entity_type, entity_id, fire_at, status, attempts, "
    "next_attempt_at, last_error, lateness_ms, fired_at, event_seq, decision, claimed_by, "
    "claim_until"
)


@dataclass(frozen=True, order=True)
class TaskState:
    """What the scheduler needs of a task's merged state at ``seq``."""

    space_id: str
    entity_type: str
    entity_id: str
    seq: int
    reminder_id: str | None
    fire_at: datetime | None
    #: The reminder may fire: it exists, and the task is neither done nor deleted.
    active: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.space_id, self.entity_type, self.entity_id)

    @classmethod
    def from_change(cls, change: ReminderChange) -> TaskState:
        fire_at = None if change.remind_at is None else parse_time(change.remind_at)
        reminder_id = change.reminder_id if fire_at is not None else None
        return cls(
            space_id=change.space_id,
            entity_type=change.entity_type,
            entity_id=change.entity_id,
            seq=change.seq,
            reminder_id=reminder_id,
            fire_at=fire_at,
            active=reminder_id is not None and not change.done and not change.deleted,
        )


@dataclass(frozen=True)
class Applied:
    """What applying task states changed: reminders now scheduled (new or reactivated)
    with their times, and reminders cancelled."""

    scheduled: list[tuple[str, datetime]]
    cancelled: list[str]
    tasks: int


# Only the newest state of a task is applied (``seq`` grows); a task never seen before
# is tracked only once it has a reminder. ON CONFLICT locks the task row even when the
# WHERE refuses the update, so concurrent appliers of one task run one after the other.
_UPSERT_TASKS = """
INSERT INTO reminder_tasks AS t
    (space_id, entity_type, entity_id, seq, reminder_id, fire_at, active, updated_at)
SELECT u.space_id, u.entity_type, u.entity_id, u.seq, u.reminder_id, u.fire_at, u.active, $8
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::uuid[],
            $6::timestamptz[], $7::boolean[])
     AS u(space_id, entity_type, entity_id, seq, reminder_id, fire_at, active)
WHERE u.reminder_id IS NOT NULL OR EXISTS (
    SELECT 1 FROM reminder_tasks x
    WHERE x.space_id = u.space_id AND x.entity_type = u.entity_type
      AND x.entity_id = u.entity_id)
ORDER BY u.space_id, u.entity_type, u.entity_id
ON CONFLICT (space_id, entity_type, entity_id) DO UPDATE
SET seq = EXCLUDED.seq, reminder_id = EXCLUDED.reminder_id, fire_at = EXCLUDED.fire_at,
    active = EXCLUDED.active, updated_at = EXCLUDED.updated_at
WHERE t.seq < EXCLUDED.seq
RETURNING t.space_id, t.entity_type, t.entity_id, t.reminder_id, t.fire_at, t.active
"""

# A scheduled reminder of an advanced task stops when it is no longer the winner or the
# task is done or deleted. Fired, skipped, dead (and delivering) rows keep their status:
# what happened stays recorded. A firing in progress holds the row lock, so this waits
# for it and then re-checks ``status`` on the committed row. A row with a ``decision``
# is a firing whose process died after the claim (perhaps after its event was
# appended): the retry finishes it, so it is not cancelled either.
_CANCEL = """
UPDATE reminders AS r
SET status = 'cancelled', claimed_by = NULL, claim_until = NULL, updated_at = $6
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::boolean[])
     AS a(space_id, entity_type, entity_id, reminder_id, active)
WHERE r.space_id = a.space_id AND r.entity_type = a.entity_type
  AND r.entity_id = a.entity_id AND r.status = 'scheduled' AND r.decision IS NULL
  AND (r.reminder_id IS DISTINCT FROM a.reminder_id OR NOT a.active)
RETURNING r.reminder_id
"""

# The winning reminder: inserted (cancelled right away when the task is done or deleted,
# so listings show it), or reactivated when it was cancelled and the task is active again
# (undo done, restore). A reactivated reminder that is due fires at once.
_UPSERT_WINNERS = """
INSERT INTO reminders AS r
    (reminder_id, space_id, entity_type, entity_id, fire_at, status, created_at, updated_at)
SELECT u.reminder_id, u.space_id, u.entity_type, u.entity_id, u.fire_at,
       CASE WHEN u.active THEN 'scheduled' ELSE 'cancelled' END, $7, $7
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::boolean[])
     AS u(reminder_id, space_id, entity_type, entity_id, fire_at, active)
ORDER BY u.reminder_id
ON CONFLICT (reminder_id) DO UPDATE
SET status = 'scheduled', updated_at = EXCLUDED.updated_at
WHERE r.status = 'cancelled' AND EXCLUDED.status = 'scheduled'
RETURNING r.reminder_id, r.fire_at, r.status
"""


def _columns(rows: Sequence[Any], *names: str) -> list[list[Any]]:
    """Column arrays (for ``unnest``) of records or TaskStates."""
    if rows and isinstance(rows[0], asyncpg.Record):
        return [[r[n] for r in rows] for n in names]
    return [[getattr(r, n) for r in rows] for n in names]


async def apply_states(conn: Conn, states: Sequence[TaskState], now: datetime) -> Applied:
    """Bring the reminders of these tasks in line with their states, in one transaction."""
    newest: dict[tuple[str, str, str], TaskState] = {}
    for state in states:
        seen = newest.get(state.key)
        if seen is None or seen.seq < state.seq:
            newest[state.key] = state
    # A fixed order of row locks: two appliers of overlapping batches cannot deadlock.
    batch = sorted(newest.values())
    if not batch:
        return Applied([], [], 0)
    names = ("space_id", "entity_type", "entity_id", "seq", "reminder_id", "fire_at", "active")
    async with conn.transaction():
        advanced = await conn.fetch(_UPSERT_TASKS, *_columns(batch, *names), now)
        if not advanced:
            return Applied([], [], 0)
        cancelled = await conn.fetch(
            _CANCEL,
            *_columns(advanced, "space_id", "entity_type", "entity_id", "reminder_id", "active"),
            now,
        )
        winners = [r for r in advanced if r["reminder_id"] is not None]
        upserted = await conn.fetch(
            _UPSERT_WINNERS,
            *_columns(winners, "reminder_id", "space_id", "entity_type", "entity_id", "fire_at"),
            [r["active"] for r in winners],
            now,
        )
    scheduled = [
        (str(r["reminder_id"]), r["fire_at"]) for r in upserted if r["status"] == "scheduled"
    ]
    return Applied(scheduled, [str(r["reminder_id"]) for r in cancelled], len(advanced))


# ------------------------------------------------------------------ reconciliation

# Spaces the projector has advanced past what the scheduler reconciled (its cursor in
# reminder_cursors): only those are read, so a sweep costs nothing for quiet spaces.
_SPACES_BEHIND = """
SELECT c.space_id, COALESCE(r.seq, 0) AS done
FROM projector_checkpoints c LEFT JOIN reminder_cursors r USING (space_id)
WHERE c.seq > COALESCE(r.seq, 0)
ORDER BY c.space_id
LIMIT $1
"""

# Task states of one space changed after ``done`` that the scheduler has not applied:
# new reminders, and any change of a task it tracks.
_SPACE_STATES = """
SELECT e.entity_type, e.entity_id, e.applied_seq, e.remind_at_op_id, e.remind_at,
       e.done, e.deleted
FROM entity_states e
LEFT JOIN reminder_tasks t
  ON t.space_id = e.space_id AND t.entity_type = e.entity_type AND t.entity_id = e.entity_id
WHERE e.space_id = $1 AND e.entity_type = 'task' AND e.applied_seq > $2
  AND ((t.seq IS NULL AND e.remind_at_op_id IS NOT NULL) OR e.applied_seq > t.seq)
"""


async def spaces_behind(conn: Conn, limit: int) -> list[tuple[str, int]]:
    """Spaces whose projection moved past the scheduler's cursor, with that cursor."""
    rows = await conn.fetch(_SPACES_BEHIND, limit)
    return [(str(r["space_id"]), r["done"]) for r in rows]


async def space_states(conn: Conn, space_id: str, done: int) -> tuple[int, list[TaskState]]:
    """The space's checkpoint and its task states to apply, read in one snapshot (the
    projector commits states and checkpoint together), so after applying them the
    cursor may move to that checkpoint without missing anything."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        checkpoint: int = await conn.fetchval(
            "SELECT seq FROM projector_checkpoints WHERE space_id = $1", space_id
        )
        rows = await conn.fetch(_SPACE_STATES, space_id, done)
    states = []
    for r in rows:
        reminder_id = None if r["remind_at"] is None else r["remind_at_op_id"]
        states.append(
            TaskState(
                space_id=space_id,
                entity_type=r["entity_type"],
                entity_id=r["entity_id"],
                seq=r["applied_seq"],
                reminder_id=None if reminder_id is None else str(reminder_id),
                fire_at=r["remind_at"] if reminder_id is not None else None,
                active=reminder_id is not None and not r["done"] and not r["deleted"],
            )
        )
    return checkpoint, states


async def advance_cursor(conn: Conn, space_id: str, seq: int) -> None:
    await conn.execute(
        "INSERT INTO reminder_cursors AS r (space_id, seq) VALUES ($1, $2) "
        "ON CONFLICT (space_id) DO UPDATE SET seq = EXCLUDED.seq WHERE r.seq < EXCLUDED.seq",
        space_id,
        seq,
    )


# ------------------------------------------------------------------ claims


def lease_until(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


# The decision (fire or skip) is fixed by the first claim and kept across retries.
_CLAIM_DUE = f"""
WITH due AS (
    SELECT reminder_id FROM reminders
    WHERE status = 'scheduled' AND fire_at <= $1
      AND (claim_until IS NULL OR claim_until <= $1)
    ORDER BY fire_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE reminders AS r
SET claimed_by = $3, claim_until = $4,
    decision = COALESCE(r.decision,
        CASE WHEN $1 - r.fire_at > make_interval(secs => $5) THEN 'skip' ELSE 'fire' END)
FROM due WHERE r.reminder_id = due.reminder_id
RETURNING {", ".join("r." + c.strip() for c in REMINDER_COLUMNS.split(","))}
"""


async def claim_due(
    conn: Conn, *, now: datetime, limit: int, instance: str, lease: float, max_lateness: float
) -> list[asyncpg.Record]:
    """Claim up to ``limit`` due, scheduled reminders whose lease is free or expired."""
    return await conn.fetch(
        _CLAIM_DUE, now, limit, instance, lease_until(now, lease), float(max_lateness)
    )


_CLAIM_DELIVERIES = f"""
WITH due AS (
    SELECT reminder_id FROM reminders
    WHERE next_attempt_at <= $1 AND status IN ('fired', 'retrying')
      AND (claim_until IS NULL OR claim_until <= $1)
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE reminders AS r SET claimed_by = $3, claim_until = $4
FROM due WHERE r.reminder_id = due.reminder_id
RETURNING {", ".join("r." + c.strip() for c in REMINDER_COLUMNS.split(","))}
"""


async def claim_deliveries(
    conn: Conn, *, now: datetime, limit: int, instance: str, lease: float
) -> list[asyncpg.Record]:
    """Claim up to ``limit`` reminders whose next webhook attempt is due."""
    if limit <= 0:
        return []
    return await conn.fetch(_CLAIM_DELIVERIES, now, limit, instance, lease_until(now, lease))


async def finish_delivery(
    conn: Conn,
    reminder_id: str,
    instance: str,
    *,
    status: str,
    attempts: int,
    next_attempt_at: datetime | None,
    last_error: str | None,
    now: datetime,
) -> bool:
    """Record one delivery attempt's outcome (only while the claim is still ours)."""
    done = await conn.fetchval(
        """
        UPDATE reminders SET status = $3, attempts = $4, next_attempt_at = $5,
            last_error = $6, claimed_by = NULL, claim_until = NULL, updated_at = $7
        WHERE reminder_id = $1 AND claimed_by = $2
        RETURNING true
        """,
        reminder_id,
        instance,
        status,
        attempts,
        next_attempt_at,
        last_error,
        now,
    )
    return bool(done)


async def release(conn: Conn, reminder_id: str, instance: str, retry_at: datetime) -> None:
    """Give a claimed delivery back untouched, due again at ``retry_at`` (breaker open)."""
    await conn.execute(
        "UPDATE reminders SET claimed_by = NULL, claim_until = NULL, next_attempt_at = $3 "
        "WHERE reminder_id = $1 AND claimed_by = $2",
        reminder_id,
        instance,
        retry_at,
    )


async def upcoming(conn: Conn, until: datetime) -> list[tuple[str, datetime]]:
    """Scheduled reminders that become claimable by ``until`` (the sweep window), soonest
    first, with that time: their fire_at, or the end of a lease still held on them (a
    crashed firing is then retried the moment its lease runs out)."""
    rows = await conn.fetch(
        """
        SELECT reminder_id, at FROM (
            SELECT reminder_id, GREATEST(fire_at, COALESCE(claim_until, fire_at)) AS at
            FROM reminders WHERE status = 'scheduled' AND fire_at <= $1
        ) AS due
        WHERE at <= $1 ORDER BY at LIMIT 10000
        """,
        until,
    )
    return [(str(r["reminder_id"]), r["at"]) for r in rows]


async def backlog_age(conn: Conn, now: datetime) -> float:
    """Seconds since the oldest due, still scheduled reminder was due (0 when none)."""
    oldest: datetime | None = await conn.fetchval(
        "SELECT min(fire_at) FROM reminders WHERE status = 'scheduled' AND fire_at <= $1", now
    )
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
