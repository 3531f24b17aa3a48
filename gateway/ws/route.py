"""``GET /v1/sync``: the WebSocket endpoint; it only accepts and hands over to Connection."""

from __future__ import annotations

from typing import Any

from litestar import WebSocket, websocket
from litestar.datastructures import State

from gateway.ws.connection import Connection
from gateway.ws.registry import Registry

JSON_PROTOCOL = "concord.v1.json"
MSGPACK_PROTOCOL = "concord.v1.msgpack"


def choose_subprotocol(offered: list[str]) -> str | None:
    """The first of ours the client offers; JSON (no header echoed) when it offers none."""
    for name in offered:
        if name in (JSON_PROTOCOL, MSGPACK_PROTOCOL):
            return name
    return None


@websocket("/v1/sync", name="sync")
async def sync_socket(socket: WebSocket[Any, Any, Any], state: State) -> None:
    """PROTOCOL.md section 5 (subprotocols ``concord.v1.json``, ``concord.v1.msgpack``)."""
    registry: Registry = state.ws_registry
    if not registry.accepting:
        await socket.close(code=1001, reason="server going away")
        return
    offered = list(socket.scope.get("subprotocols") or [])
    chosen = choose_subprotocol(offered)
    if offered and chosen is None:
        await socket.close(code=4400, reason="unsupported subprotocol")
        return
    await socket.accept(subprotocols=chosen)
    conn = Connection(socket, state.gateway, registry, msgpack=chosen == MSGPACK_PROTOCOL)
    await conn.run()
