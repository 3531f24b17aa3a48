"""App assembly: ``create_app(settings)`` is the only place the gateway is wired together.

The asyncpg pool and the NATS connection live in lifespan context managers, never at
module level.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal

import asyncpg
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.response import Response

from core.natsbus import NatsBus
from core.settings import Settings
from core.wire import DependencyState, Readiness


@contextlib.asynccontextmanager
async def _resources(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    assert settings.database_url, "URLs are resolved before create_app"
    assert settings.nats_url, "URLs are resolved before create_app"
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=10, command_timeout=30
    )
    bus = NatsBus(settings.nats_url, prefix=settings.nats_prefix, name="concord-gateway")
    await bus.start()
    app.state.pool = pool
    app.state.bus = bus
    try:
        yield
    finally:
        await bus.close()
        await pool.close()


@get("/healthz", include_in_schema=True, sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Process up: answers 200 at once, touches no dependency."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(state: State) -> Response[Readiness]:
    """200 while PostgreSQL answers (``degraded`` when NATS is down), 503 otherwise."""
    deps: dict[str, DependencyState] = {}
    try:
        async with state.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
        deps["postgres"] = DependencyState(status="ok")
    except Exception as exc:  # any failure means: not ready
        deps["postgres"] = DependencyState(status="down", detail=type(exc).__name__)
    bus: NatsBus = state.bus
    deps["nats"] = DependencyState(status="ok" if bus.connected else "degraded")
    if deps["postgres"].status == "down":
        return Response(Readiness(status="down", dependencies=deps), status_code=503)
    overall: Literal["ok", "degraded"] = "ok" if bus.connected else "degraded"
    return Response(Readiness(status=overall, dependencies=deps), status_code=200)


def create_app(
    settings: Settings, *, workers: Sequence[AbstractAsyncContextManager[None]] = ()
) -> Litestar:
    """The gateway application for ``settings``; ``workers`` (the projector and scheduler
    of ``concord dev``) run inside its lifespan, after its resources are up."""

    @contextlib.asynccontextmanager
    async def _workers(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            yield

    return Litestar(
        route_handlers=[healthz, readyz],
        lifespan=[_resources, _workers],
        state=State({"settings": settings}),
    )
