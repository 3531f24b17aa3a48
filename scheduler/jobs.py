"""One registry for every periodic job, and a runner that records each run in job_runs.

A run is recorded as ``running`` when it starts and gets its outcome when it ends:

* ``ok`` (with ``items``, what the job counted: reminders fired, rows deleted, ...);
* ``failed`` when it raised (the error is stored; the next run happens as usual);
* ``timeout`` when it ran past the job's timeout and was cut (cancelled);
* ``overlap-skipped`` when it was due while the previous run of the same job in this
  process had not finished: recorded, not run.

A row left ``running`` names a run whose process died. Recording never stops a job: if
PostgreSQL cannot take the row, the run still happens and the failure is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core.metrics import JOB_RUNS
from scheduler.clock import Clock

log = logging.getLogger("concord.scheduler")

OUTCOMES = ("ok", "failed", "timeout", "overlap-skipped")


@dataclass(frozen=True)
class Job:
    """A periodic job: ``run`` returns how many items it handled."""

    name: str
    interval: float
    timeout: float
    run: Callable[[], Awaitable[int]]


class JobRunner:
    """Runs registered jobs by name, one run of a job at a time per process."""

    def __init__(self, pool: asyncpg.Pool, *, instance: str, clock: Clock) -> None:
        self.pool = pool
        self.instance = instance
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self._running: set[str] = set()

    def register(self, job: Job) -> None:
        if job.name in self.jobs:
            raise ValueError(f"job {job.name!r} is registered twice")
        self.jobs[job.name] = job

    async def run(self, name: str) -> str:
        """Run job ``name`` once (or record why not); its outcome."""
        job = self.jobs[name]
        started = self.clock.now()
        if name in self._running:
            await self._record(job.name, started, "overlap-skipped", None, 0)
            return "overlap-skipped"
        self._running.add(name)
        try:
            run_id = await self._start_row(name, started)
            try:
                outcome, error, items = await self._guarded(job)
            except asyncio.CancelledError:
                # Shutdown: record the interrupted run, then let the cancellation go on.
                await self._finish_row(run_id, name, started, "failed", "cancelled", 0)
                raise
            await self._finish_row(run_id, name, started, outcome, error, items)
            return outcome
        finally:
            self._running.discard(name)

    async def _guarded(self, job: Job) -> tuple[str, str | None, int]:
        try:
            async with asyncio.timeout(job.timeout) as deadline:
                items = await job.run()
            return "ok", None, int(items)
        except TimeoutError:
            if deadline.expired():
                log.warning("job %s cut after %gs", job.name, job.timeout)
                return "timeout", f"cut after {job.timeout:g}s", 0
            return "failed", "TimeoutError", 0
        except Exception as exc:  # a failing job is recorded; the next run still happens
            log.exception("job %s failed", job.name)
            return "failed", f"{type(exc).__name__}: {exc}"[:2000], 0

    async def _start_row(self, name: str, started: datetime) -> int | None:
        try:
            async with self.pool.acquire() as conn:
                run_id: int = await conn.fetchval(
                    "INSERT INTO job_runs (job, instance, started_at, outcome) "
                    "VALUES ($1, $2, $3, 'running') RETURNING run_id",
                    name,
                    self.instance,
                    started,
                )
                return run_id
        except Exception as exc:  # recording must never stop a job
            log.warning("cannot record the start of job %s: %s", name, exc)
            return None

    async def _finish_row(
        self,
        run_id: int | None,
        name: str,
        started: datetime,
        outcome: str,
        error: str | None,
        items: int,
    ) -> None:
        JOB_RUNS.labels(job=name, outcome=outcome).inc()
        if run_id is None:
            await self._write(name, started, outcome, error, items)
            return
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "UPDATE job_runs SET finished_at = $2, outcome = $3, error = $4, items = $5 "
                    "WHERE run_id = $1",
                    run_id,
                    self.clock.now(),
                    outcome,
                    error,
                    items,
                )
        except Exception as exc:  # recording must never stop a job
            log.warning("cannot record the end of job %s: %s", name, exc)

    async def _record(
        self, name: str, started: datetime, outcome: str, error: str | None, items: int
    ) -> None:
        JOB_RUNS.labels(job=name, outcome=outcome).inc()
        await self._write(name, started, outcome, error, items)

    async def _write(
        self, name: str, started: datetime, outcome: str, error: str | None, items: int
    ) -> None:
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO job_runs (job, instance, started_at, finished_at, outcome, "
                    "error, items) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    name,
                    self.instance,
                    started,
                    self.clock.now(),
                    outcome,
                    error,
                    items,
                )
        except Exception as exc:  # recording must never stop a job
            log.warning("cannot record a run of job %s: %s", name, exc)
