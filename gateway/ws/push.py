"""``push`` over the WebSocket: the same store path as ``POST /v1/sync/push``.

Every op gets exactly one result; when nothing of the push may be applied (expired
token, rate limit, storage unavailable) each op is rejected with that one retryable
error. A push over the size limits gets a single ``error`` ``too_large`` with ``ref``
= its batch_id (docs/protocol.md section 5), and nothing of it is stored.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from core.errors import AuthExpired, ConcordError, TooLarge, Unavailable
from core.metrics import AUTH_FAILURES, IDEMPOTENCY_HITS, OPS, PUSH_SECONDS
from core.ops import result_op_id
from core.wire import OpResult, Push, PushResult
from gateway.errors import redacted

if TYPE_CHECKING:
    from gateway.ws.connection import Connection

log = structlog.get_logger("concord.gateway.ws.push")


def reject_all(ops: list[Any], error: ConcordError) -> list[OpResult]:
    """One ``rejected`` result per op, all with ``error``."""
    body = error.body()
    return [OpResult(op_id=result_op_id(op), status="rejected", error=body) for op in ops]


async def handle_push(conn: Connection, push: Push, size: int) -> None:
    started = time.perf_counter()
    limits = conn.registry.limits
    if size > limits.max_message_bytes or len(push.ops) > limits.max_ops_per_push:
        await conn.send_error(
            TooLarge(
                f"a push may carry at most {limits.max_ops_per_push} ops and "
                f"{limits.max_message_bytes} bytes"
            ),
            ref=push.batch_id,
        )
        return
    lamport, events_head, space_id = 0, 0, None
    refusal: ConcordError | None = None
    if conn.expired():
        AUTH_FAILURES.labels(reason="expired").inc()
        OPS.labels(status="rejected").inc(len(push.ops))
        refusal = AuthExpired("access token expired: renew with auth, then resend")
    else:
        refusal = conn.rate_limit()
    if refusal is not None:
        results = reject_all(push.ops, refusal)
    else:
        try:
            outcome = await conn.store.append(
                user_id=conn.user_id, device_id=conn.device_id, ops=push.ops
            )
        except ConcordError as exc:  # an internal one's text stays in the log
            results = reject_all(
                push.ops, redacted(exc, connection=conn.id, batch_id=push.batch_id)
            )
        except Exception as exc:  # never let a store bug kill the connection silently
            log.exception("append failed", batch_id=push.batch_id)
            results = reject_all(push.ops, Unavailable(f"storage error: {type(exc).__name__}"))
        else:
            results, lamport, space_id = outcome.results, outcome.server_lamport, outcome.space_id
            if outcome.events and space_id is not None:
                events_head = outcome.events[-1].seq
                # After COMMIT: wake this gateway's subscribers now, hint the others.
                conn.registry.hub.local_commit(space_id, events_head)
                await conn.gw.hints.space(space_id, outcome.events)
    await conn.enqueue(PushResult(batch_id=push.batch_id, server_lamport=lamport, results=results))
    elapsed = time.perf_counter() - started
    PUSH_SECONDS.observe(elapsed)
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    if counts.get("duplicate"):
        IDEMPOTENCY_HITS.labels(route="ws").inc(counts["duplicate"])
    log.info(
        "push",
        connection=conn.id,
        device_id=conn.device_id,
        batch_id=push.batch_id,
        space_id=space_id,
        ops=len(push.ops),
        head=events_head,
        duration_ms=round(elapsed * 1000, 2),
        **counts,
    )
