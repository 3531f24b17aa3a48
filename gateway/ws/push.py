"""``push`` over the WebSocket: the push path of ``POST /v1/sync/push`` (gateway/pushes.py).

Every op gets exactly one result; when nothing of the push may be applied (expired
token, rate limit, storage unavailable) each op is rejected with that one retryable
error. A push over the size limits gets a single ``error`` ``too_large`` with ``ref``
= its batch_id (docs/protocol.md section 5), and nothing of it is stored.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from core.errors import AuthExpired, ConcordError, TooLarge, Unavailable
from core.metrics import AUTH_FAILURES, OPS
from core.wire import Push, PushResult
from gateway.errors import redacted
from gateway.pushes import admit, check_size, reject_all, store

if TYPE_CHECKING:
    from gateway.ws.connection import Connection

log = structlog.get_logger("concord.gateway.ws.push")


async def handle_push(conn: Connection, push: Push, size: int) -> None:
    started = time.perf_counter()
    try:
        check_size(conn.registry.limits, push.ops, size)
    except TooLarge as exc:
        await conn.send_error(exc, ref=push.batch_id)
        return
    try:
        if conn.expired():
            AUTH_FAILURES.labels(reason="expired").inc()
            OPS.labels(status="rejected").inc(len(push.ops))
            raise AuthExpired("access token expired: renew with auth, then resend")
        admit(conn.push_buckets, conn.device_id)
        result = await store(
            conn.store,
            user_id=conn.user_id,
            device_id=conn.device_id,
            batch_id=push.batch_id,
            ops=push.ops,
            route="ws",
            started=started,
        )
    except ConcordError as exc:  # an internal one's text stays in the log
        refusal = redacted(exc, connection=conn.id, batch_id=push.batch_id)
        result = _refused(push, refusal)
    except Exception as exc:  # never let a store bug kill the connection silently
        log.exception("append failed", batch_id=push.batch_id)
        result = _refused(push, Unavailable(f"storage error: {type(exc).__name__}"))
    await conn.enqueue(result)


def _refused(push: Push, error: ConcordError) -> PushResult:
    return PushResult(batch_id=push.batch_id, server_lamport=0, results=reject_all(push.ops, error))
