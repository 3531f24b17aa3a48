"""`concord dev`: embedded services come up, survive a crash, and never outlive a stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from tests.e2e.harness import serve


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
    assert httpx.get(dev.url("/healthz")).json() == {"status": "ok", "pid": dev.proc.pid}
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
    dev.stop(signal.SIGKILL)
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


def _one_line_error(args: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
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
