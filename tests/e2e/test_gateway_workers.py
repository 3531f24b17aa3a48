"""``concord gateway --workers N``: N gateway processes share one port; one that dies is
restarted; SIGTERM stops them all."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import psutil

from concord.child import serve
from core.settings import Settings
from tests.conftest import service_env
from tests.e2e.harness import FAST_OPTIONS


def _workers(pid: int) -> set[int]:
    """The gateway workers of ``pid`` (spawned processes; not multiprocessing's tracker)."""
    found = set()
    for child in psutil.Process(pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:  # gone, or a zombie not yet reaped
            continue
    return found


def _pids_answering(url: str, tries: int = 60) -> set[int]:
    """The pids of the processes answering ``/healthz`` over fresh connections."""
    seen = set()
    for _ in range(tries):
        with httpx.Client(timeout=5) as client:  # a new connection each time
            seen.add(client.get(f"{url}/healthz").json()["pid"])
    return seen


def test_two_workers_share_one_port_and_survive_a_crash(settings: Settings, tmp_path: Path) -> None:
    env = service_env(settings)
    env["CONCORD_TEST_GATEWAY_OPTIONS"] = json.dumps(FAST_OPTIONS)
    proc, port = serve(["gateway", "--workers", "2"], env, tmp_path / "workers.log")
    url = f"http://127.0.0.1:{port}"
    try:
        workers = _workers(proc.pid)
        assert len(workers) == 2, workers
        deadline = time.monotonic() + 30
        seen: set[int] = set()
        while seen != workers and time.monotonic() < deadline:
            seen |= _pids_answering(url, 20)
        assert seen == workers, "both workers take connections on the one port"
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _workers(proc.pid) - {victim}
            if len(now) == 2:
                break
            time.sleep(0.1)
        assert len(now) == 2, "the dead worker was replaced"
        assert (tmp_path / "workers.log").read_text().count("exited with status -9") == 1
        seen = set()
        deadline = time.monotonic() + 30
        while seen != now and time.monotonic() < deadline:
            seen |= _pids_answering(url, 20)
        assert seen == now, "the new worker takes connections too"
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        _gone, alive = psutil.wait_procs(family, timeout=5)
        assert alive == []
    finally:
        if proc.poll() is None:
            proc.kill()
