"""Request ids and one log line per request (structlog).

Each request gets an id: the client's ``X-Request-Id`` when it is a short token of safe
characters, else a new one. It is bound into structlog's context for everything the
request logs, and returned in the ``X-Request-Id`` response header, errors included.
Unknown routes never reach route middleware, so the header and the log line are made
in an app-level ``before_send`` hook, which sees every response.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, cast

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("concord.gateway.http")

HEADER = "x-request-id"
_SAFE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_KEY = "concord.request"


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == HEADER.encode():
            candidate = value.decode("latin-1")
            if _SAFE.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex


def _info(scope: Scope) -> dict[str, Any]:
    """Per-request facts kept in the scope: the id and the start time."""
    raw = cast(dict[str, Any], scope)
    info: dict[str, Any] | None = raw.get(_KEY)
    if info is None:
        info = raw[_KEY] = {"id": _request_id(scope), "started": time.perf_counter()}
    return info


def request_id(scope: Scope) -> str:
    """The id of the request in ``scope`` (made on first use): what error answers quote."""
    return str(_info(scope)["id"])


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Route middleware: the id in structlog's context while the handler runs."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        info = _info(scope)
        with structlog.contextvars.bound_contextvars(request_id=info["id"]):
            await app(scope, receive, send)

    return middleware


async def before_send(message: Message, scope: Scope) -> None:
    """App-level hook: the response header and the access log line."""
    if scope["type"] != ScopeType.HTTP or message["type"] != "http.response.start":
        return
    info = _info(scope)
    headers = MutableScopeHeaders.from_message(message)
    headers[HEADER] = info["id"]
    status = message["status"]
    log.log(
        30 if status >= 500 else 20,
        "request",
        request_id=info["id"],
        method=scope.get("method"),
        path=scope.get("path"),
        status=status,
        duration_ms=round((time.perf_counter() - info["started"]) * 1000, 2),
    )
