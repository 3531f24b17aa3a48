"""The one place errors become HTTP responses: ``{"error": {code, message, retryable}}``.

Every ``ConcordError`` renders through ``core.errors.render`` with its own status.
Litestar's own exceptions are translated first (validation and decoding errors are
400 ``bad_message``, unknown routes 404 ``not_found``, a body over the limit 413
``too_large``, a method the route does not have 405 with code ``bad_message``).
Storage trouble is 503 ``unavailable``; anything else is logged with the request id and
its traceback and answered 500 ``internal``, which no client input should ever reach.

No client ever reads a database's (or any internal) error text: an ``internal`` error,
raised as such (the event store's ``event store error: ...``) or unexpected, answers
the generic ``internal error; request id <id>`` and the detail goes to the log under
that id. ``redacted`` does the same for the WebSocket, where errors travel in results.
"""

from __future__ import annotations

import math
import traceback
import uuid
from typing import Any

import asyncpg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from core.errors import (
    BadMessage,
    ConcordError,
    Forbidden,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
    render,
)
from eventstore.errors import is_transient
from gateway.requestlog import request_id

log = structlog.get_logger("concord.gateway")

_JSON = "application/json"


def error_response(
    error: ConcordError, *, status: int | None = None, headers: dict[str, str] | None = None
) -> Response[bytes]:
    """``error`` rendered by the one renderer, with its status (or ``status``)."""
    extra = dict(headers or {})
    if isinstance(error, RateLimited):
        extra["Retry-After"] = str(max(1, math.ceil(error.retry_after_ms / 1000)))
    return Response(
        content=render(error),
        status_code=status or error.http_status,
        media_type=_JSON,
        headers=extra,
    )


def _is_internal(error: ConcordError) -> bool:
    """An error whose message is not for clients: the root class's ``internal`` code."""
    return error.code == ConcordError.code


def _internal(what: str, reference: str, exc: BaseException, **context: Any) -> ConcordError:
    """Log ``exc`` in full under ``reference``; the generic error a client gets instead."""
    log.error(
        what,
        reference=reference,
        error=repr(exc),
        traceback="".join(traceback.format_exception(exc)),
        **context,
    )
    return ConcordError(f"internal error; {reference}")


def redacted(error: ConcordError, **context: Any) -> ConcordError:
    """``error`` as a client may see it outside an HTTP answer (WebSocket results): itself,
    unless it is ``internal``; then a generic error naming a fresh reference, under which
    the detail and traceback are logged (with ``context``). Code and ``retryable`` stay."""
    if not _is_internal(error):
        return error
    return _internal("internal error", f"reference {uuid.uuid4().hex}", error, **context)


def _request_ref(request: Request[Any, Any, Any]) -> str:
    return f"request id {request_id(request.scope)}"


def on_concord_error(request: Request[Any, Any, Any], exc: ConcordError) -> Response[bytes]:
    if _is_internal(exc):
        path = request.url.path
        return error_response(_internal("request failed", _request_ref(request), exc, path=path))
    if exc.http_status >= 500:
        log.warning("request failed", code=exc.code, error=exc.message, path=request.url.path)
    return error_response(exc)


def _validation_message(exc: ValidationException) -> str:
    parts: list[str] = []
    if isinstance(exc.extra, list):
        for item in exc.extra[:5]:
            if isinstance(item, dict):
                key = item.get("key")
                text = str(item.get("message", "invalid"))
                parts.append(f"{key}: {text}" if key else text)
    return "; ".join(parts) or "the request is not a known message shape"


def _translate(exc: HTTPException) -> tuple[ConcordError, int]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        return BadMessage(_validation_message(exc)), 400
    if status == 404:
        return NotFound("no such route"), 404
    if status == 405:
        return BadMessage("method not allowed on this route"), 405
    if status == 413:
        return TooLarge("request body over max_message_bytes"), 413
    if status == 401:
        return Unauthenticated("no valid session"), 401
    if status == 403:
        return Forbidden("forbidden"), 403
    if status == 429:
        return RateLimited("slow down", retry_after_ms=1000), 429
    if status == 503:
        return Unavailable("service unavailable"), 503
    if 400 <= status < 500:
        return BadMessage(str(exc.detail or "bad request")), 400
    return ConcordError("internal error"), 500


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    error, status = _translate(exc)
    if _is_internal(error):
        error = _internal("litestar error", _request_ref(request), exc, path=request.url.path)
    elif status >= 500:
        log.warning("litestar error", detail=str(exc.detail), path=request.url.path)
    headers = {}
    if status == 405 and exc.headers and "allow" in {k.lower() for k in exc.headers}:
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return error_response(error, status=status, headers=headers)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, RecursionError):
        # msgspec raises it (not a DecodeError) for JSON nested beyond its depth limit.
        return error_response(BadMessage("the request is nested too deeply"))
    if isinstance(exc, asyncpg.DataError):
        # Client data PostgreSQL refused (a NUL in text, say) that a check upstream missed.
        log.warning("data refused by PostgreSQL", error=repr(exc), path=request.url.path)
        return error_response(BadMessage("a value in the request cannot be stored"))
    if is_transient(exc):  # the one list of transient failures (eventstore.errors)
        log.warning("storage unavailable", error=repr(exc), path=request.url.path)
        return error_response(Unavailable("storage unavailable; nothing was applied"))
    ref = _request_ref(request)
    return error_response(_internal("unhandled error", ref, exc, path=request.url.path))


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ConcordError: on_concord_error,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}
