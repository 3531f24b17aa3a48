"""Scrape ``/metrics`` (admin token) and tell what moved between two points.

A ``Meter`` sums the change of every ``concord_*`` sample over one or more segments
(``checkpoint`` closes one). When the server's counters restarted in between (its
``concord_metrics_since_seconds`` moved: a restarted ``concord dev`` or gateway), they
restarted at zero, so the segment's change is the new value, as Prometheus'
``increase()`` would count it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

SampleKey = tuple[str, tuple[tuple[str, str], ...]]

#: Sample suffixes that are bookkeeping, not figures.
_SKIP_SUFFIXES = ("_created", "_bucket")


@dataclass(frozen=True)
class Scrape:
    values: dict[SampleKey, float]
    kinds: dict[SampleKey, str]
    started: float


def parse(text: str) -> Scrape:
    values: dict[SampleKey, float] = {}
    kinds: dict[SampleKey, str] = {}
    started = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "concord_metrics_since_seconds":
                started = sample.value
                continue
            if not sample.name.startswith("concord_") or sample.name.endswith(_SKIP_SUFFIXES):
                continue
            key = (sample.name, tuple(sorted(sample.labels.items())))
            values[key] = sample.value
            kinds[key] = family.type
    return Scrape(values, kinds, started)


async def scrape(base_url: str, admin_token: str) -> Scrape:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.get("/metrics", headers={"authorization": f"Bearer {admin_token}"})
    if response.status_code != 200:
        raise RuntimeError(f"GET /metrics answered {response.status_code}: {response.text[:200]}")
    return parse(response.text)


def label_text(key: SampleKey) -> str:
    name, labels = key
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{inner}}}" if inner else name


@dataclass
class Meter:
    """What moved on one server over a scenario, across restarts."""

    base_url: str
    admin_token: str
    deltas: dict[SampleKey, float] = field(default_factory=dict)
    last: Scrape | None = None

    async def start(self) -> None:
        self.last = await scrape(self.base_url, self.admin_token)

    async def checkpoint(self, *, assume_restart: bool = False) -> None:
        """Close a segment: add what changed since the last scrape."""
        now = await scrape(self.base_url, self.admin_token)
        before = self.last
        restarted = before is None or assume_restart or now.started != before.started
        for key, value in now.values.items():
            old = 0.0 if before is None else before.values.get(key, 0.0)
            if restarted and now.kinds.get(key) != "gauge":
                old = 0.0
            if value != old:
                self.deltas[key] = self.deltas.get(key, 0.0) + value - old
        self.last = now

    def delta(self, name: str, **labels: str) -> float:
        """The summed change of every sample named ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, lb), v in self.deltas.items() if n == name and wanted <= set(lb))

    def moved(self) -> list[tuple[str, float]]:
        return sorted((label_text(k), v) for k, v in self.deltas.items() if v)


def format_moved(moved: Iterable[tuple[str, float]]) -> list[str]:
    lines = []
    for name, value in moved:
        shown = f"{value:+.0f}" if float(value).is_integer() else f"{value:+.3f}"
        lines.append(f"    {name} {shown}")
    return lines or ["    (nothing moved)"]
