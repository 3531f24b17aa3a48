"""``GET /v1/sync``: the WebSocket endpoint; it only accepts and hands over to Connection.

No exception leaves the handler: Litestar would close such a socket 4500 and, with its
logging off, log nothing. A failure closes 1011 with the traceback in the log instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from litestar import WebSocket, websocket

from core.settings import Settings
from gateway.context import ReadStore, Resource
from gateway.limits import TokenBuckets
from gateway.revocation import RevocationCache
from gateway.tokens import AccessTokens
from gateway.ws.connection import Connection
from gateway.ws.registry import Registry

log = structlog.get_logger("concord.gateway.ws")

JSON_PROTOCOL = "concord.v1.json"
MSGPACK_PROTOCOL = "concord.v1.msgpack"
CLOSE_INTERNAL_ERROR = 1011
#: How long the 1011 close may wait on a device that reads nothing (flow control).
CLOSE_WAIT = 2.0


def choose_subprotocol(offered: list[str]) -> str | None:
    """The first of ours the client offers; JSON (no header echoed) when it offers none."""
    for name in offered:
        if name in (JSON_PROTOCOL, MSGPACK_PROTOCOL):
            return name
    return None


@websocket("/v1/sync", name="sync")
async def sync_socket(
    socket: WebSocket[Any, Any, Any],
    registry: Resource[Registry],
    store: Resource[ReadStore],
    access: Resource[AccessTokens],
    revocations: Resource[RevocationCache],
    push_buckets: Resource[TokenBuckets],
    settings: Resource[Settings],
) -> None:
    """docs/protocol.md section 5 (subprotocols ``concord.v1.json``, ``concord.v1.msgpack``)."""
    if not registry.accepting:
        await socket.close(code=1001, reason="server going away")
        return
    offered = list(socket.scope.get("subprotocols") or [])
    chosen = choose_subprotocol(offered)
    if offered and chosen is None:
        await socket.close(code=4400, reason="unsupported subprotocol")
        return
    await socket.accept(subprotocols=chosen)
    conn = Connection(
        socket,
        registry,
        store=store,
        access=access,
        revocations=revocations,
        push_buckets=push_buckets,
        auth_grace=settings.auth_grace,
        msgpack=chosen == MSGPACK_PROTOCOL,
    )
    try:
        await conn.run()
    except Exception:  # a storage failure or a bug; run() has already cleaned up
        log.exception("websocket connection failed", connection=conn.id, user_id=conn.user_id)
        with contextlib.suppress(Exception):  # already closed, or the device is gone
            await asyncio.wait_for(
                socket.close(code=CLOSE_INTERNAL_ERROR, reason="internal error"), CLOSE_WAIT
            )
