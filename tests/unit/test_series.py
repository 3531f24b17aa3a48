"""The diagnostics series: a ring buffer of registry samples answered as rates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import multiprocess

from gateway.series import GAUGES, RATES, SeriesSampler, read_registry

ROOT = Path(__file__).resolve().parents[2]


def _sample(**values: float) -> dict[str, float]:
    base = dict.fromkeys((*RATES, *GAUGES, "lateness_sum", "lateness_count"), 0.0)
    base.update(values)
    return base


def test_counters_become_per_second_rates_and_gauges_stay_as_sampled() -> None:
    sampler = SeriesSampler(step=2, window=10)
    sampler.record(100.0, _sample(ops_applied=10, ws_connections=1))
    sampler.record(102.0, _sample(ops_applied=30, ops_duplicate=4, ws_connections=3))
    sampler.record(104.0, _sample(ops_applied=30, ops_duplicate=4, ws_connections=2))
    series = sampler.series()
    assert series.times == [102.0, 104.0]
    assert series.rates["ops_applied"] == [10.0, 0.0]
    assert series.rates["ops_duplicate"] == [2.0, 0.0]
    assert series.gauges["ws_connections"] == [3, 2]
    assert set(series.rates) == set(RATES)


def test_mean_lateness_per_interval_is_null_when_nothing_fired() -> None:
    sampler = SeriesSampler(step=2, window=10)
    sampler.record(0.0, _sample())
    sampler.record(2.0, _sample(lateness_sum=31.0, lateness_count=1))
    sampler.record(4.0, _sample(lateness_sum=31.0, lateness_count=1))
    sampler.record(6.0, _sample(lateness_sum=35.0, lateness_count=3))
    assert sampler.series().reminder_lateness_seconds == [31.0, None, 2.0]


def test_the_window_is_a_ring() -> None:
    sampler = SeriesSampler(step=2, window=10)
    for i in range(20):
        sampler.record(float(2 * i), _sample(pushes=float(i)))
    series = sampler.series()
    assert len(series.times) == 5  # window / step intervals
    assert series.times[-1] == 38.0
    assert series.rates["pushes"] == [0.5] * 5


def test_lag_from_postgres_is_never_below_the_process_gauge() -> None:
    sampler = SeriesSampler(step=2, window=10)
    sampler._db_lag = (7, 1)
    sampler.record(0.0, _sample(projector_lag_events=3, outbox_lag_events=4))
    sampler.record(2.0, _sample(projector_lag_events=3, outbox_lag_events=4))
    gauges = sampler.series().gauges
    assert (gauges["projector_lag_events"], gauges["outbox_lag_events"]) == ([7], [4])


async def test_ticks_read_the_registry_and_the_lag() -> None:
    calls: list[int] = []

    async def lag() -> tuple[int, int]:
        calls.append(1)
        return (5, 6)

    clock = iter(float(t) for t in range(100))
    sampler = SeriesSampler(lag=lag, step=2, window=60, clock=lambda: next(clock))
    for _ in range(6):
        await sampler.tick()
    assert len(calls) == 2  # the first tick, then every LAG_EVERY-th
    series = sampler.series()
    assert len(series.times) == 5
    assert series.gauges["projector_lag_events"][-1] >= 5
    assert set(read_registry()) >= set(RATES) | set(GAUGES)


_WRITER = """
from core.metrics import CONFLICTS, JOB_RUNS, OPS, WS_CONNECTIONS
OPS.labels("applied").inc({applied})
WS_CONNECTIONS.set({sockets})
CONFLICTS.labels("task", "title").inc({applied})
CONFLICTS.labels("task", "notes").inc(1)
JOB_RUNS.labels("retention", "failed").inc({applied})
JOB_RUNS.labels("reminders", "failed").inc(1)
JOB_RUNS.labels("reminders", "ok").inc(1)
"""


def test_a_sample_sums_every_process_in_one_reading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In multiprocess mode (``concord dev``, gateway workers) a sample covers every
    process's files, and reads them once for all its figures, not once per figure."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for applied, sockets in ((3, 5), (4, 2)):  # two processes of the deployment
        code = _WRITER.format(applied=applied, sockets=sockets)
        subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    readings: list[None] = []
    collect = multiprocess.MultiProcessCollector.collect

    def counted(self: multiprocess.MultiProcessCollector) -> object:
        readings.append(None)
        return collect(self)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(multiprocess.MultiProcessCollector, "collect", counted)
    sample = read_registry()
    assert sample["ops_applied"] == 7
    assert sample["ws_connections"] == 7  # summed over the processes (livesum)
    # a figure over several labels sums them all: every field's conflicts, every job's
    # failures, every outcome's runs
    assert sample["conflicts"] == 7 + 2
    assert sample["job_runs_failed"] == 7 + 2
    assert sample["job_runs"] == 7 + 2 + 2
    assert len(readings) == 1
