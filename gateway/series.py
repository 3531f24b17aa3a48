"""The last 15 minutes of the failure-mode figures, for the charts of ``/diagnostics``.

Every ``STEP_SECONDS`` the gateway reads its own Prometheus registry (core/metrics.py)
into a ring buffer of ``WINDOW_SECONDS``; ``GET /v1/diagnostics/series`` answers it as
per-second rates (counters) and values (gauges). Nothing is stored and no outside
service is needed. The picture is the registry's: this process's counters, or, when
processes share one (``PROMETHEUS_MULTIPROC_DIR``: ``concord dev``, gateway workers),
all of theirs summed, read once per sample (``core.metrics.Readings``). Gateways with
registries of their own each show their own share (Prometheus sums them:
docs/grafana-dashboard.json). The lag gauges are the exception: they are read
from PostgreSQL every ``LAG_EVERY`` samples, so they cover the whole deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import asyncpg
import msgspec

from core.metrics import (
    AUTH_FAILURES,
    AUTH_RENEWALS,
    CONFLICTS,
    IDEMPOTENCY_HITS,
    JOB_RUNS,
    OPS,
    OUTBOX_LAG,
    PROJECTOR_LAG,
    PUSH_SECONDS,
    REMINDER_BACKLOG_AGE,
    REMINDER_LATENESS,
    REMINDERS,
    WS_CONNECTIONS,
    Readings,
)
from gateway.tokens import iso_utc
from projector.readmodel import lag_totals

log = logging.getLogger("concord.gateway.series")

STEP_SECONDS = 2.0
WINDOW_SECONDS = 900.0
#: Lag totals scan every space's head: read them from PostgreSQL every 5th sample only.
LAG_EVERY = 5
LAG_TIMEOUT = 2.0

#: Cumulative counters, answered as per-second rates.
RATES = (
    "pushes",
    "ops_applied",
    "ops_duplicate",
    "ops_rejected",
    "idempotency_hits",
    "conflicts",
    "auth_expired",
    "auth_failures_other",
    "auth_renewals",
    "reminders_fired",
    "reminders_skipped",
    "job_runs",
    "job_runs_failed",
)
#: Gauges, answered as sampled.
GAUGES = (
    "ws_connections",
    "projector_lag_events",
    "outbox_lag_events",
    "reminder_backlog_age_seconds",
)

Sample = Mapping[str, float]


class Series(msgspec.Struct, frozen=True, kw_only=True):
    """Rates and gauges over the window; ``times[i]`` ends interval ``i`` (epoch s)."""

    step_seconds: float
    window_seconds: float
    #: The process that sampled these figures (several gateways: one answer each).
    pid: int
    process_started_at: str
    times: list[float]
    rates: dict[str, list[float]]
    gauges: dict[str, list[float]]
    #: Mean lateness of the reminders fired in each interval; null when none fired.
    reminder_lateness_seconds: list[float | None]


def read_registry() -> dict[str, float]:
    """One sample of the counters and gauges (lag from PostgreSQL is added by the
    sampler), from one reading of the registry."""
    r = Readings()
    ops = r.by_labels(OPS, "status")
    failures = r.by_labels(AUTH_FAILURES, "reason")
    reminders = r.by_labels(REMINDERS, "outcome")
    jobs = r.by_labels(JOB_RUNS, "outcome")
    return {
        "pushes": r.total(PUSH_SECONDS, "_count"),
        "ops_applied": ops.get("applied", 0),
        "ops_duplicate": ops.get("duplicate", 0),
        "ops_rejected": ops.get("rejected", 0),
        "idempotency_hits": r.total(IDEMPOTENCY_HITS, "_total"),
        "conflicts": r.total(CONFLICTS, "_total"),
        "auth_expired": failures.get("expired", 0),
        "auth_failures_other": sum(failures.values()) - failures.get("expired", 0),
        "auth_renewals": r.total(AUTH_RENEWALS, "_total"),
        "reminders_fired": reminders.get("fired", 0),
        "reminders_skipped": reminders.get("skipped", 0),
        "job_runs": sum(jobs.values()),
        "job_runs_failed": jobs.get("failed", 0) + jobs.get("timeout", 0),
        "lateness_sum": r.total(REMINDER_LATENESS, "_sum"),
        "lateness_count": r.total(REMINDER_LATENESS, "_count"),
        "ws_connections": r.gauge_max(WS_CONNECTIONS),
        "projector_lag_events": r.gauge_max(PROJECTOR_LAG),
        "outbox_lag_events": r.gauge_max(OUTBOX_LAG),
        "reminder_backlog_age_seconds": r.gauge_max(REMINDER_BACKLOG_AGE),
    }


class SeriesSampler:
    """A ring buffer of samples, one every ``step`` seconds, ``window`` seconds long."""

    def __init__(
        self,
        *,
        read: Callable[[], dict[str, float]] = read_registry,
        lag: Callable[[], Awaitable[tuple[int, int]]] | None = None,
        step: float = STEP_SECONDS,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.step = step
        self.window = window
        self._read = read
        self._lag = lag
        self._clock = clock
        # One more sample than intervals: rates need a sample before the first interval.
        self._samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=int(window / step) + 1)
        self._db_lag: tuple[int, int] | None = None
        self._ticks = 0
        self.started_at = clock()

    async def tick(self) -> None:
        """Take one sample (and, every ``LAG_EVERY`` ticks, the lag from PostgreSQL)."""
        if self._lag is not None and self._ticks % LAG_EVERY == 0:
            try:
                async with asyncio.timeout(LAG_TIMEOUT):
                    self._db_lag = await self._lag()
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.info("lag totals unavailable for the series: %s", type(exc).__name__)
        self._ticks += 1
        self.record(self._clock(), self._read())

    def record(self, at: float, sample: dict[str, float]) -> None:
        if self._db_lag is not None:
            projector, outbox = self._db_lag
            sample["projector_lag_events"] = max(sample["projector_lag_events"], projector)
            sample["outbox_lag_events"] = max(sample["outbox_lag_events"], outbox)
        self._samples.append((at, sample))

    def series(self) -> Series:
        """Per-second rates between consecutive samples, gauges as sampled."""
        pairs = list(itertools.pairwise(self._samples))
        rates: dict[str, list[float]] = {name: [] for name in RATES}
        lateness: list[float | None] = []
        for (t0, before), (t1, after) in pairs:
            span = max(t1 - t0, 1e-6)
            for name in RATES:
                # A counter never goes down within one process; clamp all the same.
                rates[name].append(max(0.0, after[name] - before[name]) / span)
            fired = after["lateness_count"] - before["lateness_count"]
            late = after["lateness_sum"] - before["lateness_sum"]
            lateness.append(round(late / fired, 3) if fired > 0 else None)
        gauges = {name: [after[name] for _, (_, after) in pairs] for name in GAUGES}
        return Series(
            step_seconds=self.step,
            window_seconds=self.window,
            pid=os.getpid(),
            process_started_at=iso_utc(self.started_at),
            times=[round(t1, 3) for _, (t1, _) in pairs],
            rates={name: [round(v, 4) for v in values] for name, values in rates.items()},
            gauges=gauges,
            reminder_lateness_seconds=lateness,
        )

    async def run(self) -> None:
        """Sample until cancelled; a failing sample is logged and the loop goes on."""
        while True:
            try:
                await self.tick()
            except Exception:  # the charts must never take the gateway down
                log.exception("series sample failed")
            await asyncio.sleep(self.step)


@contextlib.asynccontextmanager
async def sampling(pool: asyncpg.Pool) -> AsyncIterator[SeriesSampler]:
    """A sampler running for as long as the context (the gateway's lifespan)."""
    sampler = SeriesSampler(lag=lambda: lag_totals(pool))
    task = asyncio.create_task(sampler.run(), name="diagnostics-series")
    try:
        yield sampler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
