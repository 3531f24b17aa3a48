"""The outbox relay on real PostgreSQL and NATS: committed events reach the log stream in
seq order, once, even when nobody published a hint and even across a NATS outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import nats.js.errors
import pytest
from nats.js.api import StreamConfig

import concord.embedded
from concord.embedded import EmbeddedNats
from core.settings import Settings, with_overrides
from eventstore.postgres import PostgresEventStore
from projector.readmodel import lag_by_space
from projector.runner import running
from projector.service import ProjectorOptions
from projector.stream import Names
from tests.conftest import TEST_SECRET
from tests.integration.test_projector_support import (
    assert_matches_replay,
    caught_up,
    delete_stream,
    eventually,
    head,
    increments,
    new_space,
    stream_seqs,
)


@pytest.fixture(scope="module", autouse=True)
async def _drop_stream(settings: Settings) -> AsyncIterator[None]:
    yield
    await delete_stream(settings.nats_url or "", Names(settings.nats_prefix))


@pytest.fixture(scope="module")
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def _outbox_empty(pool: asyncpg.Pool, space: str) -> bool:
    left = await pool.fetchval("SELECT count(*) FROM outbox WHERE space_id = $1", space)
    return bool(left == 0)


async def test_committed_events_without_a_hint_are_relayed(
    pool: asyncpg.Pool, store: PostgresEventStore, settings: Settings
) -> None:
    """A gateway killed between COMMIT and its publish: the events are committed and no
    hint went out. The relay alone publishes them, within its interval."""
    names = Names(settings.nats_prefix)
    space, owner = await new_space(store)
    await increments(store, space, owner, 30)
    async with running(settings, relay_interval=0.2) as service:
        await eventually(lambda: _outbox_empty(pool, space), within=30)
        assert service.relay.published >= 31
    seqs = await stream_seqs(settings.nats_url or "", names, space, 31)
    assert seqs == list(range(1, 32))
    published = await pool.fetchval(
        "SELECT published_seq FROM outbox_cursors WHERE space_id = $1", space
    )
    assert published == 31


async def test_republished_events_are_dropped_by_message_id(
    pool: asyncpg.Pool, store: PostgresEventStore, settings: Settings
) -> None:
    """A relay that published, then crashed before COMMIT, publishes again: the stream
    keeps one copy of each event (its duplicate window)."""
    names = Names(settings.nats_prefix)
    space, owner = await new_space(store)
    await increments(store, space, owner, 10)
    async with running(settings, relay_interval=0.05):
        await eventually(lambda: _outbox_empty(pool, space), within=30)
        # Undo the relay's commit, as if it had crashed right before it.
        await pool.execute("UPDATE outbox_cursors SET published_seq = 0 WHERE space_id = $1", space)
        await pool.execute("INSERT INTO outbox (space_id, head) VALUES ($1, 11)", space)
        await eventually(lambda: _outbox_empty(pool, space), within=30)
    assert await stream_seqs(settings.nats_url or "", names, space, 22) == list(range(1, 12))


async def test_nats_outage_loses_nothing(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NATS stops while events are appended: the projector catches up from PostgreSQL,
    the outbox keeps what was not relayed, and once NATS is back the relay publishes it."""
    nats_server = EmbeddedNats(tmp_path)
    url = nats_server.start()
    own = with_overrides(settings, nats_url=url, nats_prefix=f"{settings.nats_prefix}o")
    names = Names(own.nats_prefix)
    space, owner = await new_space(store)
    options = ProjectorOptions(tick_interval=0.3)
    try:
        async with running(own, options=options, relay_interval=0.05) as service:
            await increments(store, space, owner, 50)
            await caught_up(pool, [space], within=10)
            await eventually(lambda: _outbox_empty(pool, space), within=10)
            nats_server.stop()
            await increments(store, space, owner, 200)
            # The read model follows from PostgreSQL alone; the relay holds its rows.
            await caught_up(pool, [space], within=15)
            assert not await _outbox_empty(pool, space)
            lag = {x.space_id: x for x in await lag_by_space(pool)}[space]
            assert (lag.projector_lag, lag.outbox_lag) == (0, 200)
            # Restart on the same port (the clients reconnect to the URL they know).
            port = nats_server.port
            monkeypatch.setattr(concord.embedded, "free_port", lambda *_, **__: port)
            assert nats_server.start() == url
            await eventually(lambda: _outbox_empty(pool, space), within=20)
            assert service.bus.connected
        total = await head(pool, space)
        assert total == 251
        assert await stream_seqs(url, names, space, total) == list(range(1, total + 1))
        await assert_matches_replay(pool, store, [space])
    finally:
        await delete_stream(url, names)
        nats_server.stop()


async def test_relay_skips_spaces_another_relay_holds(
    pool: asyncpg.Pool, store: PostgresEventStore, settings: Settings
) -> None:
    """Two relays never publish one space at once: the cursor row lock is SKIP LOCKED."""
    space, owner = await new_space(store)
    await increments(store, space, owner, 5)
    async with running(settings, relay_interval=0.05):
        async with pool.acquire() as holder, holder.transaction():
            await holder.execute(
                "SELECT 1 FROM outbox_cursors WHERE space_id = $1 FOR UPDATE", space
            )
            await asyncio.sleep(0.5)  # several relay cycles
            cursor = await pool.fetchval(
                "SELECT published_seq FROM outbox_cursors WHERE space_id = $1", space
            )
            assert cursor == 0  # untouched while another relay holds it
            assert not await _outbox_empty(pool, space)
        await eventually(lambda: _outbox_empty(pool, space), within=30)


async def test_the_stream_is_made_with_the_configured_cap(settings: Settings) -> None:
    """``CONCORD_NATS_STREAM_MAX_BYTES`` is the stream's ``max_bytes``: JetStream reserves
    it up front, and leaked 1 GiB reservations once made a CI server refuse every new
    stream ("insufficient storage resources available")."""
    assert settings.nats_stream_max_bytes != Settings().nats_stream_max_bytes
    async with running(settings, relay_interval=0.2):
        config = await eventually_config(settings)
    assert config.max_bytes == settings.nats_stream_max_bytes


async def eventually_config(settings: Settings) -> StreamConfig:
    nc = await nats.connect(settings.nats_url or "")
    try:
        js = nc.jetstream()
        for _ in range(600):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                return (await js.stream_info(Names(settings.nats_prefix).stream)).config
            await asyncio.sleep(0.05)
        raise AssertionError("the relay never made the stream")
    finally:
        await nc.close()
