"""permessage-deflate is negotiable and off by default (docs/websocket.md, "Compression").

A device that offers it (as ``websockets``, browsers and Node's ``ws`` do by default)
is answered without it unless ``CONCORD_WS_COMPRESSION`` is on; either way the
session works the same.
"""

from __future__ import annotations

import websockets
from websockets.typing import Subprotocol

from core.settings import Settings
from tests.e2e.harness import Device, ServerProcess, op, register


async def _negotiated(ws_url: str) -> str | None:
    """The extensions the server accepted for a client that offers permessage-deflate."""
    async with websockets.connect(
        ws_url, subprotocols=[Subprotocol("concord.v1.json")], compression="deflate"
    ) as ws:
        assert ws.response is not None
        return ws.response.headers.get("Sec-WebSocket-Extensions")


async def _round_trip(base: str, ws_url: str) -> None:
    """A push from one device reaches the other, subscribed, device of the same user."""
    acct = await register(base)
    writer = await Device.connect(ws_url, acct.access_token)
    reader = await Device.connect(ws_url, acct.access_token, [{"space_id": acct.space_id}])
    reply = await writer.push([op(acct.space_id, "t-1", "title", "compressed?", lamport=1)])
    seq = reply["results"][0]["seq"]
    await reader.wait_for_seq(acct.space_id, seq, within=20)
    await writer.close()
    await reader.close()


async def test_compression_is_declined_by_default(settings: Settings) -> None:
    gw = ServerProcess(settings).start()
    try:
        assert await _negotiated(gw.ws_url) is None
        await _round_trip(gw.url, gw.ws_url)
    finally:
        gw.stop()


async def test_compression_is_accepted_when_configured(settings: Settings) -> None:
    gw = ServerProcess(settings, env={"CONCORD_WS_COMPRESSION": "true"}).start()
    try:
        extensions = await _negotiated(gw.ws_url)
        assert extensions is not None
        assert "permessage-deflate" in extensions
        await _round_trip(gw.url, gw.ws_url)
    finally:
        gw.stop()
