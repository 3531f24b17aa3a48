"""``POST /v1/sync/push`` and ``GET /v1/sync/pull``: sync without a WebSocket.

A push is checked in the order of docs/protocol.md section 2.5: authentication (an expired
token is 401 ``auth_expired`` for the whole request), size (413), the device's rate (429), the
caller's role in the push's space (over HTTP a non-member's push is answered 404 and a
reader's 403 as a whole, nothing stored), then each op by the store. The answer comes
after COMMIT, through the push path the WebSocket shares (gateway/pushes.py).
"""

from __future__ import annotations

import time
from typing import Annotated

from litestar import Router, get, post
from litestar.di import Provide

from core.errors import Forbidden, NotFound
from core.ops import push_space
from core.wire import Limits, OpResult, PullResponse, PushRequest, PushResponse
from gateway import pushes
from gateway.auth import PrincipalDep, provide_principal
from gateway.context import ReadStore, Resource
from gateway.examples import PULL_ANSWER, PUSH_ANSWER, PUSH_BODY, ok
from gateway.limits import TokenBuckets
from gateway.openapi import SPACE, USER_SECURITY, errors
from gateway.params import OpsRequest, limit_query, page_size, seq_query, uuid_query
from gateway.spaces import require_member

DEFAULT_PULL = 500


def _refused_as_a_whole(results: list[OpResult]) -> None:
    """The store re-checks the role under the space lock; if it refused every op for the
    role (a removal that raced the pre-check), answer the request as a whole."""
    codes = {r.error.code if r.error else None for r in results}
    if results and codes == {"not_found"}:
        raise NotFound("no such space")
    if results and codes == {"forbidden"}:
        raise Forbidden("readers may not push")


@post(
    "/push",
    status_code=200,
    responses={
        **ok(200, PushResponse, "one result per op", PUSH_ANSWER),
        **errors(*SPACE, 403, 413, 429),
    },
    summary="Push a batch of operations",
)
async def push(
    data: Annotated[PushRequest, PUSH_BODY],
    principal: PrincipalDep,
    store: Resource[ReadStore],
    limits: Resource[Limits],
    push_buckets: Resource[TokenBuckets],
) -> PushResponse:
    """One result per op, in the order sent, after COMMIT (docs/protocol.md section 4)."""
    started = time.perf_counter()
    pushes.check_size(limits, data.ops)  # the body's bytes are bounded by the app
    pushes.admit(push_buckets, principal.device_id)
    space_id = push_space(data.ops)
    if space_id is not None:
        _, role = await require_member(store, principal, space_id)
        if role == "reader":
            raise Forbidden("readers may not push")
    result = await pushes.store(
        store,
        user_id=principal.user_id,
        device_id=principal.device_id,
        batch_id=data.batch_id,
        ops=data.ops,
        route="http",
        started=started,
    )
    _refused_as_a_whole(result.results)
    return PushResponse(
        batch_id=data.batch_id, server_lamport=result.server_lamport, results=result.results
    )


@get(
    "/pull",
    responses={**ok(200, PullResponse, "events and the head", PULL_ANSWER), **errors(*SPACE)},
    summary="Read a space's events after a seq",
)
async def pull(
    principal: PrincipalDep,
    store: Resource[ReadStore],
    limits: Resource[Limits],
    space_id: Annotated[str, uuid_query("the space")],
    after: Annotated[int, seq_query("the last seq held")] = 0,
    limit: Annotated[int, limit_query("default 500, clamped to max_pull_limit")] = DEFAULT_PULL,
) -> PullResponse:
    """Events after ``after`` in seq order, and the head; read on until the last seq is
    the head."""
    target, _ = await require_member(store, principal, space_id)
    size = page_size(limit, default=DEFAULT_PULL, cap=limits.max_pull_limit)
    events = await store.read(target, after, size)
    head = await store.head(target)  # read after the events: head >= their last seq
    return PullResponse(events=events, head=max(head, events[-1].seq if events else 0))


sync_router = Router(
    path="/v1/sync",
    route_handlers=[push, pull],
    dependencies={"principal": Provide(provide_principal)},
    security=USER_SECURITY,
    tags=["sync"],
    request_class=OpsRequest,  # an op with an unpaired surrogate is invalid_op, not 400
)
