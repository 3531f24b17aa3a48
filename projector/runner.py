"""Run the projector and the outbox relay: in their own process, or inside ``concord dev``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from core.natsbus import NatsBus
from core.settings import Settings
from projector.relay import Relay
from projector.service import Projector, ProjectorOptions
from projector.stream import Names

log = logging.getLogger("concord.projector")
STOP_TIMEOUT = 10.0


@dataclass
class Running:
    """The live parts of a running projector service (tests look inside)."""

    pool: asyncpg.Pool
    bus: NatsBus
    projector: Projector
    relay: Relay


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r", task.get_name(), task.exception())


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    *,
    options: ProjectorOptions | None = None,
    relay: bool = True,
    relay_interval: float = 0.2,
) -> AsyncIterator[Running]:
    """Projector (and relay) tasks with their own pool and NATS connection, stopped on exit."""
    if not settings.database_url or not settings.nats_url:
        raise ValueError("the projector needs CONCORD_DATABASE_URL and CONCORD_NATS_URL")
    options = options or ProjectorOptions(tick_interval=settings.projector_tick_seconds)
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=options.concurrency + 3, command_timeout=60
    )
    bus = NatsBus(settings.nats_url, prefix=settings.nats_prefix, name="concord-projector")
    await bus.start()
    names = Names(settings.nats_prefix, stream_max_bytes=settings.nats_stream_max_bytes)
    parts = Running(
        pool=pool,
        bus=bus,
        projector=Projector(pool, bus, names, settings.database_url, options),
        relay=Relay(pool, bus, names, interval=relay_interval),
    )
    tasks = [asyncio.create_task(parts.projector.run(), name="projector")]
    if relay:
        tasks.append(asyncio.create_task(parts.relay.run(), name="relay"))
    for task in tasks:
        task.add_done_callback(_report)
    try:
        yield parts
    finally:
        for task in tasks:
            task.cancel()
        # Bounded: a stop must never hang on a task that lost its cancellation.
        _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        if stuck:
            log.error("stopping without %s", sorted(t.get_name() for t in stuck))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bus.close(), STOP_TIMEOUT)
        try:
            await asyncio.wait_for(pool.close(), STOP_TIMEOUT)
        except TimeoutError:
            pool.terminate()


@contextlib.asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[None]:
    """The projector and relay inside another program's lifespan (the reminder lateness
    benchmark); ``concord dev`` runs ``concord projector`` as a process instead."""
    async with running(settings):
        yield
