"""The NATS adapter of the ``Bus`` port, shared by gateway, projector and scheduler.

NATS is fan-out only (docs/architecture.md, step 7): nobody trusts it for completeness, so this
adapter never blocks a caller on the broker. It connects in the background, keeps
reconnecting forever, and ``publish`` while disconnected drops the message and
counts it (consumers fill gaps from PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from core.ports import Handler
from core.settings import redact_url

log = logging.getLogger("concord.bus")


class NatsBus:
    """A reconnecting NATS connection; its subjects are ``core.events.Names(prefix)``."""

    def __init__(
        self, url: str, *, prefix: str = "concord", name: str = "concord", echo: bool = True
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.name = name
        #: False: the server never delivers this connection's own publishes back to it
        #: (the gateway hands what it commits to itself in memory).
        self.echo = echo
        self.dropped = 0
        self._nc: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._subs: dict[int, tuple[str, Handler, Any]] = {}
        self._next_token = 0
        self._ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def subjects(self) -> list[str]:
        """The subjects this bus is subscribed to, once per subscription."""
        return [subject for subject, _, _ in self._subs.values()]

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect_forever(), name="nats-connect")

    async def wait_connected(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), seconds)
        return self.connected

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                self._nc = await nats.connect(
                    self.url,
                    name=self.name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=self._on_error,
                    no_echo=not self.echo,
                )
            except Exception as exc:  # any failure to connect: retry with backoff
                log.warning("nats connect to %s failed: %s", self.safe_url, self._scrub(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for token, (subject, handler, _) in list(self._subs.items()):
                self._subs[token] = (subject, handler, await self._raw_subscribe(subject, handler))
            self._ready.set()
            return

    @property
    def safe_url(self) -> str:
        """The URL as log lines may show it: credentials replaced by ``***``."""
        return redact_url(self.url)

    def _scrub(self, exc: BaseException) -> str:
        """An exception's text with the URL's credentials taken out, should it quote them."""
        text = str(exc).replace(self.url, self.safe_url)
        credentials = self.url.partition("://")[2].rpartition("@")[0]
        return text.replace(credentials, "***") if credentials else text

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats error: %s", self._scrub(exc))

    async def _raw_subscribe(self, subject: str, handler: Handler) -> Any:
        assert self._nc is not None

        async def deliver(msg: Msg) -> None:
            await handler(msg.subject, msg.data)

        return await self._nc.subscribe(subject, cb=deliver)

    async def publish(self, subject: str, payload: bytes) -> None:
        """Best effort: a message published while disconnected is dropped and counted."""
        if not self.connected:
            self.dropped += 1
            return
        assert self._nc is not None
        try:
            await self._nc.publish(subject, payload)
        except Exception:  # broker trouble must never fail a committed write
            self.dropped += 1

    async def subscribe(self, subject: str, handler: Handler) -> object:
        self._next_token += 1
        token = self._next_token
        sub = await self._raw_subscribe(subject, handler) if self._nc is not None else None
        self._subs[token] = (subject, handler, sub)
        return token

    async def unsubscribe(self, token: object) -> None:
        entry = self._subs.pop(token, None)  # type: ignore[call-overload]
        if entry is not None and entry[2] is not None:
            with contextlib.suppress(Exception):
                await entry[2].unsubscribe()

    def jetstream(self) -> JetStreamContext | None:
        """JetStream on the current connection, or None while disconnected."""
        nc = self.connection()
        return nc.jetstream() if nc is not None else None

    def connection(self) -> Client | None:
        """The NATS connection while it is up (None while disconnected): for a caller
        that publishes with a reply inbox of its own, as the outbox relay does."""
        return self._nc if self.connected else None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
