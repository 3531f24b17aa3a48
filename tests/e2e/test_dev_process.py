"""`concord dev`: embedded services come up, survive a crash, and never outlive a stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from concord.child import serve


def _env() -> dict[str, str]:
    # The embedded default: no CONCORD_* variable at all.
    return {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}


def _leftovers(data_dir: Path) -> list[psutil.Process]:
    """Processes started on ``data_dir`` (postmaster: -D path; nats-server: -sd path)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] in {"postgres", "nats-server"} and str(data_dir) in cmdline:
            found.append(proc)
    return found


class DevProcess:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        #: The port of the running start (each start binds a port the kernel picks).
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"dev-{uuid.uuid4().hex[:8]}.log"

    def start(self, timeout: float = 60) -> None:
        self.proc, self.port = serve(
            ["dev", "--data-dir", str(self.data_dir)], _env(), self.log, timeout=timeout
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(30)

    def children(self, command: str) -> list[int]:
        """Pids of this dev's ``concord <command>`` processes."""
        assert self.proc is not None
        found = []
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if command in child.cmdline()[3:4]:
                    found.append(child.pid)
            except psutil.Error:  # gone, or a zombie not yet reaped
                continue
        return found

    def wait_for(self, command: str, other_than: int, within: float = 30) -> int:
        """The pid of a ``concord <command>`` child other than ``other_than``."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            fresh = [p for p in self.children(command) if p != other_than]
            if fresh:
                return fresh[0]
            time.sleep(0.1)
        raise AssertionError(f"no new {command} within {within} s:\n{self.log.read_text()}")

    def database_url(self) -> str:
        lines = (self.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
        return f"postgresql://postgres@127.0.0.1:{int(lines[3])}/postgres"


@pytest.fixture
def dev(scratch_dir: Path) -> Iterator[DevProcess]:
    process = DevProcess(scratch_dir / "data")
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.stop()
    for leftover in _leftovers(process.data_dir):  # never leak servers, even on failure
        leftover.kill()


def _sql(dsn: str, statement: str) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            if statement.lstrip().upper().startswith("SELECT"):
                return await conn.fetchval(statement)
            return await conn.execute(statement)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_sigterm_leaves_nothing_behind(dev: DevProcess) -> None:
    dev.start()
    assert dev.proc is not None
    health = httpx.get(dev.url("/healthz")).json()
    assert health["status"] == "ok"
    assert health["pid"] in dev.children("gateway"), "the gateway is a process of its own"
    # The banner names the sandbox, which works on the embedded default.
    assert f"sandbox:     {dev.url('/sandbox')}" in dev.log.read_text()
    assert httpx.get(dev.url("/sandbox")).status_code == 200
    assert httpx.get(dev.url("/sandbox/js/concord.js")).status_code == 200
    ready = httpx.get(dev.url("/readyz")).json()
    assert ready["dependencies"]["postgres"]["status"] == "ok"
    assert _leftovers(dev.data_dir), "embedded servers should be running"
    assert dev.stop(signal.SIGTERM) == 0
    assert _leftovers(dev.data_dir) == []


def test_second_start_reuses_the_data(dev: DevProcess) -> None:
    dev.start()
    secrets_before = json.loads((dev.data_dir / "secrets.json").read_text())
    _sql(dev.database_url(), "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    dev.stop()
    dev.start()
    assert _sql(dev.database_url(), "SELECT x FROM kept") == 42
    assert json.loads((dev.data_dir / "secrets.json").read_text()) == secrets_before
    assert dev.stop(signal.SIGINT) in (0, 130)
    assert _leftovers(dev.data_dir) == []


def test_sigkill_then_restart_adopts_and_loses_nothing(dev: DevProcess) -> None:
    dev.start()
    account = httpx.post(
        dev.url("/v1/auth/register"),
        json={"email": "kill@example.com", "password": "correct horse", "device_name": "d"},
        timeout=30,
    ).json()
    auth = {"authorization": f"Bearer {account['access_token']}"}
    space = account["personal_space_id"]
    ops = [
        {"op_id": str(uuid.uuid4()), "space_id": space, "entity_type": "task",
         "entity_id": f"t-{i}", "kind": "set", "field": "title", "value": "x", "lamport": 1}
        for i in range(20)
    ]  # fmt: skip
    pushed = httpx.post(
        dev.url("/v1/sync/push"), json={"batch_id": "b", "ops": ops}, headers=auth, timeout=30
    ).json()
    assert {r["status"] for r in pushed["results"]} == {"applied"}
    children = [
        psutil.Process(p) for c in ("gateway", "projector", "scheduler") for p in dev.children(c)
    ]
    assert len(children) >= 3, "gateway, projector and scheduler"
    dev.stop(signal.SIGKILL)
    # Its processes die with it (they asked the kernel for SIGTERM when it goes) ...
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running after the supervisor was killed: {alive}"
    # ... but the embedded servers are meant to outlive it.
    orphans = _leftovers(dev.data_dir)
    assert orphans, "SIGKILL orphans the embedded servers: the next start must adopt them"
    dev.start()
    # The same access token still works (dev secrets persist) and every acked op is there.
    pulled = httpx.get(
        dev.url("/v1/sync/pull"), params={"space_id": space}, headers=auth, timeout=30
    )
    assert pulled.status_code == 200, pulled.text
    stored = {e["op_id"] for e in pulled.json()["events"]}
    assert {o["op_id"] for o in ops} <= stored
    assert dev.stop(signal.SIGTERM) == 0
    assert _leftovers(dev.data_dir) == []


def test_three_processes_and_a_crashed_one_is_restarted(dev: DevProcess) -> None:
    """The gateway, the projector (with the relay) and the scheduler run as processes of
    their own; killing one restarts it, logged, and the others go on."""
    dev.start()
    for command in ("gateway", "projector", "scheduler"):
        assert len(dev.children(command)) == 1, (command, dev.log.read_text()[-2000:])
    # Only the projector runs at a lower CPU priority (CONCORD_PROJECTOR_NICE, 10).
    nice = {c: psutil.Process(dev.children(c)[0]).nice() for c in ("gateway", "projector")}
    assert nice["projector"] == min(19, nice["gateway"] + 10)
    assert psutil.Process(dev.children("scheduler")[0]).nice() == nice["gateway"]
    for command in ("projector", "scheduler", "gateway"):
        [pid] = dev.children(command)
        os.kill(pid, signal.SIGKILL)
        fresh = dev.wait_for(command, other_than=pid)
        assert fresh != pid
        assert f"{command} (pid {pid}) exited with status -9; restarting" in dev.log.read_text()
    # The restarted gateway took over the same socket: same port, no gap to re-bind.
    deadline = time.monotonic() + 30
    ready = False
    while not ready and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):  # the gateway may be restarting
            ready = httpx.get(dev.url("/readyz"), timeout=2).status_code == 200
        if not ready:
            time.sleep(0.2)
    assert ready, "the restarted gateway never answered /readyz on the same port"
    health = httpx.get(dev.url("/healthz"), timeout=5).json()
    assert health["pid"] in dev.children("gateway")
    assert dev.stop(signal.SIGTERM) == 0
    assert _leftovers(dev.data_dir) == []


def test_metrics_of_all_three_processes_reach_the_gateway(dev: DevProcess) -> None:
    """A reminder fired by the scheduler process is counted on the gateway's /metrics:
    the three processes share one registry."""
    dev.start()
    token = json.loads((dev.data_dir / "secrets.json").read_text())["admin_token"]
    admin = {"authorization": f"Bearer {token}"}
    account = httpx.post(
        dev.url("/v1/auth/register"),
        json={"email": "metrics@example.com", "password": "correct horse", "device_name": "d"},
        timeout=30,
    ).json()
    due = datetime.now(UTC) + timedelta(seconds=1)
    remind = {
        "op_id": str(uuid.uuid4()), "space_id": account["personal_space_id"],
        "entity_type": "task", "entity_id": "t-1", "kind": "set", "field": "remind_at",
        "value": due.strftime("%Y-%m-%dT%H:%M:%SZ"), "lamport": 1,
    }  # fmt: skip
    httpx.post(
        dev.url("/v1/sync/push"),
        json={"batch_id": "r", "ops": [remind]},
        headers={"authorization": f"Bearer {account['access_token']}"},
        timeout=30,
    ).raise_for_status()
    wanted = 'concord_reminders_total{outcome="fired"} 1.0'
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline and wanted not in text:
        time.sleep(0.5)
        text = httpx.get(dev.url("/metrics"), headers=admin, timeout=10).text
    assert wanted in text, "the scheduler's counter never reached the gateway's /metrics"
    assert dev.stop(signal.SIGTERM) == 0


def test_ctrl_c_stops_every_process(dev: DevProcess) -> None:
    """SIGINT (Ctrl-C) to the supervisor stops all its processes, quickly (in a terminal
    the children get the SIGINT too, and stop on it as on the supervisor's SIGTERM)."""
    dev.start()
    assert dev.proc is not None
    family = [psutil.Process(dev.proc.pid), *psutil.Process(dev.proc.pid).children(True)]
    started = time.monotonic()
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(30) in (0, 130)
    _gone, alive = psutil.wait_procs(family, timeout=5)
    assert alive == []
    assert time.monotonic() - started < 10
    assert _leftovers(dev.data_dir) == []


def _one_line_error(args: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "concord", *args],
        env=env or _env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_invalid_port_is_one_line() -> None:
    assert "CONCORD_PORT: 70000 is out of range" in _one_line_error(["dev", "--port", "70000"])


def test_taken_port_is_one_line(scratch_dir: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        line = _one_line_error(["dev", "--port", str(port), "--data-dir", str(scratch_dir / "d")])
    assert f"port {port} on 127.0.0.1 is already in use" in line


def test_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = _one_line_error(["dev", "--data-dir", str(blocker / "data")])
    assert "CONCORD_DATA_DIR" in line
    assert "not a writable directory" in line
