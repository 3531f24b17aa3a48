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
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import nats
import nats.js.errors
import pytest
import structlog
from nats.js.api import StreamInfo

from concord.embedded import EmbeddedNats, EmbeddedPostgres
from concord.logs import configure_logging
from core.natsbus import NatsBus
from core.settings import Settings
from eventstore.migrations import discover, migrate
from tests.property import profiles  # noqa: F401  (registers `ci`/`thorough` for any run)

if TYPE_CHECKING:  # the mutation runner imports this module: no store at its start
    from eventstore.postgres import PostgresEventStore

TEST_SECRET = "test-secret-key-0123456789abcdef-0123456789"
TEST_ADMIN_TOKEN = "test-admin-token"
#: The stream cap of test deployments: JetStream reserves it per stream, and a run makes
#: several; the production default (1 GiB each) would exhaust a small server.
TEST_STREAM_MAX_BYTES = 64 << 20


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
    prefix = f"{TEST_PREFIX}{secrets.token_hex(4)}"
    asyncio.run(_delete_streams(nats_url, _stale))
    try:
        yield Services(server_dsn, nats_url, prefix)
    finally:
        asyncio.run(
            _delete_streams(nats_url, lambda info: (info.config.name or "").startswith(prefix))
        )
        for service in reversed(started):
            service.stop()


#: The first token of every test run's NATS prefix; a test that needs a deployment of its
#: own on the run's NATS server extends the run's prefix (``own_prefix``), so the run's
#: teardown finds its stream too.
TEST_PREFIX = "ct"
#: Test streams older than this are leftovers of runs that were killed before their
#: teardown: each holds a JetStream storage reservation until it is deleted, and enough
#: of them make the server refuse new streams ("insufficient storage resources").
STALE_AFTER = dt.timedelta(hours=3)
#: Streams of test runs and of benchmarks (``ct…``; ``sb``/``lb``/``pn``/``cb``/``bench``
#: prefixes of tests and benchmarks of earlier versions).
_TEST_STREAM = re.compile(
    rf"(?:(?:{TEST_PREFIX}|cb|sb|lb|pn)[0-9a-f]{{6,8}}|bench[0-9a-f]{{6}})\w*_LOG"
)


def own_prefix(settings: Settings, tag: str) -> str:
    """A NATS prefix of the run's, for a test's own deployment (``tag``: letters)."""
    return f"{settings.nats_prefix}{tag}{secrets.token_hex(3)}"


def _stale(info: StreamInfo) -> bool:
    created = info.created
    return (
        _TEST_STREAM.fullmatch(info.config.name or "") is not None
        and created is not None
        and dt.datetime.now(dt.UTC) - created > STALE_AFTER
    )


async def _delete_streams(nats_url: str, doomed: Callable[[StreamInfo], bool]) -> None:
    """Leave nothing of a run on a shared NATS server: delete the streams ``doomed``
    picks (this run's at its end; killed runs' leftovers at a start)."""
    try:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception:  # the server is gone: nothing to clean
        return
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and doomed(info):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(info.config.name)
    finally:
        await nc.close()


async def create_database(server_dsn: str, *, migrated: bool = True, options: str = "") -> str:
    """Create a uniquely named database (migrated unless told otherwise); return its DSN.

    A migrated one is a copy of the server's template of the current migrations
    (``_template``): one CREATE DATABASE instead of a CREATE and every migration.
    ``options`` are CREATE DATABASE's own (``TEMPLATE template0 LOCALE ...``), for an
    unmigrated database only: a copy of the template keeps the template's locale."""
    if options and migrated:
        raise ValueError("options are for an unmigrated database (migrated=False)")
    name = f"concord_t_{secrets.token_hex(6)}"
    template = await _template(server_dsn) if migrated else None
    admin = await asyncpg.connect(server_dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else f" {options}" if options else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return _with_database(server_dsn, name)


#: Session advisory lock key of the template's creation (any constant; "cntpl").
_TEMPLATE_LOCK = 0x636E74706C
_templates: dict[str, str] = {}


async def _template(server_dsn: str) -> str:
    """The server's migrated template database for the current migrations, made on first
    use and kept (``concord_tpl_<digest of the migrations>``; a change to the migrations
    makes another). Made under another name, then renamed: a template that exists is
    complete, whoever made it (another run, another checkout) and however it ended (the
    lock is per database: runs naming another server database may build one each).
    Nothing connects to it afterwards (``ALLOW_CONNECTIONS false``): PostgreSQL copies a
    database only while nobody is connected to it."""
    if server_dsn in _templates:
        return _templates[server_dsn]
    digest = hashlib.sha256(
        "".join(f"{m.version}:{m.name}:{m.checksum}\n" for m in discover()).encode()
    ).hexdigest()[:16]
    name = f"concord_tpl_{digest}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", _TEMPLATE_LOCK)
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            building = f"concord_tplb_{secrets.token_hex(6)}"
            await admin.execute(f'CREATE DATABASE "{building}"')
            conn = await asyncpg.connect(_with_database(server_dsn, building))
            try:
                await migrate(conn)
            finally:
                await conn.close()
            try:
                await admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
            except asyncpg.DuplicateDatabaseError:  # made meanwhile under another lock
                await admin.execute(f'DROP DATABASE "{building}"')
            else:
                await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    finally:
        await admin.close()  # ends the session: the lock goes with it
    _templates[server_dsn] = name
    return name


async def drop_database(server_dsn: str, dsn: str) -> None:
    name = dsn.partition("?")[0].rpartition("/")[2]
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


#: Names a migrated database on the test server that the run uses as its own, neither
#: created nor dropped: a mutation run makes one for all its mutants (tests/mutation/run.py),
#: instead of one per mutant. Unset, each run makes its own.
SHARED_DATABASE_ENV = "CONCORD_TEST_SHARED_DATABASE"


@contextlib.contextmanager
def local_zone(name: str) -> Iterator[None]:
    """The process's local time zone set to ``name`` (an IANA name, through ``TZ``) inside
    the block: what a writer that takes a naive or local time would show."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def sample(name: str, **labels: str) -> float:
    """The current value of a Prometheus sample of this process (0 before its first)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


#: The variable, and its value, that serve the end-to-end tests' gateways in the test
#: process instead of as processes (tests/e2e/harness.py; the mutation runner sets it).
IN_PROCESS_ENV = "CONCORD_TEST_GATEWAY"
IN_PROCESS = "in-process"


@pytest.fixture(scope="session")
async def database_url(services: Services) -> AsyncIterator[str]:
    """This run's migrated database, shared by the run's tests (they use their own spaces)."""
    shared = os.environ.get(SHARED_DATABASE_ENV)
    if shared:
        yield _with_database(services.server_dsn, shared)
        return
    dsn = await create_database(services.server_dsn)
    yield dsn
    await drop_database(services.server_dsn, dsn)


@pytest.fixture
async def fresh_database(services: Services) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """A factory of extra databases for tests that need an empty or unmigrated one."""
    made: list[str] = []

    async def make(*, migrated: bool = True, options: str = "") -> str:
        dsn = await create_database(services.server_dsn, migrated=migrated, options=options)
        made.append(dsn)
        return dsn

    yield make
    for dsn in made:
        await drop_database(services.server_dsn, dsn)


@pytest.fixture
async def fresh_pool(
    fresh_database: Callable[..., Awaitable[str]],
) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a migrated database of the test's own: for tests that change tables
    behind the store's back (triggers off) or read every space."""
    pg_pool = await asyncpg.create_pool(await fresh_database(), min_size=1, max_size=3)
    try:
        yield pg_pool
    finally:
        await pg_pool.close()


@dataclass
class FreshStore:
    """A migrated database of the test's own (``pool``) and an event store on it."""

    pool: asyncpg.Pool
    store: PostgresEventStore


@pytest.fixture
async def fresh_store(fresh_pool: asyncpg.Pool) -> AsyncIterator[FreshStore]:
    """An event store on a database of the test's own, where no projector runs: the
    test alone decides what is projected."""
    from eventstore.postgres import PostgresEventStore

    async with PostgresEventStore(fresh_pool, secret_key=TEST_SECRET) as store:
        yield FreshStore(fresh_pool, store)


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pg_pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    assert pg_pool is not None
    yield pg_pool
    await pg_pool.close()


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[NatsBus]:
    """A connected ``NatsBus`` on the test run's NATS, with the run's prefix."""
    nats_bus = NatsBus(settings.nats_url or "", prefix=settings.nats_prefix, name="test")
    await nats_bus.start()
    assert await nats_bus.wait_connected(10)
    yield nats_bus
    await nats_bus.close()


@pytest.fixture(scope="session")
def settings(services: Services, database_url: str) -> Settings:
    """Settings pointing at this run's database, NATS and prefix."""
    return Settings(
        database_url=database_url,
        nats_url=services.nats_url,
        nats_prefix=services.prefix,
        nats_stream_max_bytes=TEST_STREAM_MAX_BYTES,
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
        CONCORD_NATS_STREAM_MAX_BYTES=str(settings.nats_stream_max_bytes),
        CONCORD_SECRET_KEY=settings.secret_key or "",
        CONCORD_ADMIN_TOKEN=settings.admin_token or "",
        CONCORD_DATA_DIR=str(settings.data_dir),
        # Test processes share two busy cores with the suite's other workers: a projector
        # at a lower priority would only make waits for the read model longer. The
        # default (10) is tested by test_dev_process and test_projector_cli.
        CONCORD_PROJECTOR_NICE="0",
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


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The project's logging as a process configures it (JSON, at info), into a buffer
    the test reads; restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", json=True)
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)
    structlog.reset_defaults()


def logged(buffer: io.StringIO) -> list[dict[str, Any]]:
    """The lines ``json_logs`` caught so far, parsed."""
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


@contextlib.contextmanager
def logs_of(buffer: io.StringIO) -> Iterator[list[dict[str, Any]]]:
    """The lines ``json_logs`` catches within the block, parsed (filled as it ends).

    Not ``structlog.testing.capture_logs``: it cannot see a module's logger that was
    cached (``cache_logger_on_first_use``) by an earlier test of the same process, so
    its tests passed or failed by the order they ran in."""
    start = len(buffer.getvalue())
    caught: list[dict[str, Any]] = []
    yield caught
    caught.extend(json.loads(line) for line in buffer.getvalue()[start:].splitlines())


def has_line(lines: list[dict[str, Any]], **fields: Any) -> bool:
    """True when one of ``lines`` holds every one of ``fields``."""
    return any(all(line.get(k) == v for k, v in fields.items()) for line in lines)
