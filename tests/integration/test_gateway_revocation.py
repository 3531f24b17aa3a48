"""The revocation cache of each gateway (gateway/revocation.py) on real PostgreSQL and
NATS: a revocation made by one gateway reaches another by broadcast at once, or by its
re-read of ``token_revocations``; old entries age out."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from core.natsbus import NatsBus
from core.settings import Settings
from gateway.revocation import RevocationCache
from tests.conftest import has_line, logs_of
from tests.integration.test_projector_support import eventually

MakeCache = Callable[..., Awaitable[RevocationCache]]


@pytest.fixture
async def make_cache(
    pool: asyncpg.Pool, bus: NatsBus, settings: Settings
) -> AsyncIterator[MakeCache]:
    """Caches of one test share a subject of their own (as the gateways of a deployment
    share theirs)."""
    subject = f"{settings.nats_prefix}.test.revocations.{uuid.uuid4().hex}"
    made: list[RevocationCache] = []

    async def make(horizon: float = 3600.0, refresh: float = 3600.0) -> RevocationCache:
        cache = RevocationCache(
            pool, bus, subject, horizon_seconds=horizon, refresh_seconds=refresh
        )
        await cache.start()
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


def _ref() -> str:
    return str(uuid.uuid4())


async def _revoke_in_postgres(pool: asyncpg.Pool, ref: str, ago_seconds: float = 0) -> None:
    """A revocation committed by some gateway, ``ago_seconds`` before now."""
    await pool.execute(
        "INSERT INTO token_revocations (ref, kind, revoked_at)"
        " VALUES ($1::uuid, 'session', clock_timestamp() - make_interval(secs => $2))",
        ref,
        float(ago_seconds),
    )


async def test_an_announcement_reaches_the_other_gateways_at_once(
    make_cache: MakeCache, bus: NatsBus, settings: Settings
) -> None:
    here, there = await make_cache(), await make_cache()
    session, generation = _ref(), _ref()
    assert not await there.is_revoked(session)  # its one read of PostgreSQL, long ago
    await here.announce([session], [generation])
    assert await here.is_revoked(session)  # before the revoking request answers
    await eventually(lambda: there.is_revoked(session), within=5)
    assert await there.is_revoked(generation)
    # a malformed broadcast is ignored, and the next one still arrives
    await bus.publish(there.subject, b"not a revocation")
    later = _ref()
    await here.announce(token_ids=[later])
    await eventually(lambda: there.is_revoked(later), within=5)


async def test_a_revocation_missed_on_the_bus_is_read_from_postgres_within_the_refresh(
    make_cache: MakeCache, pool: asyncpg.Pool
) -> None:
    quick, slow = await make_cache(refresh=0.05), await make_cache()
    ref = _ref()
    assert not await quick.is_revoked(ref)
    assert not await slow.is_revoked(ref)
    await _revoke_in_postgres(pool, ref)
    await asyncio.sleep(0.1)
    assert await quick.is_revoked(ref)
    assert not await slow.is_revoked(ref)  # not re-read yet: its refresh is an hour


async def test_a_late_commit_is_still_read(make_cache: MakeCache, pool: asyncpg.Pool) -> None:
    """A revocation whose transaction took its time before its cache's last look, but
    committed after, is read all the same (the re-read overlaps the last one)."""
    cache = await make_cache(refresh=0.05)
    assert not await cache.is_revoked(_ref())
    late = _ref()
    await _revoke_in_postgres(pool, late, ago_seconds=5)
    await asyncio.sleep(0.1)
    assert await cache.is_revoked(late)


async def test_the_first_read_goes_back_an_access_tokens_lifetime(
    make_cache: MakeCache, pool: asyncpg.Pool
) -> None:
    old = _ref()
    await _revoke_in_postgres(pool, old, ago_seconds=2 * 3600)
    assert not await (await make_cache(horizon=3600)).is_revoked(old)
    assert await (await make_cache(horizon=3 * 3600)).is_revoked(old)


async def test_entries_older_than_the_horizon_are_dropped(make_cache: MakeCache) -> None:
    cache = await make_cache(horizon=1.0, refresh=0.05)
    assert not await cache.is_revoked(_ref())
    old, recent = _ref(), _ref()
    cache.learn([old])
    await asyncio.sleep(1.2)
    cache.learn([recent])
    assert await cache.is_revoked(recent)
    assert not await cache.is_revoked(old)


async def test_by_default_a_revocation_is_read_within_a_second(
    pool: asyncpg.Pool, bus: NatsBus, settings: Settings
) -> None:
    """The documented bound when NATS is down (docs/auth.md): the re-read runs at most
    once a second, and at least once a second while requests come."""
    cache = RevocationCache(pool, bus, f"{settings.nats_prefix}.test.{uuid.uuid4().hex}",
                            horizon_seconds=3600)  # fmt: skip
    ref = _ref()
    read_at = time.monotonic()
    assert not await cache.is_revoked(ref)
    await _revoke_in_postgres(pool, ref)
    if time.monotonic() - read_at < 0.9:  # (a machine this slow proves nothing here)
        assert not await cache.is_revoked(ref)  # read less than a second ago
    await asyncio.sleep(1.05)
    assert await cache.is_revoked(ref)


async def test_a_re_read_starts_from_the_newest_revocation_seen(
    fresh_pool: asyncpg.Pool, bus: NatsBus, settings: Settings
) -> None:
    """Each re-read asks only for rows newer than the last one seen (less an overlap for
    late commits), not for the whole horizon again. (A database of its own: every
    revocation of the test run's database would move the cursor.)"""
    subject = f"{settings.nats_prefix}.test.{uuid.uuid4().hex}"
    cache = RevocationCache(fresh_pool, bus, subject, horizon_seconds=3600, refresh_seconds=0.05)
    assert not await cache.is_revoked(_ref())
    first = cache._cursor
    assert first is not None  # the database's clock at the first read
    ref = _ref()
    await _revoke_in_postgres(fresh_pool, ref)
    await asyncio.sleep(0.1)
    assert await cache.is_revoked(ref)
    seen = await fresh_pool.fetchval(
        "SELECT revoked_at FROM token_revocations WHERE ref = $1::uuid", ref
    )
    assert cache._cursor == seen > first
    await asyncio.sleep(0.1)
    assert not await cache.is_revoked(_ref())
    assert cache._cursor == seen  # nothing newer: it stays


async def test_a_malformed_broadcast_is_logged_and_ignored(
    make_cache: MakeCache, bus: NatsBus, json_logs: io.StringIO
) -> None:
    here, there = await make_cache(), await make_cache()
    with logs_of(json_logs) as logs:
        await bus.publish(there.subject, b"not a revocation")
        ref = _ref()
        await here.announce([ref])
        await eventually(lambda: there.is_revoked(ref), within=5)
    assert has_line(
        logs, event="malformed revocation broadcast", subject=there.subject, level="warning"
    )


async def test_a_closed_cache_hears_no_more(make_cache: MakeCache) -> None:
    here, there, witness = await make_cache(), await make_cache(), await make_cache()
    await there.close()
    ref = _ref()
    await here.announce([ref])
    await eventually(lambda: witness.is_revoked(ref), within=5)
    assert not await there.is_revoked(ref)
    await there.close()  # twice is harmless
