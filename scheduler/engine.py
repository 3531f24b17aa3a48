"""The reminder core: apply task states, reconcile with the read model, fire due reminders.

Reminders due together fire as one batch (docs/scheduler.md, "Firing in batches"):
one claim, one transaction that locks the claimed rows, ONE append of all their
events (the store's ``append_server_events``, its own transaction), and one statement
recording every outcome. Exactly once (docs/architecture.md
invariant 7), by three facts:

1. A firing claims its rows first (leases, ``FOR UPDATE SKIP LOCKED``), then, inside
   one transaction, locks them and keeps those still ``scheduled`` and still claimed by
   this instance. Only then does it append their events.
2. An event's op_id is an HMAC of ``reminder_fired:<reminder_id>``: whoever appends a
   second time gets ``duplicate`` and the original event back, never a second event.
3. The rows become ``fired`` after the append. A crash in between leaves them
   ``scheduled`` with leases that expire; the retry appends duplicates and completes
   the rows. The skip-or-fire decision is stored by the first claim, so a retry cannot
   turn a crashed firing into a ``reminder_skipped`` (or the other way round).

One reminder cannot hold back the others: an event that cannot be stored for a reason
of its own (its space does not exist) makes that reminder ``dead`` with the reason and
the rest of the batch fires. A transient failure (PostgreSQL unreachable) leaves the
whole batch claimed, retried when the leases expire.

After the rows commit, the batch publishes the space hint of its events (one per space;
gateways deliver ``reminder_fired`` / ``reminder_skipped`` to subscribed devices at
once, as they do for a push) and then the notifications.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

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
from core.ports import Bus, EventStore, ServerAppend, ServerEvent, ServerOutcome
from core.wire import Notification
from scheduler import firing, store
from scheduler.clock import Clock, format_time, parse_time
from scheduler.faults import Faults
from scheduler.firing import Firing
from scheduler.options import SchedulerOptions
from scheduler.store import Applied, TaskState

log = logging.getLogger("concord.scheduler")


def _firing_of(
    row: asyncpg.Record,
    outcome: str,
    fired_at: datetime | None,
    lateness: int,
    appended: ServerAppend | None,
    error: str | None = None,
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
        error=error,
    )


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
        scheduler that was down), space by space from the scheduler's cursor."""
        scheduled: list[tuple[str, datetime]] = []
        cancelled: list[str] = []
        tasks = 0
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
        """Claim one batch of due reminders and complete it; what this instance did."""
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
        if not claimed:
            return []
        ids = [str(row["reminder_id"]) for row in claimed]
        try:
            firings = await self.complete(ids)
        except Exception as exc:  # left claimed: retried when the leases expire
            log.warning("firing %d reminders failed, will retry: %r", len(ids), exc)
            REMINDERS.labels(outcome="error").inc(len(ids))
            return []
        for done in firings:
            self._account(done)
        await self._publish(firings)
        return firings

    async def drain_due(self, rounds: int = 1000) -> list[Firing]:
        """Fire everything due now, batch after batch."""
        done: list[Firing] = []
        for _ in range(rounds):
            batch = await self.fire_due()
            done += batch
            if not batch:
                break
        return done

    async def complete(self, ids: Sequence[str]) -> list[Firing]:
        """Fire (or skip) the claimed reminders ``ids`` that are still ours, in one
        transaction around one append of all their events (see the module's docstring).
        Raises when nothing could be done (the rows stay claimed)."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Losing this transaction in a crash costs nothing: the events are committed
            # durably by the store (whose COMMIT also flushes the WAL written before
            # it), and a lost status update is redone by the retry, a duplicate append.
            # So its COMMIT need not wait for the disk.
            await conn.execute("SET LOCAL synchronous_commit = off")
            rows = await firing.lock_claimed(conn, ids, self.instance)
            if not rows:
                return []  # fired, cancelled, or taken over by another instance
            now = self.clock.now()
            events = [firing.event_of(row, now) for row in rows]
            outcomes = await self.events.append_server_events(events)
            # A crash here leaves the events stored and the rows scheduled: the retry is
            # a duplicate append (same op_ids) and only completes the rows.
            self.faults.point("after_fire_append")
            firings = [
                self._firing(row, event, outcome, now)
                for row, event, outcome in zip(rows, events, outcomes, strict=True)
            ]
            await firing.record(conn, firings, now, webhook_enabled=self.webhook_enabled)
        return firings

    @staticmethod
    def _firing(
        row: asyncpg.Record, event: ServerEvent, outcome: ServerOutcome, now: datetime
    ) -> Firing:
        """What happened to one reminder of the batch, from its append's outcome."""
        rid = str(row["reminder_id"])
        if isinstance(outcome, ConcordError):  # not retryable: it will never fire
            error = f"{outcome.code}: {outcome.message}"
            log.error("reminder %s cannot fire: %s", rid, error)
            return _firing_of(row, "dead", None, 0, None, error)
        lateness = int(event.value["lateness_ms"])
        stored = outcome.event
        if outcome.duplicate:  # report what the stored event says, not this retry
            lateness = int(stored.value["lateness_ms"])
        if event.kind == "reminder_skipped":
            return _firing_of(row, "skipped", None, lateness, outcome)
        fired_at = parse_time(stored.value["fired_at"]) if outcome.duplicate else now
        return _firing_of(row, "fired", fired_at, lateness, outcome)

    def _account(self, done: Firing) -> None:
        REMINDERS.labels(outcome=done.outcome).inc()
        if done.outcome == "fired":
            REMINDER_LATENESS.observe(done.lateness_ms / 1000)
        if done.duplicate:
            REMINDERS.labels(outcome="duplicate").inc()

    async def _publish(self, firings: Sequence[Firing]) -> None:
        """The space hints of the batch's events (one per space), then the in-app
        channel: a NotificationEnvelope per fired reminder for the space's gateways."""
        if self.bus is None:
            return
        seqs: dict[str, list[int]] = {}
        for done in firings:
            if done.seq:
                seqs.setdefault(done.space_id, []).append(done.seq)
        for space_id, those in seqs.items():
            # Also after a duplicate append: the firing that stored the event may have
            # crashed before hinting it, and a repeated hint costs nothing.
            await publish_space_hint(self.bus, self.prefix, space_id, min(those), max(those))
        for done in firings:
            if done.outcome != "fired":
                continue
            envelope = NotificationEnvelope(
                space_id=done.space_id, notification=notification_of(done)
            )
            subject = Names(self.prefix).notifications(done.space_id)
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
