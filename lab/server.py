"""The server a lab run talks to: one given with ``--against``, or its own.

``concord lab`` alone starts a throwaway ``concord dev`` (embedded PostgreSQL and NATS
in a temporary data dir, on a port it binds itself, short access tokens) behind a ``TcpProxy``, so
scenarios can stop it and start it again (``missed-reminder``) while devices keep one
address. It is stopped, and its data dir removed, when the run ends.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import tempfile
from pathlib import Path

from concord.child import ConcordProcess, NotReady
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
        self.process: ConcordProcess | None = None
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
        that process answers ``/healthz`` with its pid and ``/readyz`` with 200
        (``concord.child``, the harness the tests and benchmarks use too)."""
        self.process = ConcordProcess(["dev"], self._env(), self.log_path)
        try:
            await asyncio.to_thread(self.process.start, within)
        except NotReady as exc:
            raise RuntimeError(str(exc)) from None
        self.backend_port = self.process.port
        self.proxy.retarget(self.backend_port)

    async def stop_backend(self) -> None:
        """SIGTERM ``concord dev`` (gateway, projector, scheduler, embedded services)."""
        self.proxy.retarget(None)
        process, self.process = self.process, None
        if process is not None:
            await asyncio.to_thread(process.stop, signal.SIGTERM, 60)

    async def close(self) -> None:
        await self.stop_backend()
        await self.proxy.close()
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)
