"""A TCP proxy in front of the lab's own server: a stable address across restarts.

The lab restarts its server on a fresh port (the old one may sit in TIME_WAIT) and
points the proxy at it; devices keep the proxy's address. While no server is behind
it, new connections are accepted and closed at once, as a server that is down would
leave them: devices see failed handshakes and back off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<target>``."""

    def __init__(self, target: int | None) -> None:
        self.target = target
        self.port = 0
        #: While True, what the server answers is read and dropped (the requests still
        #: reach it): a link that fails after the request went through.
        self.swallow = False
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def retarget(self, target: int | None) -> None:
        """Send new connections to ``target`` (None: refuse them); cut the old ones."""
        self.target = target
        self.cut_all()

    def cut_all(self) -> None:
        for task in list(self._pipes):
            task.cancel()

    async def close(self) -> None:
        self.cut_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            if self.target is None:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                return
            try:
                await _both(_pump(reader, up_writer), _pump(up_reader, writer, self))
            finally:
                up_writer.close()
        except asyncio.CancelledError:
            pass
        finally:
            self._pipes.discard(task)
            writer.close()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answers: TcpProxy | None = None
) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            if answers is not None and answers.swallow:
                continue
            writer.write(data)
            await writer.drain()


async def _both(*pumps: Coroutine[Any, Any, None]) -> None:
    """Pump both ways until either side closes."""
    tasks = [asyncio.ensure_future(p) for p in pumps]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
