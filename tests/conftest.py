"""Fixtures on real services: PostgreSQL and NATS, never mocks.

``CONCORD_TEST_DATABASE_URL`` / ``CONCORD_TEST_NATS_URL`` name the machine's services
(CI sets them); unset, an embedded PostgreSQL and nats-server are started for the
run. Either way each run (each xdist worker) gets its own freshly created database,
dropped at the end, and its own NATS subject/stream prefix, so runs never see each
other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import nats.js.errors
import pytest

from concord.embedded import EmbeddedNats, EmbeddedPostgres
from core.settings import Settings
from eventstore.migrations import migrate
from projector.stream import Names
from tests.property import profiles  # noqa: F401  (registers `ci`/`thorough` for any run)

TEST_SECRET = "test-secret-key-0123456789abcdef-0123456789"
TEST_ADMIN_TOKEN = "test-admin-token"


@dataclass(frozen=True)
class Services:
    """Where this run's services are: a server DSN (any database) and a NATS URL."""

    server_dsn: str
    nats_url: str
    prefix: str


def _with_database(dsn: str, database: str) -> str:
    base, _, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{database}" + (f"?{query}" if query else "")


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A private directory outside pytest's basetemp, for embedded PostgreSQL data.

    As root, PostgreSQL runs as user ``pgserver``, which must traverse the path; pytest
    resets ``/tmp/pytest-of-<user>`` to mode 0700 whenever any pytest process starts,
    which would lock a running server out of its own data directory."""
    path = Path(tempfile.mkdtemp(prefix="concord-scratch-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    started: list[EmbeddedPostgres | EmbeddedNats] = []
    scratch = Path(tempfile.mkdtemp(prefix="concord-test-"))
    server_dsn = os.environ.get("CONCORD_TEST_DATABASE_URL")
    if not server_dsn:
        pg = EmbeddedPostgres(scratch)
        server_dsn = pg.start()
        started.append(pg)
    nats_url = os.environ.get("CONCORD_TEST_NATS_URL")
    if not nats_url:
        nats = EmbeddedNats(scratch)
        nats_url = nats.start()
        started.append(nats)
    prefix = f"ct{secrets.token_hex(4)}"
    try:
        yield Services(server_dsn, nats_url, prefix)
    finally:
        asyncio.run(_delete_stream(nats_url, Names(prefix).stream))
        for service in reversed(started):
            service.stop()


async def _delete_stream(nats_url: str, stream: str) -> None:
    """Leave nothing of this run on a shared NATS server (the projector's log stream)."""
    try:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception:  # the server is gone: nothing to clean
        return
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def create_database(server_dsn: str, *, migrated: bool = True) -> str:
    """Create a uniquely named database (migrated unless told otherwise); return its DSN."""
    name = f"concord_t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(server_dsn, name)
    if migrated:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    return dsn


async def drop_database(server_dsn: str, dsn: str) -> None:
    name = dsn.partition("?")[0].rpartition("/")[2]
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def database_url(services: Services) -> AsyncIterator[str]:
    """This run's migrated database, shared by the run's tests (they use their own spaces)."""
    dsn = await create_database(services.server_dsn)
    yield dsn
    await drop_database(services.server_dsn, dsn)


@pytest.fixture
async def fresh_database(services: Services) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """A factory of extra databases for tests that need an empty or unmigrated one."""
    made: list[str] = []

    async def make(*, migrated: bool = True) -> str:
        dsn = await create_database(services.server_dsn, migrated=migrated)
        made.append(dsn)
        return dsn

    yield make
    for dsn in made:
        await drop_database(services.server_dsn, dsn)


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pg_pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    assert pg_pool is not None
    yield pg_pool
    await pg_pool.close()


@pytest.fixture(scope="session")
def settings(services: Services, database_url: str) -> Settings:
    """Settings pointing at this run's database, NATS and prefix."""
    return Settings(
        database_url=database_url,
        nats_url=services.nats_url,
        nats_prefix=services.prefix,
        secret_key=TEST_SECRET,
        admin_token=TEST_ADMIN_TOKEN,
        data_dir=Path(tempfile.mkdtemp(prefix="concord-data-")),
    )


def service_env(settings: Settings) -> dict[str, str]:
    """Environment for a server subprocess using this run's services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    env.update(
        CONCORD_DATABASE_URL=settings.database_url or "",
        CONCORD_NATS_URL=settings.nats_url or "",
        CONCORD_NATS_PREFIX=settings.nats_prefix,
        CONCORD_SECRET_KEY=settings.secret_key or "",
        CONCORD_ADMIN_TOKEN=settings.admin_token or "",
        CONCORD_DATA_DIR=str(settings.data_dir),
    )
    return env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/integration and tests/e2e (and tests/adversarial, which starts
    servers too) carry their marker automatically."""
    for item in items:
        path = str(item.path)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif f"{os.sep}e2e{os.sep}" in path or f"{os.sep}adversarial{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)
