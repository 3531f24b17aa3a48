"""Operator routes: ``/metrics``, ``/v1/diagnostics`` (JSON), ``/diagnostics`` (HTML).

They need ``Authorization: Bearer <CONCORD_ADMIN_TOKEN>`` (compared in constant time);
user access tokens are refused with 401. They show counts and ids, never field values.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, Router, get
from litestar.di import NamedDependency, Provide

from core.errors import Unauthenticated
from core.metrics import (
    AUTH_FAILURES,
    CONFLICTS,
    IDEMPOTENCY_HITS,
    JOB_RUNS,
    OPS,
    OUTBOX_LAG,
    PROJECTOR_LAG,
    PROJECTOR_QUARANTINE,
    PROJECTOR_QUARANTINED,
    PUSH_SECONDS,
    REMINDER_BACKLOG_AGE,
    REMINDERS,
    WS_CONNECTIONS,
    Readings,
    render_metrics,
)
from core.natsbus import NatsBus
from core.settings import Settings
from gateway.context import Resource
from gateway.openapi import ADMIN_SECURITY, errors
from projector.readmodel import (
    QuarantinedEvent,
    SpaceLag,
    lag_by_space,
    lag_totals,
    quarantine_count,
    quarantined,
)
from scheduler.queries import SchedulerDiagnostics, scheduler_diagnostics

#: Litestar appends ``; charset=utf-8`` to text types.
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


class PushFigures(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    seconds_total: float


class BusFigures(msgspec.Struct, frozen=True, kw_only=True):
    connected: bool
    dropped_publishes: int


class Diagnostics(msgspec.Struct, frozen=True, kw_only=True):
    """Figures for each failure mode of docs/architecture.md: counts only, never values."""

    ops_by_status: dict[str, int]
    idempotency_hits_by_route: dict[str, int]
    conflicts_by_field: dict[str, int]
    auth_failures_by_reason: dict[str, int]
    ws_connections: int
    pushes: PushFigures
    reminders_by_outcome: dict[str, int]
    reminder_backlog_age_seconds: float
    scheduler_job_runs: dict[str, int]
    projector_lag_events: int
    outbox_lag_events: int
    bus: BusFigures
    #: From PostgreSQL, so right whichever process runs the scheduler: reminders by
    #: status, the due backlog and its age, dead reminders with their last error, and
    #: the latest job runs.
    scheduler: SchedulerDiagnostics | None = None
    #: Spaces whose read model or relay is behind their head, worst first (PostgreSQL).
    lag_by_space: list[SpaceLag] = msgspec.field(default_factory=list)
    #: Events the projector could not apply and set aside (PostgreSQL): left out of the
    #: read model, read from the log. Ids and error types only.
    projector_quarantined_events: int = 0
    #: Events quarantined by this process since it started (the counter).
    projector_quarantined_total: int = 0
    #: The latest quarantined events, newest first.
    quarantined_events: list[QuarantinedEvent] = msgspec.field(default_factory=list)


async def diagnostics(pool: asyncpg.Pool, bus: NatsBus) -> Diagnostics:
    """The figures of this process (its Prometheus registry), plus the scheduler's
    state read from PostgreSQL."""
    projector_lag, outbox_lag = await lag_totals(pool)
    quarantine, latest = await quarantined(pool, limit=20)
    PROJECTOR_QUARANTINE.set(quarantine)
    r = Readings()
    return Diagnostics(
        ops_by_status=r.by_labels(OPS, "status"),
        idempotency_hits_by_route=r.by_labels(IDEMPOTENCY_HITS, "route"),
        conflicts_by_field=r.by_labels(CONFLICTS, "entity_type", "field"),
        auth_failures_by_reason=r.by_labels(AUTH_FAILURES, "reason"),
        ws_connections=int(r.gauge_max(WS_CONNECTIONS)),
        pushes=PushFigures(
            count=int(r.total(PUSH_SECONDS, "_count")),
            seconds_total=r.total(PUSH_SECONDS, "_sum"),
        ),
        reminders_by_outcome=r.by_labels(REMINDERS, "outcome"),
        reminder_backlog_age_seconds=r.gauge_max(REMINDER_BACKLOG_AGE),
        scheduler_job_runs=r.by_labels(JOB_RUNS, "job", "outcome"),
        projector_lag_events=max(projector_lag, int(r.gauge_max(PROJECTOR_LAG))),
        outbox_lag_events=max(outbox_lag, int(r.gauge_max(OUTBOX_LAG))),
        bus=BusFigures(connected=bus.connected, dropped_publishes=bus.dropped),
        scheduler=await scheduler_diagnostics(pool),
        lag_by_space=await lag_by_space(pool, limit=20),
        projector_quarantined_events=quarantine,
        projector_quarantined_total=int(r.total(PROJECTOR_QUARANTINED, "_total")),
        quarantined_events=latest,
    )


async def require_admin(request: Request[Any, Any, Any], settings: Resource[Settings]) -> None:
    """The ``admin`` dependency: the operator's bearer token, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = settings.admin_token
    ok = (
        expected is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), expected.encode())
    )
    if not ok:
        raise Unauthenticated("operator routes need the admin token")


@get(
    "/metrics",
    media_type=PROMETHEUS_TEXT,
    responses=errors(401, 405),
    summary="Prometheus metrics",
)
async def metrics(admin: NamedDependency[None], pool: Resource[asyncpg.Pool]) -> Response[bytes]:
    """The Prometheus text exposition (format 0.0.4)."""
    # The quarantine is a fact of the database: whichever process is scraped reports it
    # (without PostgreSQL, the last figure stands).
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            PROJECTOR_QUARANTINE.set(await quarantine_count(pool))
    return Response(content=render_metrics(), media_type=PROMETHEUS_TEXT)


@get("/v1/diagnostics", responses=errors(401, 405), summary="Failure-mode figures (JSON)")
async def diagnostics_json(
    admin: NamedDependency[None], pool: Resource[asyncpg.Pool], bus: Resource[NatsBus]
) -> Diagnostics:
    """Counts for each failure mode: ops by status, idempotency hits, conflicts, auth
    failures, connections, reminders, lags."""
    return await diagnostics(pool, bus)


operator_router = Router(
    path="/",
    route_handlers=[metrics, diagnostics_json],
    dependencies={"admin": Provide(require_admin)},
    security=ADMIN_SECURITY,
    tags=["operator"],
)
