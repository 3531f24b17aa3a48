"""The CRDT benchmark cannot rot: at a tiny size it runs every way in and checks them
against each other (op by op and merged against `fold`, pycrdt's replicas against each
other), as its full runs do (docs/benchmarks.md, "CRDT apply and merge")."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_crdt_bench_agrees_with_itself_at_a_tiny_size() -> None:
    options = ["--ops", "3000", "--entities", "100", "--repeat", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.crdt_bench", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "generated 3,000 ops over 100 entities" in out
    assert out.count("equals fold: True") == 2, out  # op by op, and the merged replicas
    if importlib.util.find_spec("pycrdt") is None:  # the bench extra is not installed
        assert "comparison skipped" in out, out
    else:
        assert "B equals A: True" in out, out
        assert "ratio apply" in out, out
