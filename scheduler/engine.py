"""The reminder core: apply task states, reconcile with the read model, fire due reminders.

Exactly once (docs/architecture.md invariant 7), by three facts:

1. A firing claims its row first (a lease, ``FOR UPDATE SKIP LOCKED``), then, inside one
   transaction, locks the row and re-checks that it is still ``scheduled`` and still
   claimed by this instance. Only then does it append the event.
2. The event's op_id is an HMAC of ``reminder_fired:<reminder_id>``
   (``append_server_event``): whoever appends a second time gets ``duplicate`` and the
   original event back, never a second event.
3. The row becomes ``fired`` after the append. A crash in between leaves the row
   ``scheduled`` with a lease that expires; the retry appends a duplicate and completes
   the row. The skip-or-fire decision is stored by the first claim, so a retry cannot
   turn a crashed firing into a ``reminder_skipped`` (or the other way round).

After the row commits, the firing that changed it publishes the space hint of its
event (gateways deliver ``reminder_fired`` / ``reminder_skipped`` to subscribed devices
at once, as they do for a push) and then the notification.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core.errors import ConcordError
from core.events import (
    ENCODER,
    Names,
    NotificationEnvelope,
    ReminderChange,
    publish_space_hint,
)
from core.metrics import REMINDER_BACKLOG_AGE, REMINDER_LATENESS, REMINDERS
from core.ports import Bus, EventStore, ServerAppend
from core.wire import Notification
from scheduler import store
from scheduler.clock import Clock, format_time, millis, parse_time
from scheduler.faults import Faults
from scheduler.options import SchedulerOptions
from scheduler.store import Applied, TaskState

log = logging.getLogger("concord.scheduler")


@dataclass(frozen=True)
class Firing:
    """One reminder this instance completed: fired (notified) or skipped."""

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


def notification_of(firing: Firing) -> Notification:
    assert firing.fired_at is not None
    return Notification(
        id=firing.reminder_id,
        space_id=firing.space_id,
        entity_type=firing.entity_type,
        entity_id=firing.entity_id,
        kind="reminder",
        fire_at=format_time(firing.fire_at),
        fired_at=format_time(firing.fired_at),
    )


async def _retrying_deadlocks(
    conn: store.Conn, states: Sequence[TaskState], now: datetime
) -> Applied:
    # Lock order is fixed (sorted tasks), so deadlocks should not happen; a retry costs
    # nothing and keeps a NATS batch from being dropped if PostgreSQL ever disagrees.
    for attempt in range(3):
        try:
            return await store.apply_states(conn, states, now)
        except asyncpg.DeadlockDetectedError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class ReminderEngine:
    """Reminder logic on one pool; ``now`` always comes from ``clock``."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        events: EventStore,
        clock: Clock,
        instance: str,
        max_lateness: float,
        options: SchedulerOptions,
        bus: Bus | None = None,
        prefix: str = "concord",
        webhook_enabled: bool = False,
        faults: Faults | None = None,
    ) -> None:
        self.pool = pool
        self.events = events
        self.clock = clock
        self.instance = instance
        self.max_lateness = max_lateness
        self.options = options
        self.bus = bus
        self.prefix = prefix
        self.webhook_enabled = webhook_enabled
        self.faults = faults or Faults()
        self._slots = asyncio.Semaphore(options.fire_concurrency)

    # ------------------------------------------------------------------ task states

    async def apply_changes(self, changes: Sequence[ReminderChange]) -> Applied:
        """Apply ReminderChange messages (from NATS); malformed ones are logged and dropped
        (reconciliation from the read model covers them)."""
        states = []
        for change in changes:
            try:
                states.append(TaskState.from_change(change))
            except ValueError as exc:
                log.warning("ignoring reminder change of %s: %s", change.entity_id, exc)
        return await self.apply(states)

    async def apply(self, states: Sequence[TaskState]) -> Applied:
        if not states:
            return Applied([], [], 0)
        async with self.pool.acquire() as conn:
            applied = await _retrying_deadlocks(conn, states, self.clock.now())
        if applied.cancelled:
            REMINDERS.labels(outcome="cancelled").inc(len(applied.cancelled))
        return applied

    async def reconcile(self, page: int = 500, rounds: int = 100) -> Applied:
        """Apply every read-model task state not applied yet (a lost NATS message, a
        scheduler that was down), space by space from the scheduler's cursor. A no-op
        until the read model (0003) exists."""
        scheduled: list[tuple[str, datetime]] = []
        cancelled: list[str] = []
        tasks = 0
        async with self.pool.acquire() as conn:
            if not await store.read_model_exists(conn):
                return Applied([], [], 0)
        for _ in range(rounds):
            async with self.pool.acquire() as conn:
                behind = await store.spaces_behind(conn, page)
            for space_id, done in behind:
                async with self.pool.acquire() as conn:
                    checkpoint, states = await store.space_states(conn, space_id, done)
                for start in range(0, len(states), page):  # short transactions
                    applied = await self.apply(states[start : start + page])
                    scheduled += applied.scheduled
                    cancelled += applied.cancelled
                    tasks += applied.tasks
                async with self.pool.acquire() as conn:
                    await store.advance_cursor(conn, space_id, checkpoint)
            if len(behind) < page:
                break
        return Applied(scheduled, cancelled, tasks)

    # ------------------------------------------------------------------ firing

    async def fire_due(self) -> list[Firing]:
        """Claim one batch of due reminders and complete each; what this instance did."""
        now = self.clock.now()
        async with self.pool.acquire() as conn:
            claimed = await store.claim_due(
                conn,
                now=now,
                limit=self.options.claim_batch,
                instance=self.instance,
                lease=self.options.lease_seconds,
                max_lateness=self.max_lateness,
            )
        results = await asyncio.gather(*(self._complete(row) for row in claimed))
        return [f for f in results if f is not None]

    async def drain_due(self, rounds: int = 1000) -> list[Firing]:
        """Fire everything due now, batch after batch."""
        done: list[Firing] = []
        for _ in range(rounds):
            batch = await self.fire_due()
            done += batch
            if not batch:
                break
        return done

    async def _complete(self, claimed: asyncpg.Record) -> Firing | None:
        rid = str(claimed["reminder_id"])
        async with self._slots:
            try:
                firing = await self._locked_complete(rid)
            except Exception as exc:  # left claimed: retried when the lease expires
                log.warning("firing reminder %s failed, will retry: %r", rid, exc)
                REMINDERS.labels(outcome="error").inc()
                return None
        if firing is not None:
            self._account(firing)
            await self._publish(firing)
        return firing

    async def _locked_complete(self, rid: str) -> Firing | None:
        async with self.pool.acquire() as conn, conn.transaction():
            # Losing this transaction in a crash costs nothing: the event is committed
            # durably by the store (whose COMMIT also flushes the WAL written before
            # it), and a lost status update is redone by the retry, a duplicate append.
            # So its COMMIT need not wait for the disk.
            await conn.execute("SET LOCAL synchronous_commit = off")
            row = await store.lock_claimed(conn, rid, self.instance)
            if row is None:
                return None  # fired, cancelled, or taken over by another instance
            try:
                if row["decision"] == "skip":
                    return await self._skip(conn, row)
                return await self._fire(conn, row)
            except ConcordError as exc:
                if exc.retryable:
                    raise
                return await self._dead(conn, row, f"{exc.code}: {exc.message}")

    async def _append(self, row: asyncpg.Record, kind: str, value: dict[str, Any]) -> ServerAppend:
        return await self.events.append_server_event(
            space_id=str(row["space_id"]),
            kind=kind,
            entity_type=row["entity_type"],
            entity_id=row["entity_id"],
            value=value,
            key=f"{kind}:{row['reminder_id']}",
        )

    async def _fire(self, conn: store.Conn, row: asyncpg.Record) -> Firing:
        rid, fire_at, now = str(row["reminder_id"]), row["fire_at"], self.clock.now()
        lateness = max(0, millis(now - fire_at))
        value = {
            "reminder_id": rid,
            "fire_at": format_time(fire_at),
            "fired_at": format_time(now),
            "lateness_ms": lateness,
        }
        appended = await self._append(row, "reminder_fired", value)
        # A crash here leaves the event stored and the row scheduled: the retry is a
        # duplicate append (same op_id) and only completes the row.
        self.faults.point("after_fire_append")
        fired_at = now
        if appended.duplicate:  # report what the stored event says, not this retry
            fired_at = parse_time(appended.event.value["fired_at"])
            lateness = int(appended.event.value["lateness_ms"])
        await conn.execute(
            """
            UPDATE reminders SET status = 'fired', fired_at = $2, lateness_ms = $3,
                event_seq = $4, attempts = $5, next_attempt_at = $6, last_error = NULL,
                claimed_by = NULL, claim_until = NULL, updated_at = $7
            WHERE reminder_id = $1
            """,
            rid,
            fired_at,
            lateness,
            appended.event.seq,
            # attempts: with a webhook, its POSTs (none yet); else the in-app notification.
            0 if self.webhook_enabled else 1,
            fired_at if self.webhook_enabled else None,
            now,
        )
        return self._firing(row, "fired", fired_at, lateness, appended)

    async def _skip(self, conn: store.Conn, row: asyncpg.Record) -> Firing:
        rid, fire_at, now = str(row["reminder_id"]), row["fire_at"], self.clock.now()
        lateness = max(0, millis(now - fire_at))
        value = {
            "reminder_id": rid,
            "fire_at": format_time(fire_at),
            "lateness_ms": lateness,
            "reason": "too_late",
        }
        appended = await self._append(row, "reminder_skipped", value)
        if appended.duplicate:
            lateness = int(appended.event.value["lateness_ms"])
        await conn.execute(
            """
            UPDATE reminders SET status = 'skipped', lateness_ms = $2, event_seq = $3,
                claimed_by = NULL, claim_until = NULL, updated_at = $4
            WHERE reminder_id = $1
            """,
            rid,
            lateness,
            appended.event.seq,
            now,
        )
        return self._firing(row, "skipped", None, lateness, appended)

    async def _dead(self, conn: store.Conn, row: asyncpg.Record, error: str) -> Firing:
        log.error("reminder %s cannot fire: %s", row["reminder_id"], error)
        await conn.execute(
            "UPDATE reminders SET status = 'dead', last_error = $2, claimed_by = NULL, "
            "claim_until = NULL, updated_at = $3 WHERE reminder_id = $1",
            str(row["reminder_id"]),
            error,
            self.clock.now(),
        )
        return self._firing(row, "dead", None, 0, None)

    @staticmethod
    def _firing(
        row: asyncpg.Record,
        outcome: str,
        fired_at: datetime | None,
        lateness: int,
        appended: ServerAppend | None,
    ) -> Firing:
        return Firing(
            reminder_id=str(row["reminder_id"]),
            space_id=str(row["space_id"]),
            entity_type=row["entity_type"],
            entity_id=row["entity_id"],
            outcome=outcome,
            fire_at=row["fire_at"],
            fired_at=fired_at,
            lateness_ms=lateness,
            duplicate=appended is not None and appended.duplicate,
            seq=0 if appended is None else appended.event.seq,
        )

    def _account(self, firing: Firing) -> None:
        REMINDERS.labels(outcome=firing.outcome).inc()
        if firing.outcome == "fired":
            REMINDER_LATENESS.observe(firing.lateness_ms / 1000)
        if firing.duplicate:
            REMINDERS.labels(outcome="duplicate").inc()

    async def _publish(self, firing: Firing) -> None:
        """The space hint of the firing's event, then the in-app channel: a
        NotificationEnvelope for the space's gateways."""
        if self.bus is None:
            return
        if firing.seq:
            # Also after a duplicate append: the firing that stored the event may have
            # crashed before hinting it, and a repeated hint costs nothing.
            await publish_space_hint(self.bus, self.prefix, firing.space_id, firing.seq, firing.seq)
        if firing.outcome != "fired":
            return
        envelope = NotificationEnvelope(
            space_id=firing.space_id, notification=notification_of(firing)
        )
        subject = Names(self.prefix).notifications(firing.space_id)
        await self.bus.publish(subject, ENCODER.encode(envelope))

    # ------------------------------------------------------------------ views

    async def upcoming(self, horizon: float) -> list[tuple[str, datetime]]:
        """Scheduled reminders due within ``horizon`` seconds (or overdue)."""
        until = self.clock.now() + timedelta(seconds=horizon)
        async with self.pool.acquire() as conn:
            return await store.upcoming(conn, until)

    async def backlog_age(self) -> float:
        """Age of the oldest due but unfired reminder, also set as the backlog gauge."""
        async with self.pool.acquire() as conn:
            age = await store.backlog_age(conn, self.clock.now())
        REMINDER_BACKLOG_AGE.set(age)
        return age
