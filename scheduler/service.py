"""One scheduler instance: its pools, NATS, APScheduler, the firing and delivery loops,
and the periodic jobs. ``concord scheduler`` runs one; ``concord dev`` runs that command
as a supervised process beside the gateway and the projector.

Timing has two layers. Precise: an APScheduler date job per reminder due within the
sweep window (``window_sweeps`` sweep intervals), added when a ReminderChange schedules
it or the sweep finds it; at its time it wakes the firing loop, which claims and fires
everything due. Safety net: the ``sweep`` job every ``CONCORD_SCHEDULER_SWEEP_INTERVAL``
seconds reconciles with the read model, fires anything due or stuck (an expired lease),
and refreshes the date jobs of the window. Correctness never depends on a date job:
they only make firing punctual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import asyncpg
import msgspec
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core.events import ANY, Names, ReminderChange
from core.natsbus import NatsBus
from core.settings import Settings
from eventstore.postgres import PostgresEventStore
from scheduler.clock import Clock, SystemClock
from scheduler.delivery import Deliveries
from scheduler.engine import ReminderEngine
from scheduler.faults import Faults
from scheduler.jobs import Job, JobRunner
from scheduler.options import SchedulerOptions, options_from_env
from scheduler.retention import run_retention
from scheduler.store import Applied
from scheduler.webhook import WebhookSender, signing_secret

log = logging.getLogger("concord.scheduler")

_CHANGE = msgspec.json.Decoder(ReminderChange)
#: ReminderChanges waiting to be applied; beyond this they are dropped (and recovered
#: by the next reconciliation with the read model).
QUEUE_LIMIT = 100_000


def default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class SchedulerService:
    """Start with ``async with SchedulerService(settings):`` (or ``start``/``stop``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        options: SchedulerOptions | None = None,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        instance: str | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        if not settings.database_url or not settings.nats_url:
            raise ValueError("the scheduler needs CONCORD_DATABASE_URL and CONCORD_NATS_URL")
        self.settings = settings
        self.options = options or options_from_env(env)
        self.faults = Faults.from_env(env)
        self.clock = clock or SystemClock()
        self.instance = instance or default_instance()
        self.window = settings.scheduler_sweep_interval * self.options.window_sweeps
        self._tasks: list[asyncio.Task[None]] = []
        self._job_tasks: set[asyncio.Task[Any]] = set()
        self._fire_kick = asyncio.Event()
        self._delivery_kick = asyncio.Event()
        self._changes: asyncio.Queue[ReminderChange] = asyncio.Queue(QUEUE_LIMIT)
        self._resources = contextlib.AsyncExitStack()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        await self._open_resources()
        self.runner = JobRunner(self.pool, instance=self.instance, clock=self.clock)
        for job in self._default_jobs():
            self.runner.register(job)
        self.aps = AsyncIOScheduler(timezone=UTC)
        self.aps.start()
        self._subscription = await self.bus.subscribe(
            Names(self.settings.nats_prefix).reminders_subject(ANY), self._on_change
        )
        self._spawn(self._apply_loop(), "scheduler-apply")
        self._spawn(self._fire_loop(), "scheduler-fire")
        if self.deliveries is not None:
            self._spawn(self._delivery_loop(), "scheduler-deliver")
        # Recovery: reconcile and fire everything that came due while nothing ran.
        self._spawn(self._run_job("sweep"), "scheduler-recovery")
        for job in self.runner.jobs.values():
            self._add_periodic(job)
        log.info("scheduler %s started", self.instance)

    async def _open_resources(self) -> None:
        settings, stack = self.settings, self._resources
        assert settings.database_url
        assert settings.nats_url
        size = self.options.fire_concurrency
        self.pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=size + 4)
        stack.push_async_callback(_close_pool, self.pool)
        # The appends run on their own pool: a firing holds a connection (its row lock)
        # while it appends, so sharing one pool could starve the appends.
        events_pool = await asyncpg.create_pool(
            settings.database_url, min_size=1, max_size=size + 1
        )
        stack.push_async_callback(_close_pool, events_pool)
        secret_key = settings.require_secret_key()
        self.events = PostgresEventStore(events_pool, secret_key=secret_key)
        stack.push_async_callback(self.events.close)
        self.bus = NatsBus(settings.nats_url, prefix=settings.nats_prefix, name="concord-scheduler")
        await self.bus.start()
        stack.push_async_callback(self.bus.close)
        sender = None
        if settings.webhook_url:
            sender = WebhookSender(
                settings.webhook_url,
                signing_secret(settings.webhook_secret, settings.secret_key),
                timeout=self.options.webhook_timeout_seconds,
            )
            stack.push_async_callback(sender.close)
        self.engine = ReminderEngine(
            pool=self.pool,
            events=self.events,
            clock=self.clock,
            instance=self.instance,
            max_lateness=settings.reminder_max_lateness,
            options=self.options,
            bus=self.bus,
            prefix=settings.nats_prefix,
            webhook_enabled=sender is not None,
            faults=self.faults,
        )
        self.deliveries = None if sender is None else Deliveries(
            pool=self.pool,
            sender=sender,
            clock=self.clock,
            instance=self.instance,
            options=self.options,
        )  # fmt: skip

    async def stop(self) -> None:
        if getattr(self, "aps", None) is not None and self.aps.running:
            self.aps.shutdown(wait=False)
        if getattr(self, "_subscription", None) is not None:
            await self.bus.unsubscribe(self._subscription)
        pending = [*self._tasks, *self._job_tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._resources.aclose()
        log.info("scheduler %s stopped", self.instance)

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    # ------------------------------------------------------------------ jobs

    def _default_jobs(self) -> list[Job]:
        o, sweep_every = self.options, self.settings.scheduler_sweep_interval
        return [
            Job("sweep", sweep_every, o.sweep_timeout_seconds, self.sweep),
            Job("backlog", o.backlog_interval_seconds, o.backlog_timeout_seconds, self.backlog),
            Job(
                "retention",
                o.retention_interval_seconds,
                o.retention_timeout_seconds,
                self.retention,
            ),
        ]

    def add_job(self, job: Job) -> None:
        """Register another periodic job and start running it (its runs go to job_runs)."""
        self.runner.register(job)
        self._add_periodic(job)

    def _add_periodic(self, job: Job) -> None:
        # max_instances > 1: an overlapping run reaches the runner, which records it as
        # overlap-skipped (APScheduler alone would only log a warning).
        self.aps.add_job(
            self._run_job,
            IntervalTrigger(seconds=job.interval, timezone=UTC),
            args=[job.name],
            id=f"job:{job.name}",
            max_instances=8,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
        )

    async def _run_job(self, name: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._job_tasks.add(task)
        try:
            await self.runner.run(name)
        except asyncio.CancelledError:
            pass  # stop() cancels runs in flight; the runner has recorded them
        finally:
            self._job_tasks.discard(task)

    async def sweep(self) -> int:
        """Reconcile, fire what is due or stuck, refresh the window's date jobs."""
        applied = await self.engine.reconcile()
        self._follow(applied)
        firings = await self.engine.drain_due()
        self._forget([f.reminder_id for f in firings])
        for reminder_id, at in await self.engine.upcoming(self.window):
            self._schedule(reminder_id, at)
        self._delivery_kick.set()
        return applied.tasks + len(firings)

    async def backlog(self) -> int:
        await self.engine.backlog_age()  # sets concord_reminder_backlog_age_seconds
        return 0

    async def retention(self) -> int:
        return await run_retention(self.pool, self.clock.now(), self.options)

    # ------------------------------------------------------------------ date jobs

    def _follow(self, applied: Applied) -> None:
        """Date jobs for what was just scheduled; none for what was cancelled."""
        self._forget(applied.cancelled)
        horizon = self.clock.now().timestamp() + self.window
        for reminder_id, at in applied.scheduled:
            if at.timestamp() <= horizon:
                self._schedule(reminder_id, at)

    def _schedule(self, reminder_id: str, at: datetime) -> None:
        if at <= self.clock.now():
            self._fire_kick.set()
            return
        self.aps.add_job(
            self._due,
            DateTrigger(run_date=at, timezone=UTC),
            args=[at],
            id=reminder_id,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    def _forget(self, reminder_ids: list[str]) -> None:
        for reminder_id in reminder_ids:
            with contextlib.suppress(JobLookupError):
                self.aps.remove_job(reminder_id)

    async def _due(self, at: datetime) -> None:
        # The timer may wake a hair early; firing claims only what is due by the clock.
        early = (at - self.clock.now()).total_seconds()
        if early > 0:
            await asyncio.sleep(early)
        self._fire_kick.set()

    # ------------------------------------------------------------------ loops

    async def _on_change(self, subject: str, payload: bytes) -> None:
        try:
            change = _CHANGE.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("bad ReminderChange on %s: %s", subject, exc)
            return
        try:
            self._changes.put_nowait(change)
        except asyncio.QueueFull:
            log.warning("reminder change queue full; %s left to reconciliation", subject)

    async def _apply_loop(self) -> None:
        while True:
            batch = [await self._changes.get()]
            while not self._changes.empty() and len(batch) < 1000:
                batch.append(self._changes.get_nowait())
            try:
                self._follow(await self.engine.apply_changes(batch))
            except Exception:  # the sweep's reconciliation applies them later
                log.exception("applying %d reminder changes failed", len(batch))
                await asyncio.sleep(1)

    async def _fire_loop(self) -> None:
        while True:
            await self._fire_kick.wait()
            self._fire_kick.clear()
            try:
                firings = await self.engine.drain_due()
            except Exception:  # claims stay leased; the sweep retries them
                log.exception("firing due reminders failed")
                await asyncio.sleep(1)
                continue
            self._forget([f.reminder_id for f in firings])
            if firings:
                log.info("completed %d due reminders", len(firings))
                self._delivery_kick.set()

    async def _delivery_loop(self) -> None:
        assert self.deliveries is not None
        while True:
            wake: datetime | None = None
            try:
                await self.deliveries.drain()
                wake = await self.deliveries.next_due()
            except Exception:
                log.exception("webhook deliveries failed")
            wait = float(self.settings.scheduler_sweep_interval)
            if wake is not None:
                wait = min(wait, max(0.05, (wake - self.clock.now()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._delivery_kick.wait(), wait)
            self._delivery_kick.clear()


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), 10)
    except TimeoutError:
        pool.terminate()
