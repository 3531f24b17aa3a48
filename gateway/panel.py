"""The diagnostics page: ``GET /diagnostics`` (static HTML, CSS, JavaScript; no build step),
``GET /v1/diagnostics/activity`` (the recent activity it shows beside the counters of
``GET /v1/diagnostics``) and ``GET /v1/diagnostics/series`` (its 15-minute charts).

Every route needs the admin token (``Authorization: Bearer <CONCORD_ADMIN_TOKEN>``),
except the static assets. The page takes the token from ``?token=`` (then drops it from
the address bar) or from its sign-in box (a browser without the token gets the page as
a 401 showing that box), keeps it in the tab's ``sessionStorage`` only, and calls the
JSON routes with it. Counts and ids only: no field value ever leaves these routes.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from litestar import Request, Response, Router, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from core.errors import NotFound, Unauthenticated
from core.settings import Settings
from core.wire import format_time
from eventstore import reads
from gateway.context import Resource
from gateway.openapi import ADMIN_SECURITY, errors
from gateway.operator import require_admin
from gateway.series import Series, SeriesSampler
from scheduler.queries import (
    DeadReminder,
    JobRun,
    dead_reminders,
    recent_job_runs,
    reminder_counts,
)

STATIC = Path(__file__).with_name("static")
ASSETS = {
    "diagnostics.js": "text/javascript",
    "diagnostics.css": "text/css",
    "charts.js": "text/javascript",
}
#: The page talks only to its own origin and runs only its own script.
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}
RECENT = 20
#: Recent events come from this window of the log only (a bounded scan; see
#: docs/observability.md on the index that keeps it cheap on large logs).
EVENT_WINDOW = timedelta(hours=1)
QUERY_TIMEOUT = 2.0

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    space_id: str
    seq: int
    op_id: str
    kind: str
    entity_type: str
    entity_id: str
    field: str | None
    device_id: str
    recorded_at: str


class DueBacklog(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    oldest_age_seconds: float


class Activity(msgspec.Struct, frozen=True, kw_only=True):
    """What happened lately, from PostgreSQL (so it covers every process)."""

    latest_events: list[EventRow]
    latest_job_runs: list[JobRun]
    reminders_by_status: dict[str, int]
    dead_reminders: list[DeadReminder]
    due_backlog: DueBacklog


def _iso(value: datetime | None) -> str:
    return "" if value is None else format_time(value)


async def _events(conn: Conn) -> list[EventRow]:
    rows = await reads.recent(conn, within=EVENT_WINDOW, limit=RECENT, query_timeout=QUERY_TIMEOUT)
    return [
        EventRow(
            space_id=str(r["space_id"]),
            seq=r["seq"],
            op_id=str(r["op_id"]),
            kind=r["kind"],
            entity_type=r["entity_type"],
            entity_id=r["entity_id"],
            field=r["field"],
            device_id=str(r["device_id"]),
            recorded_at=_iso(r["recorded_at"]),
        )
        for r in rows
    ]


async def activity(pool: asyncpg.Pool) -> Activity:
    """Recent events (ids only), job runs, and the reminders' state, from PostgreSQL."""
    async with pool.acquire() as conn:
        events = await _events(conn)
    async with asyncio.timeout(QUERY_TIMEOUT):  # the page must not hang on a busy database
        counts = await reminder_counts(pool)
        runs = await recent_job_runs(pool, RECENT)
        dead = await dead_reminders(pool, RECENT)
    return Activity(
        latest_events=events,
        latest_job_runs=runs,
        reminders_by_status=counts.by_status,
        dead_reminders=dead,
        due_backlog=DueBacklog(
            count=counts.due_unfired, oldest_age_seconds=counts.backlog_age_seconds
        ),
    )


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _admin_token_in(request: Request[Any, Any, Any], expected: str | None) -> bool:
    """True when the request carries the admin token (bearer header or ``?token=``)."""
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    candidates = [request.query_params.get("token", "")]
    if scheme.lower() == "bearer":
        candidates.append(bearer.strip())
    return expected is not None and any(
        c and hmac.compare_digest(c.encode(), expected.encode()) for c in candidates
    )


@get("/diagnostics", media_type="text/html", include_in_schema=False)
async def diagnostics_page(
    request: Request[Any, Any, Any], settings: Resource[Settings]
) -> Response[bytes]:
    """The page shell: 200 with the admin token (header or ``?token=``). Without it a
    browser gets the same shell as a 401, showing the sign-in box; other clients get
    the usual 401 ``unauthenticated``. The shell holds no data either way."""
    allowed = _admin_token_in(request, settings.admin_token)
    if not allowed and "text/html" not in request.headers.get("accept", ""):
        raise Unauthenticated("operator routes need the admin token")
    return Response(
        _read("diagnostics.html"),
        status_code=200 if allowed else 401,
        media_type="text/html",
        headers=PAGE_HEADERS,
    )


@get("/diagnostics/assets/{name:str}", include_in_schema=False)
async def diagnostics_asset(name: FromPath[str]) -> Response[bytes]:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound("no such asset")
    return Response(_read(name), media_type=media_type, headers={"cache-control": "no-cache"})


@get(
    "/v1/diagnostics/activity",
    responses=errors(401, 405),
    summary="Recent events (ids only), job runs and reminder states",
    dependencies={"admin": Provide(require_admin)},
    security=ADMIN_SECURITY,
)
async def diagnostics_activity(
    admin: NamedDependency[None], pool: Resource[asyncpg.Pool]
) -> Activity:
    """What the diagnostics page lists beside the counters of ``/v1/diagnostics``."""
    return await activity(pool)


@get(
    "/v1/diagnostics/series",
    responses=errors(401, 405),
    summary="The last 15 minutes of this process's figures, for the page's charts",
    dependencies={"admin": Provide(require_admin)},
    security=ADMIN_SECURITY,
)
async def diagnostics_series(
    admin: NamedDependency[None], series: Resource[SeriesSampler]
) -> Series:
    """Per-second rates of the failure-mode counters and the gauges, sampled every 2 s
    by the answering process (docs/observability.md, "Charts")."""
    return series.series()


panel_router = Router(
    path="/",
    route_handlers=[diagnostics_page, diagnostics_asset, diagnostics_activity, diagnostics_series],
    tags=["operator"],
)
