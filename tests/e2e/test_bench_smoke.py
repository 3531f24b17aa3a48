"""The end-to-end benchmarks cannot rot: every workload of ``bench/e2e`` runs in its
``--quick`` mode (tiny sizes, seconds) against this run's PostgreSQL and NATS, starts
its own Concord processes, and must report figures that make sense. The peer workload
runs too: it installs Hocuspocus with npm (pinned by bench/peer/package-lock.json) the
first time, and Node is on every machine that runs the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Services

ROOT = Path(__file__).resolve().parents[2]
Figures = dict[str, float]


def _ingest(f: Figures) -> None:
    runs = {k.split(".")[0] for k in f}
    assert runs == {"4x20", "4x1"}
    for run in runs:
        assert f[f"{run}.ops_per_s"] > 0
        assert f[f"{run}.pushes"] > 0
        assert f[f"{run}.rejected"] == 0


def _ingest_two_workers(f: Figures) -> None:
    _ingest(f)
    # The gateway's CPU counts its --workers processes (its own process serves nothing).
    assert all(f[f"{run}.gateway_cpu_cores"] > 0.01 for run in ("4x20", "4x1")), f


def _fanout(f: Figures) -> None:
    for run in ("1gw-40", "2gw-40"):
        assert f[f"{run}.writes"] > 0
        # Invariant 6: every subscriber gets every event, across gateways too.
        assert f[f"{run}.delivered_all_share"] == 1.0
        assert f[f"{run}.p99_ms"] > 0
        assert f[f"{run}.closed"] == 0


def _catchup(f: Figures) -> None:
    assert f["events"] == 5000
    assert f["ws_events_per_s"] > 0
    assert f["raw_events_per_s"] > 0


def _connections(f: Figures) -> None:
    assert f["sockets"] == 20
    assert f["per_socket_kib"] > 0


def _hotspace(f: Figures) -> None:
    assert f["one_space_ops_per_s"] > 0
    assert f["many_spaces_ops_per_s"] > 0


def _reminders(f: Figures) -> None:
    assert f["fired"] == 200
    assert f["events"] == 200
    assert f["firings_per_s"] > 0


def _peer(f: Figures) -> None:
    assert f["concord_ops_per_s"] > 0
    assert f["hocuspocus_ops_per_s"] > 0
    assert f["concord_delivered_all_40"] == 1.0
    assert f["hocuspocus_delivered_all_40"] == 1.0
    assert f["concord_fanout_p99_ms_40"] > 0
    assert f["hocuspocus_fanout_p99_ms_40"] > 0


CHECKS: dict[str, Callable[[Figures], None]] = {
    "ingest": _ingest,
    "ingest --gateway-workers 2": _ingest_two_workers,
    "fanout": _fanout,
    "catchup": _catchup,
    "connections": _connections,
    "hotspace": _hotspace,
    "reminders": _reminders,
    "peer": _peer,
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("workload", list(CHECKS))
def test_workload_runs_in_quick_mode(workload: str, services: Services, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    name, *options = workload.split()
    done = subprocess.run(
        [sys.executable, "-m", f"bench.e2e.{name}", *options, "--quick", "--json", str(out),
         "--dsn", services.server_dsn, "--nats", services.nats_url],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    report = json.loads(out.read_text())
    assert report["tables"], report
    assert report["postgres"]["fsync"] in ("on", "off")
    CHECKS[workload](report["figures"])
