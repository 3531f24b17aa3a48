"""The projector service: feeds the read model from the stream, trusting it for speed only.

Two loops run side by side:

* the **stream loop** pulls events from this instance slot's durable JetStream consumer
  and applies those of the spaces it owns; events that continue the checkpoint are used
  as delivered, a gap makes the batch read the range from PostgreSQL instead;
* the **tick** (at start, then every ``tick_interval``: ``CONCORD_PROJECTOR_TICK_SECONDS``)
  refreshes the instance membership, finds every owned space whose checkpoint is behind
  its head, and catches it up from PostgreSQL. So a dropped message, a NATS outage or a
  crash of another instance costs at most one tick of latency, never an event.

After each committed batch the projector publishes, for tasks whose reminder changed,
``ReminderChange`` for the scheduler (core NATS, best effort: a hint).

An event that cannot be applied never stalls its space: ``apply_space`` quarantines it
and the space goes on (docs/projector.md); the tick keeps the quarantine gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import msgspec

from core.breaks import broken
from core.events import ENCODER
from core.metrics import OUTBOX_LAG, PROJECTOR_LAG, PROJECTOR_QUARANTINE
from core.natsbus import NatsBus
from core.wire import Event
from projector.apply import Applied, apply_space
from projector.batch import apply_spaces
from projector.membership import Membership
from projector.readmodel import lag_totals, quarantine_count
from projector.stream import (
    JetStream,
    Names,
    consumer_config,
    decode_log_message,
    ensure_stream,
    honour_cancellation,
)

log = logging.getLogger("concord.projector")
T = TypeVar("T")

_LAGGING = """
SELECT s.space_id::text, s.head FROM spaces AS s
LEFT JOIN projector_checkpoints AS c USING (space_id)
WHERE s.head > coalesce(c.seq, 0)
"""
_IDLE_FETCHES = 30
#: The lag and quarantine gauges sum over every space (a join of ``spaces`` with two
#: cursor tables: 180 ms of PostgreSQL's CPU at 100,000 spaces, three times the tick's
#: own query), so the tick refreshes them on its first run and every 10th after it.
GAUGE_EVERY = 10


@dataclass(frozen=True)
class ProjectorOptions:
    tick_interval: float = 1.0
    #: Messages per fetch; each holds up to ``projector.relay.MESSAGE_EVENTS`` events.
    fetch_batch: int = 100
    fetch_timeout: float = 1.0
    max_events: int = 5000
    concurrency: int = 4


class Projector:
    """One projector instance (any number may run; see ``projector.membership``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: NatsBus,
        names: Names,
        dsn: str,
        options: ProjectorOptions | None = None,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.names = names
        self.options = options or ProjectorOptions()
        self.membership = Membership(dsn)
        self.applied_events = 0
        self._ticks = 0
        self._js = JetStream(bus)
        self._space_locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = defaultdict(int)
        self._gate = asyncio.Semaphore(self.options.concurrency)

    async def run(self) -> None:
        """Project until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._tick_loop(), name="projector-tick")
                group.create_task(self._stream_loop(), name="projector-stream")
        finally:
            await self.membership.close()

    # ------------------------------------------------------------------ tick

    async def _tick_loop(self) -> None:
        while True:
            try:
                await self.tick()
                honour_cancellation()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL trouble: the next tick retries
                honour_cancellation()
                log.warning("projector tick failed (will retry): %s", exc)
            await asyncio.sleep(self.options.tick_interval)

    async def tick(self) -> None:
        """Refresh membership, catch every owned lagging space up, and, every
        ``GAUGE_EVERY`` ticks from the first, update the gauges."""
        await self.membership.refresh()
        lagging = await self.pool.fetch(_LAGGING)
        owned = [(r[0], r[1]) for r in lagging if self.membership.owns(r[0])]
        await self._each(owned, lambda item: self.project(item[0], up_to=item[1]))
        if self._ticks % GAUGE_EVERY == 0:  # a failed read is retried by the next tick
            projector_lag, outbox_lag = await lag_totals(self.pool)
            PROJECTOR_LAG.set(projector_lag)
            OUTBOX_LAG.set(outbox_lag)
            PROJECTOR_QUARANTINE.set(await quarantine_count(self.pool))
        self._ticks += 1

    # ------------------------------------------------------------------ stream

    async def _stream_loop(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._consume()
                honour_cancellation()
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS trouble: the tick keeps the model fed meanwhile
                honour_cancellation()
                log.info("projector stream consumer restarting: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _consume(self) -> None:
        """Pull from this slot's durable consumer until the slot changes."""
        js = self._js.get()
        if js is None:
            await asyncio.sleep(self.options.tick_interval)
            return
        await ensure_stream(js, self.names)
        slot = self.membership.slot
        sub = await js.pull_subscribe(
            self.names.log_wildcard,
            durable=self.names.durable(slot),
            stream=self.names.stream,
            config=consumer_config(self.names, slot),
        )
        idle = 0
        try:
            # Leave after a slot change, and after a long idle spell: re-checking the
            # stream and consumer then recovers from a NATS server that lost its store.
            while slot == self.membership.slot and idle < _IDLE_FETCHES:
                try:
                    msgs = await sub.fetch(self.options.fetch_batch, self.options.fetch_timeout)
                except TimeoutError:  # nats.errors.TimeoutError or asyncio's
                    honour_cancellation()
                    idle += 1
                    continue
                honour_cancellation()
                if not msgs:
                    continue
                idle = 0
                await self.on_messages([m.data for m in msgs])
                await msgs[-1].ack()  # AckPolicy.ALL: acks the whole batch
                honour_cancellation()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def on_messages(self, payloads: Sequence[bytes]) -> None:
        """Apply the delivered events of the spaces this instance owns."""
        by_space: dict[str, list[Event]] = defaultdict(list)
        for data in payloads:
            try:
                events = decode_log_message(data)
            except msgspec.DecodeError:
                log.warning("undecodable message on the log stream ignored")
                continue
            for event in events:  # one space per message as published; checked anyway
                if self.membership.owns(event.space_id):
                    by_space[event.space_id].append(event)
        if by_space:
            await self._apply_together(by_space)

    async def _apply_together(self, by_space: dict[str, list[Event]]) -> None:
        """All the spaces of a fetch in one transaction (``projector.batch``); when that
        fails, each space on its own (``project``: isolation and quarantine). A space
        left below its last delivered seq is continued from PostgreSQL."""
        if broken("checkpoint"):  # the chaos lab's broken build: its path is apply_space
            await self._each(by_space.items(), lambda item: self.project(item[0], item[1]))
            return
        try:
            async with self._gate, self.pool.acquire() as conn:
                batched = await apply_spaces(conn, by_space, max_events=self.options.max_events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("a batch of %d spaces failed (%r): one space at a time", len(by_space), exc)
            await self._each(by_space.items(), lambda item: self.project(item[0], item[1]))
            return
        reached = {a.space_id: a.seq for a in batched.applied}
        for done in batched.applied:
            self.applied_events += done.count
            await self._announce(done)
        rest: list[tuple[str, Sequence[Event], int]] = []
        for sid, events in by_space.items():
            top = max(e.seq for e in events)
            if sid in batched.busy:  # held by the tick or another instance: wait for it
                rest.append((sid, events, top))
            elif reached.get(sid, top) < top:
                rest.append((sid, (), top))
        await self._each(rest, lambda item: self.project(item[0], item[1], up_to=item[2]))

    # ------------------------------------------------------------------ apply

    async def project(
        self, space_id: str, delivered: Sequence[Event] = (), up_to: int | None = None
    ) -> int:
        """Apply a space up to ``up_to`` (or the last delivered seq), in batches; each
        committed batch is then announced. Returns the number of events applied."""
        target = up_to if up_to is not None else max((e.seq for e in delivered), default=0)
        total = 0
        # One coroutine per space at a time in this process (the tick and the stream may
        # both want it); across processes the checkpoint row lock does the same.
        self._lock_users[space_id] += 1
        lock = self._space_locks.setdefault(space_id, asyncio.Lock())
        try:
            async with lock:
                while True:
                    applied = await self._apply_once(space_id, delivered, target)
                    if applied is None:
                        break
                    total += applied.count
                    self.applied_events += applied.count
                    await self._announce(applied)
                    if applied.seq >= target:
                        break
                    delivered = ()  # the rest comes from PostgreSQL
        finally:
            self._lock_users[space_id] -= 1
            if self._lock_users[space_id] == 0:
                del self._lock_users[space_id], self._space_locks[space_id]
        return total

    async def _apply_once(
        self, space_id: str, delivered: Sequence[Event], target: int
    ) -> Applied | None:
        async with self.pool.acquire() as conn:
            return await apply_space(
                conn,
                space_id,
                delivered=delivered,
                up_to=target,
                max_events=self.options.max_events,
            )

    async def _announce(self, applied: Applied) -> None:
        for reminder in applied.reminders:
            await self.bus.publish(
                self.names.reminders_subject(applied.space_id), ENCODER.encode(reminder)
            )

    async def _each(self, items: Iterable[T], work: Callable[[T], Awaitable[Any]]) -> None:
        """Run ``work`` on each item, a few at a time; a failure is logged, not raised
        (its space is retried by the next tick)."""

        async def one(item: T) -> None:
            async with self._gate:
                try:
                    await work(item)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("projecting %s failed (next tick retries): %s", item, exc)

        await asyncio.gather(*(one(item) for item in items))
