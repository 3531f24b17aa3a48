"""The end-to-end benchmarks' CPU meter counts a process with its children: a gateway run
with ``--workers N`` serves from its worker processes, its own process only supervises."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from bench.e2e.report import CpuMeter

#: A parent that only waits, and its child that burns CPU until killed.
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
child.wait()
"""


def test_a_process_counts_with_its_children() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        proc = psutil.Process(parent.pid)
        deadline = time.monotonic() + 30
        while not proc.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.children(), "the child did not start"
        meter = CpuMeter({"supervisor": [proc]})
        meter.start()
        time.sleep(1.0)
        wall, used, _ = meter.stop()
        # The child spins on a core (at least a fifth of one even on a busy machine); the
        # parent alone would count next to nothing.
        assert used["supervisor"] / wall > 0.2, used
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
