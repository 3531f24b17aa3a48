"""docs/prometheus-alerts.yml and docs/grafana-dashboard.json name only real metrics.

Every ``concord_*`` series an expression uses must be one that core/metrics.py exposes
(counters as ``<name>_total``, histograms as ``_bucket``/``_count``/``_sum``), and every
label it matches on must be one of that metric's labels. The alerts docs/observability.md lists
must all be there, each with a severity and a summary.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import core.metrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
SERIES = re.compile(r"\b(concord_[a-z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
REQUIRED_ALERTS = {
    "ConcordPushErrorRateHigh",
    "ConcordPushLatencyHigh",
    "ConcordProjectorLagGrowing",
    "ConcordReminderBacklogOld",
    "ConcordDeadReminder",
    "ConcordOutboxLag",
    "ConcordProjectorQuarantine",
}


def exposed() -> dict[str, set[str]]:
    """Series name -> its label names, for every metric of core/metrics.py."""
    series: dict[str, set[str]] = {}
    for value in vars(core.metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name, kind = value._name, value._type
        labels = set(value._labelnames)
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_count"] = labels
            series[f"{name}_sum"] = labels
        else:
            series[name] = labels
    return series


def problems(expr: str, known: dict[str, set[str]]) -> list[str]:
    found: list[str] = []
    uses = SERIES.findall(expr)
    if not uses:
        found.append(f"names no concord metric: {expr}")
    for name, selector in uses:
        if name not in known:
            found.append(f"{name} is not exposed by core/metrics.py")
            continue
        for label in MATCHER.findall(selector):
            if label not in known[name]:
                found.append(f"{name} has no label {label!r}")
    grouping = {label.strip() for group in BY.findall(expr) for label in group.split(",")}
    allowed = set().union(*(known.get(name, set()) for name, _ in uses))
    found += [f"groups by unknown label {g!r}" for g in grouping - allowed - {""}]
    return found


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((DOCS / "prometheus-alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads((DOCS / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_the_registry_is_read() -> None:
    known = exposed()
    assert "concord_ops_total" in known
    assert known["concord_push_seconds_bucket"] == {"le"}
    assert known["concord_conflicts_total"] == {"entity_type", "field"}


def test_every_required_alert_is_defined_with_severity_and_summary() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_alert_expressions_use_exposed_metrics(rule: dict[str, Any]) -> None:
    assert problems(rule["expr"], exposed()) == []


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_dashboard_expressions_use_exposed_metrics(expr: str) -> None:
    assert problems(expr, exposed()) == []


def test_the_checker_catches_unknown_names_and_labels() -> None:
    known = exposed()
    assert problems('rate(concord_nope_total{status="x"}[5m])', known)
    assert problems('rate(concord_ops_total{reason="x"}[5m])', known)
    assert problems("sum by (device) (rate(concord_ops_total[5m]))", known)
    assert problems("vector(1)", known)


def test_the_push_error_alert_fires_after_two_minutes_above_five_percent() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "ConcordPushErrorRateHigh")
    assert rule["for"] == "2m"
    assert "> 0.05" in rule["expr"]
    backlog = next(r for r in alert_rules() if r["alert"] == "ConcordReminderBacklogOld")
    assert "> 60" in backlog["expr"]
