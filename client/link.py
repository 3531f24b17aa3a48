"""One WebSocket connection to ``/v1/sync`` (docs/protocol.md section 5), typed both ways.

Messages are encoded from and decoded into the wire Structs of ``core.wire``; a closed
socket surfaces as :class:`LinkClosed` with its close code (``None`` when the TCP
connection died without a close frame).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from core.errors import BadMessage
from core.wire import Hello, ServerMessage, Subscription, Welcome, decode_server, encode

CLOSE_UNAUTHENTICATED = 4401
HELLO_TIMEOUT = 15.0


class LinkClosed(Exception):
    """The socket is gone; ``code`` is the close code the server sent, if any."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"link closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


def ws_url(base_url: str) -> str:
    """``http://host:port`` -> ``ws://host:port/v1/sync`` (https -> wss)."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/v1/sync"
    return "ws://" + base.removeprefix("http://") + "/v1/sync"


def _closed(exc: ConnectionClosed) -> LinkClosed:
    frame = exc.rcvd
    return LinkClosed(None if frame is None else frame.code, "" if frame is None else frame.reason)


class Link:
    """A connected socket speaking ``concord.v1.json`` or ``concord.v1.msgpack``."""

    def __init__(self, ws: ClientConnection, *, msgpack: bool) -> None:
        self.ws = ws
        self.msgpack = msgpack

    @classmethod
    async def connect(
        cls, base_url: str, *, msgpack: bool = False, open_timeout: float = 10
    ) -> Link:
        protocol = "concord.v1.msgpack" if msgpack else "concord.v1.json"
        try:
            ws = await websockets.connect(
                ws_url(base_url),
                subprotocols=[Subprotocol(protocol)],
                open_timeout=open_timeout,
                max_size=32 * 1024 * 1024,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise LinkClosed(None, f"cannot connect: {type(exc).__name__}: {exc}") from exc
        return cls(ws, msgpack=msgpack)

    async def hello(self, token: str, lamport: int, subscriptions: list[Subscription]) -> Welcome:
        """Send ``hello``; the ``welcome`` (anything else first is a protocol error)."""
        await self.send(Hello(token=token, lamport=lamport, subscriptions=subscriptions))
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                first = await self.recv()
        except TimeoutError:
            raise LinkClosed(None, "no welcome in time") from None
        if not isinstance(first, Welcome):
            raise LinkClosed(None, f"expected welcome, got {type(first).__name__}")
        return first

    async def send(self, message: msgspec.Struct) -> None:
        data = encode(message, msgpack=self.msgpack)
        try:
            await self.ws.send(data if self.msgpack else data.decode())
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self) -> ServerMessage:
        """The next server message; unknown shapes are skipped (newer servers may add)."""
        while True:
            try:
                raw = await self.ws.recv()
            except ConnectionClosed as exc:
                raise _closed(exc) from None
            try:
                return decode_server(raw, msgpack=self.msgpack)
            except BadMessage:
                continue

    async def close(self) -> None:
        try:
            async with asyncio.timeout(3):
                await self.ws.close()
        except (TimeoutError, ConnectionClosed, OSError):
            self.ws.transport.abort()


async def first_failure(*coros: Coroutine[Any, Any, None]) -> None:
    """Run the coroutines until one ends; cancel the rest; re-raise its exception."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
