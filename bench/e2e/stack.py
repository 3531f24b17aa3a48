"""What a workload runs against: services, a scratch database and Concord's processes.

PostgreSQL and NATS are the ones named by ``--dsn``/``--nats`` or by
``CONCORD_TEST_DATABASE_URL``/``CONCORD_TEST_NATS_URL``, else embedded ones
(``concord.embedded``) under a scratch directory. Each run creates its own database
(dropped at the end) and NATS prefix (its stream deleted at the end), then starts
``concord gateway`` (one or more), ``concord projector`` and ``concord scheduler`` as
separate processes, exactly as production runs them (``concord.child``, the harness the
tests and the lab use too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import httpx
import nats
import nats.js.errors

from concord.child import ConcordProcess, NotReady
from concord.embedded import EmbeddedNats, EmbeddedPostgres
from eventstore.migrations import migrate
from projector.readmodel import lag_totals
from projector.stream import Names

SECRET = "bench-secret-key-0123456789abcdef-0123456789"
ADMIN_TOKEN = "bench-admin-token"
ROOT = Path(__file__).resolve().parents[2]

#: Gateway options for load generation (``CONCORD_TEST_GATEWAY_OPTIONS``, as the e2e
#: tests use): cheap argon2 so that thousands of sign-ins take seconds, and throttles
#: that never fire (a benchmark device pushes as fast as acks allow, far above the
#: production bucket of 20 pushes/s, and signs in from one address thousands of times).
#: Nothing on the write or delivery path is changed by these options.
BENCH_OPTIONS: dict[str, Any] = {
    "argon2_time_cost": 1,
    "argon2_memory_cost": 1024,
    "argon2_parallelism": 1,
    "hash_queue": 1024,
    "push_rate": 1_000_000.0,
    "push_burst": 1_000_000,
    "login_address_attempts": 10_000_000,
    "login_pair_failures": 10_000_000,
    "login_account_failures": 10_000_000,
}


@dataclass(frozen=True)
class Services:
    """Where PostgreSQL and NATS are, and whether this run started them."""

    server_dsn: str
    nats_url: str
    source: str  # for the record: "given PostgreSQL, embedded NATS"


@contextlib.contextmanager
def services(dsn: str | None, nats_url: str | None, scratch: Path) -> Iterator[Services]:
    """The services named (flag, then CONCORD_TEST_* variable), else embedded ones."""
    dsn = dsn or os.environ.get("CONCORD_TEST_DATABASE_URL") or None
    nats_url = nats_url or os.environ.get("CONCORD_TEST_NATS_URL") or None
    started: list[EmbeddedPostgres | EmbeddedNats] = []
    source = []
    try:
        if dsn is None:
            pg = EmbeddedPostgres(scratch)
            started.append(pg)
            dsn = pg.start()
            source.append("embedded PostgreSQL")
        else:
            source.append("given PostgreSQL")
        if nats_url is None:
            embedded_nats = EmbeddedNats(scratch)
            started.append(embedded_nats)
            nats_url = embedded_nats.start()
            source.append("embedded NATS")
        else:
            source.append("given NATS")
        yield Services(dsn, nats_url, ", ".join(source))
    finally:
        for service in reversed(started):
            with contextlib.suppress(Exception):
                service.stop()


def with_database(dsn: str, name: str) -> str:
    return urlparse(dsn)._replace(path=f"/{name}").geturl()


def _raise_nofile(limit: int) -> Callable[[], None]:
    def apply() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(limit, hard) if hard != resource.RLIM_INFINITY else limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    return apply


def raise_nofile(limit: int) -> int:
    """Raise this process's open-file limit towards ``limit`` (up to the hard limit)."""
    _raise_nofile(limit)()
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Stack:
    """A scratch database and the Concord processes running on it."""

    services: Services
    database_url: str
    prefix: str
    data_dir: Path
    gateways: list[ConcordProcess] = field(default_factory=list)
    workers: list[ConcordProcess] = field(default_factory=list)
    pool: asyncpg.Pool | None = None
    #: Variables added to every process's environment (``CONCORD_WS_COMPRESSION``, say).
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Processes of each gateway (``concord gateway --workers N``, sharing its port).
    gateway_workers: int = 1

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        env.update(
            CONCORD_DATABASE_URL=self.database_url,
            CONCORD_NATS_URL=self.services.nats_url,
            CONCORD_NATS_PREFIX=self.prefix,
            CONCORD_SECRET_KEY=SECRET,
            CONCORD_ADMIN_TOKEN=ADMIN_TOKEN,
            CONCORD_DATA_DIR=str(self.data_dir),
            # Longer than any run: no renewal traffic in the middle of a measurement.
            CONCORD_ACCESS_TOKEN_TTL="7200",
            CONCORD_TEST_GATEWAY_OPTIONS=json.dumps(BENCH_OPTIONS),
        )
        env.update(self.extra_env)
        return env

    def _process(self, name: str, argv: list[str], nofile: int | None) -> ConcordProcess:
        return ConcordProcess(
            argv,
            self.env(),
            self.data_dir / f"{name}.log",
            name=name,
            cwd=ROOT,
            preexec_fn=_raise_nofile(nofile) if nofile else None,
        )

    def start_gateway(self, *, nofile: int | None = None, timeout: float = 60) -> ConcordProcess:
        """``concord gateway`` on a port it binds itself, ready once it answers as itself
        (``concord.child``, the harness the tests and the lab use too)."""
        argv = ["gateway", "--workers", str(self.gateway_workers)]
        gateway = self._process(f"gateway-{len(self.gateways) + 1}", argv, nofile)
        self.gateways.append(gateway)
        try:
            gateway.start(timeout)
        except NotReady as exc:
            raise RuntimeError(str(exc)) from None
        return gateway

    def start_worker(self, command: str, ready: str, timeout: float = 60) -> ConcordProcess:
        """``concord projector`` or ``concord scheduler``; ready once ``ready`` is logged."""
        proc = self._process(command, [command], None)
        self.workers.append(proc)
        try:
            return proc.start_worker(ready, timeout)
        except NotReady as exc:
            raise RuntimeError(str(exc)) from None

    @property
    def processes(self) -> list[ConcordProcess]:
        return [*self.gateways, *self.workers]

    def check_alive(self) -> None:
        """Raise if a Concord process died (a crash is a finding, never a figure)."""
        for proc in self.processes:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited with {proc.returncode}:\n{proc.tail(60)}")

    async def lag(self) -> tuple[int, int]:
        """(events not yet projected, events not yet relayed), from PostgreSQL."""
        assert self.pool is not None
        return await lag_totals(self.pool)

    async def histogram(self, gateway: ConcordProcess, name: str) -> dict[float, float]:
        """The cumulative buckets (``le`` -> count) of a histogram on the gateway's
        /metrics (the gateway's own view, e.g. ``concord_fanout_seconds``)."""
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.get(
                f"{gateway.url}/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
            )
        buckets: dict[float, float] = {}
        prefix = f'{name}_bucket{{le="'
        for line in r.text.splitlines():
            if line.startswith(prefix):
                le = line[len(prefix) :].split('"', 1)[0]
                buckets[float(le)] = float(line.rsplit(" ", 1)[1])
        return buckets

    def stop(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(timeout=20)


async def create_database(server_dsn: str) -> str:
    name = f"concord_bench_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(server_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


async def drop_database(server_dsn: str, dsn: str) -> None:
    name = urlparse(dsn).path.lstrip("/")
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def delete_stream(nats_url: str, prefix: str) -> None:
    with contextlib.suppress(Exception):
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(Names(prefix).stream)
        finally:
            await nc.close()


@contextlib.asynccontextmanager
async def open_stack(
    args: argparse.Namespace,
    *,
    gateways: int = 1,
    projector: bool = True,
    scheduler: bool = True,
    nofile: int | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Services, a fresh migrated database, and the processes; all gone on exit."""
    scratch = _scratch_dir()
    try:
        with services(args.dsn, args.nats, scratch) as found:
            database_url = await create_database(found.server_dsn)
            stack = Stack(
                services=found,
                database_url=database_url,
                prefix=f"cb{secrets.token_hex(4)}",
                data_dir=scratch,
                extra_env=dict(env or {}),
                gateway_workers=args.gateway_workers,
            )
            failed = False
            try:
                stack.pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
                for _ in range(gateways):
                    await asyncio.to_thread(stack.start_gateway, nofile=nofile)
                if projector:
                    await asyncio.to_thread(stack.start_worker, "projector", "projector: running")
                if scheduler:
                    await asyncio.to_thread(stack.start_worker, "scheduler", "Concord scheduler")
                yield stack
            except BaseException:
                failed = True
                raise
            finally:
                await asyncio.to_thread(stack.stop)
                if stack.pool is not None:
                    await stack.pool.close()
                if failed or args.keep_logs:
                    _save_logs(stack, ROOT / "bench" / "out" / "logs")
                await delete_stream(found.nats_url, stack.prefix)
                await drop_database(found.server_dsn, database_url)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _scratch_dir() -> Path:
    made = Path(tempfile.mkdtemp(prefix="concord-bench-"))
    made.chmod(0o755)  # embedded PostgreSQL runs as another user when we are root
    return made


def _save_logs(stack: Stack, where: Path) -> None:
    target = where / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for proc in stack.processes:
        with contextlib.suppress(OSError):
            shutil.copy(proc.log, target / proc.log.name)
    print(f"process logs kept in {target}", file=sys.stderr)
