"""Benchmarks of one component cannot rot: each runs at tiny sizes (those on the database
against this run's PostgreSQL, in a scratch database of its own) and reports what it
measures."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import Services

ROOT = Path(__file__).resolve().parents[2]


def _run(services: Services, module: str, *options: str) -> str:
    """``python -m bench.<module> --dsn <this run's server> <options>``: its output."""
    return _bench(module, "--dsn", services.server_dsn, *options)


def _bench(module: str, *options: str) -> str:
    """``python -m bench.<module> <options>``: its output."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_field_history_bench_reports_the_append_and_the_read_model(
    services: Services,
) -> None:
    out = _run(services, "field_history_bench", "--history", "300", "--ops", "10", "--rounds", "2")
    assert "stored 300 sets of one field" in out
    medians = re.findall(r"append wall ([\d.]+)x, .*; read model wall ([\d.]+)x", out)
    assert len(medians) == 2, out
    assert all(float(v) > 0 for pair in medians for v in pair)


def test_the_listing_lag_bench_reports_both_ways(services: Services) -> None:
    options = ["--events", "600", "--tasks", "60", "--lag", "5", "--rounds", "1"]
    out = _run(services, "listing_lag_bench", *options)
    assert "projected up to seq 596 (head 601)" in out
    assert re.search(r"replay ÷ read model \+ tail \(medians\): [\d,]+x", out), out


def test_the_store_bench_reports_append_against_each_path(services: Services) -> None:
    options = ["--ops", "2000", "--rounds", "2", "--skip-eventsourcing"]
    out = _run(services, "eventstore_bench", *options)
    assert "2000 ops, 8 writers, batches of 100" in out
    for title in ("append ÷ path", "database CPU per op, append ÷ path"):
        block = out.split(f"{title}, round by round (median):\n", 1)[1].splitlines()[:3]
        assert [line.split()[0:3] for line in block] == [
            ["raw", "asyncpg", "executemany"],
            ["raw", "asyncpg", "COPY"],
            ["raw", "asyncpg", "COPY"],
        ], out
        # at this size the database's CPU can round to nothing: a ratio of it is nan
        assert all(re.search(r"\((\d+\.\d\d|nan)x\)$", line) for line in block), out


def test_the_store_bench_measures_the_append_alone(services: Services) -> None:
    """``--only-append`` (for side-by-side comparisons of trees and settings): the append
    path alone, one line per round with its rate, CPU per op and group sizes."""
    options = ["--ops", "2000", "--rounds", "2", "--only-append", "--store-writers", "2"]
    out = _run(services, "eventstore_bench", *options)
    lines = [line for line in out.splitlines() if line.startswith("round ")]
    assert len(lines) == 2, out
    for line in lines:
        assert re.fullmatch(
            r"round \d: append [\d,]+ ops/s, client [\d.]+ µs/op, server [\d.]+ µs/op; "
            r"\d+ transactions, [\d.]+ pushes each",
            line,
        ), line
    assert "raw asyncpg" not in out, out


def test_the_projector_bench_rebuilds_and_verifies(services: Services) -> None:
    """The rebuild's figure (issue 17: at least 0.8x the raw ordered read) comes from
    this bench: it appends, catches up, relays, rebuilds while writing and reading, and
    verifies the swapped read model against a replay."""
    options = ["--nats", services.nats_url, "--events", "3000", "--spaces", "3", "--workers", "1"]
    out = _run(services, "projector_bench", *options)
    assert "rebuilt 3,000 events of 3 spaces" in out, out
    assert re.search(r"= [\d.]+x the raw read rate \(proj\. columns\)", out), out
    assert "verify after the swap: 0 entities differ" in out, out


def test_the_crdt_bench_agrees_with_itself_at_a_tiny_size() -> None:
    # every way in checked against the others, as the full runs do
    out = _bench("crdt_bench", "--ops", "3000", "--entities", "100", "--repeat", "1")
    assert "generated 3,000 ops over 100 entities" in out
    assert out.count("equals fold: True") == 2, out  # op by op, and the merged replicas
    if importlib.util.find_spec("pycrdt") is None:  # the bench extra is not installed
        assert "comparison skipped" in out, out
    else:
        assert "B equals A: True" in out, out
        assert "ratio apply" in out, out
        # five pairs side by side by default, each way's ratios and their median
        assert re.search(r"side by side apply  : ([\d.]+x, ){4}[\d.]+x \(median [\d.]+x", out), out
        assert "side by side fold" in out, out
