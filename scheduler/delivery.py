"""Webhook deliveries of fired reminders: claimed like firings, retried with persisted
backoff, guarded by a circuit breaker per endpoint.

A fired reminder with a webhook configured has ``next_attempt_at`` set. Each attempt
claims the row (a lease longer than the request timeout), POSTs, and records the
outcome: ``fired`` (delivered), ``retrying`` with the next time (backoff persisted in
the row, so retries survive restarts), or ``dead`` once ``webhook_max_attempts`` are
spent. While an endpoint's circuit is open nothing is claimed for it, and rows claimed
just before it opened are handed back untouched (no attempt is counted).

Deliveries never run on the firing path: a hanging endpoint holds at most
``webhook_concurrency`` delivery slots for ``webhook_timeout_seconds`` each, and
firings and in-app notifications go on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timedelta

import asyncpg

from core.metrics import REMINDERS
from core.wire import Notification
from scheduler import store
from scheduler.breaker import Breakers, CircuitBreaker
from scheduler.clock import Clock, format_time
from scheduler.options import SchedulerOptions
from scheduler.webhook import (
    DeliveryFailed,
    WebhookBody,
    WebhookSender,
    backoff_seconds,
    encode_body,
)

log = logging.getLogger("concord.scheduler")


def body_of(row: asyncpg.Record) -> WebhookBody:
    """The webhook body, built from the row alone: identical on every attempt."""
    rid = str(row["reminder_id"])
    return WebhookBody(
        notification=Notification(
            id=rid,
            space_id=str(row["space_id"]),
            entity_type=row["entity_type"],
            entity_id=row["entity_id"],
            kind="reminder",
            fire_at=format_time(row["fire_at"]),
            fired_at=format_time(row["fired_at"]),
        ),
        lateness_ms=row["lateness_ms"] or 0,
        event_seq=row["event_seq"],
    )


class Deliveries:
    """Webhook attempts for one configured endpoint."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        sender: WebhookSender,
        clock: Clock,
        instance: str,
        options: SchedulerOptions,
        breakers: Breakers | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.sender = sender
        self.clock = clock
        self.instance = instance
        self.options = options
        self.breakers = breakers or Breakers(
            options.breaker_threshold, options.breaker_cooldown_seconds
        )
        self.rng = rng or random.Random()

    @property
    def breaker(self) -> CircuitBreaker:
        return self.breakers.for_url(self.sender.url)

    async def deliver_due(self) -> int:
        """Claim the due attempts the breaker allows and make them; how many were claimed."""
        now = self.clock.now()
        budget = self.breaker.budget(now)
        limit = self.options.webhook_concurrency if budget is None else budget
        async with self.pool.acquire() as conn:
            rows = await store.claim_deliveries(
                conn,
                now=now,
                limit=min(limit, self.options.webhook_concurrency),
                instance=self.instance,
                lease=self.options.lease_seconds + self.options.webhook_timeout_seconds,
            )
        await asyncio.gather(*(self._attempt(row) for row in rows))
        return len(rows)

    async def drain(self, rounds: int = 1000) -> int:
        """Attempt everything due now (round after round while there is more)."""
        total = 0
        for _ in range(rounds):
            claimed = await self.deliver_due()
            total += claimed
            if claimed == 0:
                break
        return total

    async def next_due(self) -> datetime | None:
        """When the next attempt may start: the earliest pending one, but not before an
        open circuit lets a probe through."""
        async with self.pool.acquire() as conn:
            # A row leased by another instance is not ours before its lease ends.
            earliest: datetime | None = await conn.fetchval(
                "SELECT min(GREATEST(next_attempt_at, COALESCE(claim_until, next_attempt_at))) "
                "FROM reminders "
                "WHERE next_attempt_at IS NOT NULL AND status IN ('fired', 'retrying')"
            )
        if earliest is None:
            return None
        return max(earliest, self.breaker.retry_at(self.clock.now()))

    async def _attempt(self, row: asyncpg.Record) -> None:
        rid = str(row["reminder_id"])
        breaker = self.breaker
        now = self.clock.now()
        if not breaker.acquire(now):
            async with self.pool.acquire() as conn:
                await store.release(conn, rid, self.instance, breaker.retry_at(now))
            return
        attempt = row["attempts"] + 1
        error: str | None = None
        try:
            await self.sender.send(rid, attempt, encode_body(body_of(row)), now)
        except DeliveryFailed as exc:
            error = str(exc)
        except Exception as exc:  # a bug must not leave the row claimed and the probe held
            error = f"{type(exc).__name__}: {exc}"[:500]
        after = self.clock.now()
        breaker.record(error is None, after)
        await self._record(rid, attempt, error, after)

    async def _record(self, rid: str, attempt: int, error: str | None, now: datetime) -> None:
        next_at: datetime | None = None
        if error is None:
            status = "fired"
            REMINDERS.labels(outcome="delivered").inc()
        elif attempt >= self.options.webhook_max_attempts:
            status = "dead"
            REMINDERS.labels(outcome="dead").inc()
            log.error("reminder %s: webhook dead after %d attempts: %s", rid, attempt, error)
        else:
            status = "retrying"
            delay = backoff_seconds(attempt, self.options, self.rng)
            next_at = now + timedelta(seconds=delay)
            REMINDERS.labels(outcome="retrying").inc()
            log.info("reminder %s: webhook attempt %d failed (%s)", rid, attempt, error)
        async with self.pool.acquire() as conn:
            recorded = await store.finish_delivery(
                conn,
                rid,
                self.instance,
                status=status,
                attempts=attempt,
                next_attempt_at=next_at,
                last_error=error,
                now=now,
            )
        if not recorded:  # the lease ran out and another instance claimed the row
            log.warning(
                "reminder %s: attempt %d (%s) not recorded: the claim passed to another "
                "instance, which delivers it again",
                rid,
                attempt,
                "delivered" if error is None else error,
            )
