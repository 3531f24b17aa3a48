"""The server a lab run talks to: one given with ``--against``, or its own.

``concord lab`` alone starts a throwaway ``concord dev`` (embedded PostgreSQL and NATS
in a temporary data dir, on a port it binds itself, short access tokens) behind a ``TcpProxy``, so
scenarios can stop it and start it again (``missed-reminder``) while devices keep one
address. It is stopped, and its data dir removed, when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

from concord.command import read_port_file
from concord.supervisor import process_family
from lab.proxy import TcpProxy

#: Access token lifetime of the lab's own server: short enough that tokens expire
#: under the auth-expiry scenario's queue (and under every other scenario too).
OWN_ACCESS_TTL = 5


class LabServer:
    """A server the lab can reach; ``restartable`` when the lab owns it."""

    def __init__(self, url: str, admin_token: str) -> None:
        self.url = url.rstrip("/")
        self.admin_token = admin_token

    @property
    def restartable(self) -> bool:
        return False

    async def stop_backend(self) -> None:
        raise RuntimeError("only the lab's own server can be stopped, not an --against one")

    async def start_backend(self) -> None:
        raise RuntimeError("only the lab's own server can be started, not an --against one")

    async def close(self) -> None:
        """Nothing to do for a server the lab did not start."""

    def describe(self) -> str:
        return f"server {self.url} (given with --against)"


class OwnServer(LabServer):
    """``concord dev`` as a subprocess on embedded services, behind a proxy."""

    def __init__(self, data_dir: Path | None = None, *, keep: bool = False) -> None:
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="concord-lab-"))
        self.keep = keep or data_dir is not None
        self.proxy = TcpProxy(None)
        self.proc: asyncio.subprocess.Process | None = None
        self.backend_port = 0
        self.log_path = self.data_dir / "server.log"
        super().__init__("http://127.0.0.1:0", secrets.token_urlsafe(24))

    @property
    def restartable(self) -> bool:
        return True

    def describe(self) -> str:
        return (
            f"own server: concord dev (embedded PostgreSQL and NATS, data {self.data_dir}, "
            f"CONCORD_ACCESS_TOKEN_TTL={OWN_ACCESS_TTL}) behind {self.url}"
        )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(
            CONCORD_DATA_DIR=str(self.data_dir),
            CONCORD_ADMIN_TOKEN=self.admin_token,
            CONCORD_ACCESS_TOKEN_TTL=str(OWN_ACCESS_TTL),
            CONCORD_SCHEDULER_SWEEP_INTERVAL="5",
            CONCORD_LOG_LEVEL="warning",
        )
        return env

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.proxy.start()
        self.url = self.proxy.url
        await self.start_backend()

    async def start_backend(self, within: float = 180) -> None:
        """Start ``concord dev`` on a port it binds itself (``--port 0``); return once
        that process answers ``/healthz`` with its pid and ``/readyz`` with 200."""
        port_file = self.data_dir / "backend.port"
        port_file.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "concord",
                "dev",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                env=self._env(),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self._ready(port_file, within)
        self.proxy.retarget(self.backend_port)

    async def _ready(self, port_file: Path, within: float) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise RuntimeError(f"concord dev exited early:\n{self._tail()}")
                if await self._answers(http, port_file):
                    return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"concord dev not ready in {within}s:\n{self._tail()}")

    async def _answers(self, http: httpx.AsyncClient, port_file: Path) -> bool:
        """True once the port file is written and the server there is this process."""
        port = read_port_file(port_file)
        if port is None or self.proc is None:
            return False
        self.backend_port = port
        url = f"http://127.0.0.1:{port}"
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = await http.get(f"{url}/healthz")
            ours = health.json().get("pid") in process_family(self.proc.pid)
            if health.status_code == 200 and ours:
                return (await http.get(f"{url}/readyz")).status_code == 200
        return False

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    async def stop_backend(self) -> None:
        """SIGTERM ``concord dev`` (gateway, projector, scheduler, embedded services)."""
        self.proxy.retarget(None)
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def close(self) -> None:
        await self.stop_backend()
        await self.proxy.close()
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)
