"""The chaos run's own deployment: embedded PostgreSQL and NATS, two gateways (each
behind a ``TcpProxy``), a projector and a scheduler, every one a separate process on
loopback, and the faults that can be done to each.

Processes are started by the lab (``python -m concord gateway|projector|scheduler``),
not by a supervisor: the lab decides when a killed one comes back. Gateways listen on
``--port 0``; a restarted gateway gets a new port and its proxy is pointed there, so
devices keep one address per gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from concord.command import read_port_file
from concord.dev import run_migrations
from concord.embedded import EmbeddedNats, EmbeddedPostgres
from concord.supervisor import forget_metrics, process_family
from core.breaks import BREAK_ENV
from core.metrics import mark_counters_start
from lab.proxy import TcpProxy

#: Access tokens live this long: devices that do not refresh early see them expire
#: under their queues (docs/reliability.md).
ACCESS_TTL = 30
#: Every device of the run comes from 127.0.0.1: the per-address login throttle
#: (30 a minute) is meant for the internet, not for 50 devices on one host. Password
#: hashing is not under test: a cheap argon2 cost keeps 50 logins off the CPU budget.
GATEWAY_OPTIONS = {
    "login_address_attempts": 1_000_000,
    "login_pair_failures": 1_000_000,
    "argon2_time_cost": 1,
    "argon2_memory_cost": 8192,
    "argon2_parallelism": 1,
}


@dataclass
class Proc:
    """One server process of the cluster."""

    name: str
    args: list[str]
    proc: asyncio.subprocess.Process | None = None
    port: int = 0
    stopped: bool = False  # SIGSTOPped
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class Cluster:
    """Everything the chaos run starts, and the faults it can inject."""

    root: Path
    breaks: tuple[str, ...] = ()
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    pg: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    dsn: str = ""
    nats_url: str = ""
    procs: dict[str, Proc] = field(default_factory=dict)
    proxies: dict[str, TcpProxy] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pg = EmbeddedPostgres(self.root)
        self.nats = EmbeddedNats(self.root)
        self.dsn = await asyncio.to_thread(self.pg.start)
        self.nats_url = await asyncio.to_thread(self.nats.start)
        await asyncio.to_thread(run_migrations, self.dsn)
        if "dedup" in self.breaks:  # the broken build has no second guard either
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute("ALTER TABLE events DROP CONSTRAINT events_space_id_op_id_key")
            finally:
                await conn.close()
        metrics = self.root / "metrics"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir()
        mark_counters_start(metrics)
        for name in ("gateway-a", "gateway-b"):
            port_file = str(self.root / f"{name}.port")
            self.procs[name] = Proc(name, ["gateway", "--port", "0", "--port-file", port_file])
            self.proxies[name] = TcpProxy(None)
            await self.proxies[name].start()
        self.procs["projector"] = Proc("projector", ["projector"])
        self.procs["scheduler"] = Proc("scheduler", ["scheduler"])
        await asyncio.gather(*(self.launch(name) for name in self.procs))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        env.update(
            CONCORD_DATABASE_URL=self.dsn,
            CONCORD_NATS_URL=self.nats_url,
            CONCORD_SECRET_KEY=self.secret_key,
            CONCORD_ADMIN_TOKEN=self.admin_token,
            CONCORD_DATA_DIR=str(self.root),
            CONCORD_ACCESS_TOKEN_TTL=str(ACCESS_TTL),
            CONCORD_SCHEDULER_SWEEP_INTERVAL="5",
            CONCORD_LOG_LEVEL="warning",
            CONCORD_TEST_GATEWAY_OPTIONS=json.dumps(GATEWAY_OPTIONS),
            PROMETHEUS_MULTIPROC_DIR=str(self.root / "metrics"),
        )
        if self.breaks:
            env[BREAK_ENV] = ",".join(self.breaks)
        return env

    @property
    def gateways(self) -> list[str]:
        return ["gateway-a", "gateway-b"]

    def url(self, gateway: str) -> str:
        return self.proxies[gateway].url

    def direct_url(self, gateway: str = "gateway-a") -> str:
        return f"http://127.0.0.1:{self.procs[gateway].port}"

    async def launch(self, name: str, within: float = 120) -> None:
        """Start (or restart) one process and wait until it serves."""
        p = self.procs[name]
        if p.args[0] == "gateway":
            (self.root / f"{name}.port").unlink(missing_ok=True)
        with (self.root / f"{name}.log").open("ab") as log:
            p.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "concord", *p.args,
                env=self.env(), stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        p.stopped, p.starts = False, p.starts + 1
        if p.args[0] == "gateway":
            await self._gateway_ready(p, within)
            self.proxies[name].retarget(p.port)

    async def _gateway_ready(self, p: Proc, within: float) -> None:
        deadline = time.monotonic() + within
        port_file = self.root / f"{p.name}.port"
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                assert p.proc is not None
                if p.proc.returncode is not None:
                    raise RuntimeError(f"{p.name} exited early: {self.tail(p.name)}")
                port = read_port_file(port_file)
                if port is not None:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        health = await http.get(f"http://127.0.0.1:{port}/healthz")
                        if health.json().get("pid") in process_family(p.proc.pid):
                            p.port = port
                            ready = await http.get(f"http://127.0.0.1:{port}/readyz")
                            if ready.status_code == 200:
                                return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{p.name} not ready in {within}s: {self.tail(p.name)}")

    def tail(self, name: str) -> str:
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()
        for p in self.procs.values():
            if p.alive and p.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    if p.stopped:
                        p.proc.send_signal(signal.SIGCONT)
                    p.proc.terminate()
                try:
                    await asyncio.wait_for(p.proc.wait(), 10)
                except TimeoutError:
                    p.proc.kill()
                    await p.proc.wait()
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop)

    # ------------------------------------------------------------------ faults

    async def kill(self, name: str) -> None:
        """SIGKILL: no cleanup, no COMMIT of what was in flight."""
        p = self.procs[name]
        if name in self.proxies:
            self.proxies[name].retarget(None)
        if p.proc is not None and p.alive:
            p.proc.kill()
            await p.proc.wait()
            forget_metrics(p.proc.pid)

    async def pause(self, name: str, seconds: float) -> None:
        """SIGSTOP for ``seconds``, then SIGCONT: a process that hangs, then goes on."""
        p = self.procs[name]
        if p.proc is None or not p.alive:
            return
        p.proc.send_signal(signal.SIGSTOP)
        p.stopped = True
        try:
            await asyncio.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                p.proc.send_signal(signal.SIGCONT)
            p.stopped = False

    async def restart_nats(self, down: float) -> None:
        """Stop nats-server, leave it down ``down`` seconds, start it on the same port."""
        assert self.nats is not None
        port = self.nats.port
        await asyncio.to_thread(self.nats.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.nats.start, port)

    async def restart_postgres(self, down: float) -> None:
        """Immediate shutdown (every connection lost, open transactions rolled back),
        down ``down`` seconds, then start on the same port."""
        pg = self.pg
        assert pg is not None
        assert pg.port is not None
        await asyncio.to_thread(
            pg._run, "pg_ctl", "-D", str(pg.pgdata), "-w", "-t", "60", "-m", "immediate", "stop"
        )
        await asyncio.sleep(down)
        await asyncio.to_thread(
            pg._run, "pg_ctl", "-D", str(pg.pgdata), "-w", "-t", "60", "-l", str(pg.log),
            "-o", f"-h 127.0.0.1 -p {pg.port} -k {pg.pgdata}", "start",
        )  # fmt: skip

    async def terminate_backends(self) -> int:
        """``pg_terminate_backend`` every other client connection (mid-transaction too)."""
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                )
            )
        finally:
            await conn.close()

    async def swallow_answers(self, gateway: str, seconds: float) -> None:
        """The proxy forwards requests but drops every answer for ``seconds``, then
        cuts those connections: the server did the work, the device never heard."""
        proxy = self.proxies[gateway]
        proxy.swallow = True
        try:
            await asyncio.sleep(seconds)
        finally:
            proxy.swallow = False
            proxy.cut_all()

    async def heal(self) -> None:
        """Everything running and reachable again."""
        for name, p in self.procs.items():
            if p.stopped and p.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGCONT)
                p.stopped = False
            if not p.alive:
                await self.launch(name)
        for proxy in self.proxies.values():
            proxy.swallow = False
