"""App assembly: ``create_app(settings)`` is the only place the gateway is wired together.

The asyncpg pool, the NATS connection, the event store and every other resource are
built and closed by the lifespan (``_resources``), never at module level; a handler
declares, as parameters, the ones it uses (gateway/context.py). Routes by responsibility:
``auth`` (accounts and sessions), ``devices``, ``spaces`` (membership and pending
invitations), ``invitations`` (accepting a code), ``sync_http``
(push and pull), ``reads``, ``operator``; ``errors`` renders every failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Literal

import asyncpg
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.response import Response

from core.events import Names
from core.keys import Purpose, derive
from core.natsbus import NatsBus
from core.settings import Settings
from core.wire import DependencyState, Readiness
from crdt import DEFAULT_SCHEMA
from eventstore.pools import open_pool
from gateway.auth import auth_router
from gateway.committed import Announcer, AnnouncingStore
from gateway.context import Resource, Resources, providers
from gateway.devices import devices_router
from gateway.errors import EXCEPTION_HANDLERS
from gateway.invitations import invitations_router
from gateway.limits import LoginThrottle, TokenBuckets
from gateway.openapi import add_links, openapi_config
from gateway.operator import operator_router
from gateway.options import GatewayOptions, options_from_env
from gateway.panel import panel_router
from gateway.params import JsonRequest, one_value_each
from gateway.passwords import Passwords
from gateway.reads import read_schema, spaces_reads_router
from gateway.requestlog import before_send, request_id_middleware
from gateway.revocation import RevocationCache
from gateway.sandbox import sandbox_router, sandbox_state
from gateway.series import sampling
from gateway.sessions import Sessions
from gateway.spaces import spaces_router
from gateway.sync_http import sync_router
from gateway.tokens import AccessTokens, RefreshTokens
from gateway.ws.feed import FeedHub
from gateway.ws.registry import Registry, running
from gateway.ws.route import sync_socket


async def _connect(
    stack: contextlib.AsyncExitStack, settings: Settings, options: GatewayOptions
) -> tuple[asyncpg.Pool, NatsBus, AnnouncingStore]:
    """PostgreSQL, NATS, the announcer of what is committed and the event store, each
    closed by ``stack`` in reverse order (queued hints go out before NATS closes)."""
    assert settings.database_url, "URLs are resolved before create_app"
    assert settings.nats_url, "URLs are resolved before create_app"
    pool = await open_pool(settings.database_url, min_size=1, max_size=10, command_timeout=30)
    stack.push_async_callback(pool.close)
    # No echo: what this gateway publishes it has already handed to itself in memory
    # (gateway/committed.py; a revocation is learnt before it is broadcast).
    bus = NatsBus(
        settings.nats_url, prefix=settings.nats_prefix, name="concord-gateway", echo=False
    )
    await bus.start()
    stack.push_async_callback(bus.close)
    announcer = Announcer(bus, settings.nats_prefix, publish=options.publish_hints)
    await announcer.start()
    stack.push_async_callback(announcer.close)
    store = AnnouncingStore(
        pool,
        announcer=announcer,
        schema=DEFAULT_SCHEMA,
        secret_key=settings.require_secret_key(),
        limits=options.limits,
    )
    await store.start()
    stack.push_async_callback(store.close)
    return pool, bus, store


async def _security(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    options: GatewayOptions,
    pool: asyncpg.Pool,
    bus: NatsBus,
) -> tuple[Passwords, RevocationCache]:
    """The password hasher pool and the revocation cache."""
    passwords = Passwords(
        workers=options.hash_workers,
        queue=options.hash_queue,
        time_cost=options.argon2_time_cost,
        memory_cost=options.argon2_memory_cost,
        parallelism=options.argon2_parallelism,
    )
    stack.callback(passwords.close)
    await passwords.warm()
    revocations = RevocationCache(
        pool,
        bus,
        Names(settings.nats_prefix).revocations,
        horizon_seconds=settings.access_token_ttl + 60,
        refresh_seconds=options.revocation_refresh_seconds,
    )
    await revocations.start()
    stack.push_async_callback(revocations.close)
    return passwords, revocations


async def _websockets(
    stack: contextlib.AsyncExitStack,
    options: GatewayOptions,
    pool: asyncpg.Pool,
    bus: NatsBus,
    store: AnnouncingStore,
    revocations: RevocationCache,
) -> Registry:
    """The WebSocket layer: its registry of connections and feeds (gateway/ws/), closed
    first (after its drain, ``before_shutdown``)."""
    hub = FeedHub(store=store, bus=bus, pool=pool, safety_interval=options.feed_safety_interval)
    registry = Registry(
        hub,
        store=store,
        bus=bus,
        announcer=store.announcer,
        revocations=revocations,
        limits=options.limits,
        send_queue=options.ws_send_queue,
        send_timeout=options.ws_send_timeout,
    )
    return await stack.enter_async_context(running(registry))


async def _build(
    stack: contextlib.AsyncExitStack, settings: Settings, options: GatewayOptions
) -> Resources:
    pool, bus, store = await _connect(stack, settings, options)
    passwords, revocations = await _security(stack, settings, options, pool, bus)
    secret = settings.require_secret_key()
    access = AccessTokens(
        derive(secret, Purpose.ACCESS_TOKEN),
        settings.access_token_ttl,
        legacy_key=secret.encode(),
    )
    sessions = Sessions(
        pool=pool,
        store=store,
        passwords=passwords,
        access=access,
        refresh_tokens=RefreshTokens(derive(secret, Purpose.REFRESH_TOKEN)),
        revocations=revocations,
        refresh_ttl=settings.refresh_token_ttl,
        grace_seconds=options.refresh_grace_seconds,
    )
    series = await stack.enter_async_context(sampling(pool))
    throttle = LoginThrottle(
        address_attempts=options.login_address_attempts,
        address_window=options.login_address_window,
        pair_failures=options.login_pair_failures,
        pair_window=options.login_pair_window,
        account_failures=options.login_account_failures,
        account_window=options.login_account_window,
        delay_base=options.login_delay_base_seconds,
        delay_max=options.login_delay_max_seconds,
    )
    return Resources(
        settings=settings,
        limits=options.limits,
        pool=pool,
        bus=bus,
        store=store,
        schema=DEFAULT_SCHEMA,
        access=access,
        revocations=revocations,
        sessions=sessions,
        login_throttle=throttle,
        push_buckets=TokenBuckets(options.push_rate, options.push_burst),
        series=series,
        registry=await _websockets(stack, options, pool, bus, store, revocations),
    )


@contextlib.asynccontextmanager
async def _resources(app: Litestar) -> AsyncIterator[None]:
    """Every resource of the app (``Resources``), built here and closed here, in reverse
    order; handlers get them through ``gateway.context.providers``."""
    async with contextlib.AsyncExitStack() as stack:
        app.state.resources = await _build(stack, app.state.settings, app.state.options)
        yield


async def before_shutdown(app: Litestar) -> None:
    """What the server runs before its own shutdown (concord/serve.py): the WebSocket
    layer stops taking connections, lets pushes in flight answer and closes its sockets
    with 1001. Nothing to do when the lifespan never started."""
    resources: Resources | None = app.state.get("resources")
    if resources is not None:
        await resources.registry.shutdown()


@get("/healthz", sync_to_thread=False, tags=["health"])
def healthz() -> dict[str, str | int]:
    """Process up: answers 200 at once, touches no dependency. ``pid`` names the process,
    so whoever started it can tell that the server answering is that one."""
    return {"status": "ok", "pid": os.getpid()}


@get(
    "/readyz",
    tags=["health"],
    responses={503: ResponseSpec(Readiness, description="PostgreSQL does not answer")},
)
async def readyz(pool: Resource[asyncpg.Pool], bus: Resource[NatsBus]) -> Response[Readiness]:
    """200 while PostgreSQL answers (``degraded`` when NATS is down), 503 otherwise."""
    deps: dict[str, DependencyState] = {}
    try:
        async with pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
        deps["postgres"] = DependencyState(status="ok")
    except Exception as exc:  # any failure means: not ready
        deps["postgres"] = DependencyState(status="down", detail=type(exc).__name__)
    deps["nats"] = DependencyState(status="ok" if bus.connected else "degraded")
    if deps["postgres"].status == "down":
        return Response(Readiness(status="down", dependencies=deps), status_code=503)
    overall: Literal["ok", "degraded"] = "ok" if bus.connected else "degraded"
    return Response(Readiness(status=overall, dependencies=deps), status_code=200)


def create_app(settings: Settings, *, options: GatewayOptions | None = None) -> Litestar:
    """The gateway application for ``settings``; ``options`` default to
    ``CONCORD_TEST_GATEWAY_OPTIONS`` or the built-in values."""
    chosen = options if options is not None else options_from_env(os.environ)
    # The sandbox's routes exist only when it is on (docs/sandbox.md): off, they are 404.
    sandbox = [sandbox_router()] if settings.sandbox else []
    state = {"settings": settings, "options": chosen, **(sandbox_state() if sandbox else {})}

    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            auth_router,
            devices_router,
            spaces_router,
            invitations_router,
            spaces_reads_router,
            sync_router,
            read_schema,
            operator_router,
            sync_socket,
            panel_router,
            *sandbox,
        ],
        lifespan=[_resources],
        state=State(state),
        dependencies=providers(),
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_id_middleware],
        before_request=one_value_each,  # a query parameter given twice is 400
        before_send=[before_send],
        request_max_body_size=chosen.limits.max_message_bytes,
        request_class=JsonRequest,  # an unpaired surrogate escape named as such
        openapi_config=openapi_config(),
        logging_config=None,
    )
    add_links(app)
    return app
