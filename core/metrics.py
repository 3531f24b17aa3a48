"""Every Prometheus metric of docs/protocol.md section 8, defined once.

Adapters import the metric objects from here; ``/metrics`` renders the registry.
When several processes serve (``PROMETHEUS_MULTIPROC_DIR`` set), prometheus-client's
multiprocess mode aggregates them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase

OPS = Counter("concord_ops_total", "Pushed operations by result status", ["status"])
CONFLICTS = Counter(
    "concord_conflicts_total",
    "Sets after which their field had more than one head (append time)",
    ["entity_type", "field"],
)
AUTH_FAILURES = Counter("concord_auth_failures_total", "Authentication failures", ["reason"])
AUTH_RENEWALS = Counter(
    "concord_auth_renewals_total",
    "Sessions renewed: refresh-token rotations answered (HTTP) and live connections "
    "given a new access token (WebSocket auth)",
    ["route"],
)
WS_CONNECTIONS = Gauge(
    "concord_ws_connections", "Open WebSocket connections", multiprocess_mode="livesum"
)
PUSH_SECONDS = Histogram("concord_push_seconds", "Push handling time, receipt to result")
FANOUT_SECONDS = Histogram(
    "concord_fanout_seconds", "Commit to delivery of live events on this gateway"
)
PROJECTOR_LAG = Gauge(
    "concord_projector_lag_events",
    "Events committed but not yet projected",
    multiprocess_mode="livemax",
)
PROJECTOR_QUARANTINED = Counter(
    "concord_projector_quarantined",
    "Events the projector could not apply and set aside (its checkpoint moved past them)",
)
PROJECTOR_QUARANTINE = Gauge(
    "concord_projector_quarantined_events",
    "Events in the projector's quarantine: left out of the read model, read from the log",
    multiprocess_mode="livemax",
)
OUTBOX_LAG = Gauge(
    "concord_outbox_lag_events", "Events committed but not yet relayed", multiprocess_mode="livemax"
)
JOB_RUNS = Counter(
    "concord_scheduler_job_runs_total", "Background job runs by outcome", ["job", "outcome"]
)
REMINDERS = Counter("concord_reminders_total", "Reminders by outcome", ["outcome"])
REMINDER_LATENESS = Histogram(
    "concord_reminder_lateness_seconds",
    "Firing time minus due time",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
REMINDER_BACKLOG_AGE = Gauge(
    "concord_reminder_backlog_age_seconds",
    "Age of the oldest due but unfired reminder",
    multiprocess_mode="livemax",
)
IDEMPOTENCY_HITS = Counter(
    "concord_idempotency_hits_total", "Operations recognised as already stored", ["route"]
)
BACKGROUND_ERRORS = Counter(
    "concord_background_errors_total",
    "Unexpected errors caught by a background loop, which then went on",
    ["loop"],
)


#: In multiprocess mode, the file of the registry's directory that holds when its counters
#: began (written by whoever made the directory: ``concord dev``, ``--workers``).
SINCE_FILE = "concord-since"
_STARTED = time.time()


def mark_counters_start(directory: Path) -> None:
    """Record now as the time the counters of the registry in ``directory`` began."""
    (directory / SINCE_FILE).write_text(f"{time.time():.3f}\n")


def counters_since() -> float:
    """When the counters ``/metrics`` shows began: this process's start, or in
    multiprocess mode the time recorded in the registry's directory. Whoever reads the
    counters twice (``increase()``, the lab's meters) knows they restarted at zero when
    this moved (a restarted dev; not a restarted child, whose counts the registry keeps)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        try:
            return float((Path(directory) / SINCE_FILE).read_text())
        except (OSError, ValueError):
            return _STARTED
    return _STARTED


class _Since:
    """The ``concord_metrics_since_seconds`` gauge (a collector, read at scrape time)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "concord_metrics_since_seconds",
            "When the counters shown began (Unix time): they restart at zero when it moves",
            value=counters_since(),
        )


def render_metrics() -> bytes:
    """The Prometheus text exposition of this process (or of all, in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(_Since())
        return generate_latest(registry)
    return generate_latest() + generate_latest(_SINCE_ONLY)


_SINCE_ONLY = CollectorRegistry()
_SINCE_ONLY.register(_Since())


class Readings:
    """The samples of the metrics, read once: of this process, or summed over every
    process of the deployment's registry in multiprocess mode (``concord dev`` runs
    several). In that mode reading means parsing every process's files for every
    metric, so a caller that wants several figures takes one ``Readings`` for them all
    instead of one pass per figure."""

    def __init__(self) -> None:
        self._families: dict[str, list[Any]] | None = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            collector = multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            found: list[Any] = collector.collect()  # type: ignore[no-untyped-call]
            self._families = {}
            for family in found:
                self._families.setdefault(family.name, []).append(family)

    def _families_of(self, metric: MetricWrapperBase) -> list[Any]:
        """``metric``'s families as read."""
        if self._families is None:
            return list(metric.collect())
        return self._families.get(next(iter(metric.describe())).name, [])

    def _samples(
        self, metric: MetricWrapperBase, suffix: str
    ) -> list[tuple[dict[str, str], float]]:
        """The samples of ``metric`` whose name ends with ``suffix``."""
        found = []
        for family in self._families_of(metric):
            for sample in family.samples:
                if sample.name.endswith(suffix):
                    found.append((sample.labels, sample.value))
        return found

    def total(self, metric: MetricWrapperBase, suffix: str) -> float:
        """The sum of ``metric``'s samples whose name ends with ``suffix``, over every
        label (a counter's: ``suffix="_total"``)."""
        return sum(value for _, value in self._samples(metric, suffix))

    def by_labels(
        self, metric: MetricWrapperBase, *labels: str, suffix: str = "_total"
    ) -> dict[str, int]:
        """A counter's values summed by ``labels`` (joined with ``.``)."""
        out: dict[str, int] = {}
        for sample_labels, value in self._samples(metric, suffix):
            key = ".".join(sample_labels.get(label, "") for label in labels)
            out[key] = out.get(key, 0) + int(value)
        return out

    def gauge_max(self, metric: MetricWrapperBase) -> float:
        """The greatest value of a gauge over its labels (0 when never set)."""
        values = [value for _, value in self._samples(metric, "")]
        return max(values) if values else 0.0
