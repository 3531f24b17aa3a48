"""One push path for ``POST /v1/sync/push`` and the WebSocket ``push`` (docs/protocol.md
section 4): the same checks, the same store call, the same metrics.

:func:`check_size` and :func:`admit` refuse a push as a whole (too large, the
device's rate);
:func:`store` appends it in one transaction and answers one result per op after
COMMIT. What was committed is announced by the store itself (gateway/committed.py):
this gateway's subscribers get it at once, the other gateways by a hint that the
answer does not wait for. HTTP renders a whole-push refusal as its status; the
WebSocket as one ``error`` (too large) or as every op rejected with it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Literal

import structlog

from core.errors import ConcordError, TooLarge
from core.metrics import IDEMPOTENCY_HITS, PUSH_SECONDS
from core.ops import result_op_id
from core.wire import Limits, OpResult, PushResult
from gateway.limits import push_allowed

if TYPE_CHECKING:
    from core.ports import EventStore
    from gateway.limits import TokenBuckets

log = structlog.get_logger("concord.gateway.push")
#: The same logger as the standard library holds it: its level is asked before a debug
#: line is built, whatever wrapper structlog is configured with (or none).
_level = logging.getLogger("concord.gateway.push")

Route = Literal["http", "ws"]


def check_size(limits: Limits, ops: list[Any], size: int | None = None) -> None:
    """Raise ``too_large`` for a push over the limits (``size``: the frame's bytes, when
    the transport has not bounded them already)."""
    if len(ops) > limits.max_ops_per_push or (size is not None and size > limits.max_message_bytes):
        raise TooLarge(
            f"a push may carry at most {limits.max_ops_per_push} ops and "
            f"{limits.max_message_bytes} bytes"
        )


def admit(push_buckets: TokenBuckets, device_id: str) -> None:
    """Raise ``rate_limited`` past the device's push token bucket (takes a token)."""
    push_allowed(push_buckets, device_id, time.monotonic())


def reject_all(ops: list[Any], error: ConcordError) -> list[OpResult]:
    """One ``rejected`` result per op, all with ``error`` (nothing of the push applied)."""
    body = error.body()
    return [OpResult(op_id=result_op_id(op), status="rejected", error=body) for op in ops]


async def store(
    event_store: EventStore,
    *,
    user_id: str,
    device_id: str,
    batch_id: str,
    ops: list[Any],
    route: Route,
    started: float,
) -> PushResult:
    """Append the push (one transaction, possibly shared: group commit); its answer.

    ``started`` is the ``perf_counter`` at which the push arrived (for
    ``concord_push_seconds``). Raises what the store raises when nothing was stored."""
    outcome = await event_store.append(user_id=user_id, device_id=device_id, ops=ops)
    duplicates = 0
    for result in outcome.results:
        if result.status == "duplicate":
            duplicates += 1
    if duplicates:
        IDEMPOTENCY_HITS.labels(route=route).inc(duplicates)
    elapsed = time.perf_counter() - started
    PUSH_SECONDS.observe(elapsed)
    if _level.isEnabledFor(logging.DEBUG):  # a line per push is too dear for info
        counts: dict[str, int] = {}
        for result in outcome.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        log.debug(
            "push",
            route=route,
            device_id=device_id,
            batch_id=batch_id,
            space_id=outcome.space_id,
            ops=len(ops),
            head=outcome.head,
            duration_ms=round(elapsed * 1000, 2),
            **counts,
        )
    return PushResult(
        batch_id=batch_id, server_lamport=outcome.server_lamport, results=outcome.results
    )
