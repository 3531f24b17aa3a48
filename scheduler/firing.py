"""Firing a batch of claimed reminders: what each one appends, and the SQL that locks the
batch's rows and records every outcome in one statement each.

A batch is completed in one transaction on the scheduler's pool (docs/scheduler.md,
"Firing in batches"): lock the claimed rows that are still ``scheduled`` and still ours,
append every event as one batch (``EventStore.append_server_events``), then record each
reminder's outcome (fired, skipped, or dead with its reason) and COMMIT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.ports import ServerEvent
from scheduler.clock import format_time, millis
from scheduler.store import REMINDER_COLUMNS, Conn


@dataclass(frozen=True)
class Firing:
    """One reminder this instance completed: fired (notified), skipped, or dead."""

    reminder_id: str
    space_id: str
    entity_type: str
    entity_id: str
    outcome: str  # "fired" | "skipped" | "dead"
    fire_at: datetime
    fired_at: datetime | None
    lateness_ms: int
    duplicate: bool
    #: The seq of its ``reminder_fired`` / ``reminder_skipped`` event (0: none, dead).
    seq: int = 0
    #: Why a dead reminder could not fire (None otherwise).
    error: str | None = None


# Row locks in reminder_id order: two batches that share rows (a lease taken over
# mid-batch) wait on each other in one direction only.
_LOCK = f"""
SELECT {REMINDER_COLUMNS} FROM reminders
WHERE reminder_id = ANY($1::uuid[])
ORDER BY reminder_id
FOR UPDATE
"""


async def lock_claimed(
    conn: Conn, reminder_ids: Sequence[str], instance: str
) -> list[asyncpg.Record]:
    """Inside a transaction: lock the rows and keep those still ours to fire.

    Under the locks nobody can cancel them or fire them; a row whose lease expired and
    was claimed by another instance meanwhile names that instance and is left alone,
    as is one fired or cancelled since the claim."""
    rows = await conn.fetch(_LOCK, list(reminder_ids))
    return [r for r in rows if r["status"] == "scheduled" and r["claimed_by"] == instance]


def event_of(row: asyncpg.Record, now: datetime) -> ServerEvent:
    """The event a locked row appends now: ``reminder_fired``, or ``reminder_skipped``
    when its first claim decided it was too late (the decision survives retries)."""
    rid, fire_at = str(row["reminder_id"]), row["fire_at"]
    lateness = max(0, millis(now - fire_at))
    value: dict[str, Any] = {"reminder_id": rid, "fire_at": format_time(fire_at)}
    if row["decision"] == "skip":
        kind = "reminder_skipped"
        value |= {"lateness_ms": lateness, "reason": "too_late"}
    else:
        kind = "reminder_fired"
        value |= {"fired_at": format_time(now), "lateness_ms": lateness}
    return ServerEvent(
        space_id=str(row["space_id"]),
        kind=kind,
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        value=value,
        key=f"{kind}:{rid}",
    )


# One statement records every outcome of the batch. What each outcome sets (the rest of
# the row stays as it was):
#   fired:   fired_at, lateness_ms, event_seq, attempts, next_attempt_at, last_error;
#   skipped: lateness_ms, event_seq;
#   dead:    last_error.
_RECORD = """
UPDATE reminders AS r SET
    status = u.status,
    fired_at = CASE WHEN u.status = 'fired' THEN u.fired_at ELSE r.fired_at END,
    lateness_ms = CASE WHEN u.status = 'dead' THEN r.lateness_ms ELSE u.lateness_ms END,
    event_seq = CASE WHEN u.status = 'dead' THEN r.event_seq ELSE u.event_seq END,
    attempts = CASE WHEN u.status = 'fired' THEN u.attempts ELSE r.attempts END,
    next_attempt_at = CASE WHEN u.status = 'fired' THEN u.next_attempt_at
                           ELSE r.next_attempt_at END,
    last_error = CASE WHEN u.status = 'skipped' THEN r.last_error ELSE u.last_error END,
    claimed_by = NULL, claim_until = NULL, updated_at = $9
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[], $5::bigint[],
            $6::integer[], $7::timestamptz[], $8::text[])
     AS u(reminder_id, status, fired_at, lateness_ms, event_seq, attempts,
          next_attempt_at, last_error)
WHERE r.reminder_id = u.reminder_id
"""


async def record(
    conn: Conn, firings: Sequence[Firing], now: datetime, *, webhook_enabled: bool
) -> None:
    """Store every outcome (inside the batch's transaction, which holds the row locks)."""
    if not firings:
        return
    # attempts: with a webhook, its POSTs (none yet, the first is due at once); else the
    # one in-app notification.
    attempts = 0 if webhook_enabled else 1
    columns: list[list[Any]] = [[] for _ in range(8)]
    for f in firings:
        row = (
            f.reminder_id,
            f.outcome,
            f.fired_at,
            f.lateness_ms,
            f.seq or None,
            attempts,
            f.fired_at if webhook_enabled else None,
            f.error,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    await conn.execute(_RECORD, *columns, now)
