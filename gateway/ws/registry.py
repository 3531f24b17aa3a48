"""The WebSocket connections of one gateway process, and what acts on all of them.

It owns the feed hub, delivers fired reminders (``<prefix>.notifications.<space>``) to
the connected devices of the space's members, closes connections whose session was
revoked (checked every ``revocation_interval``; the revocation cache itself learns
from NATS at once and re-reads PostgreSQL within a second), and on shutdown lets
pushes in flight finish before closing every socket with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec
import structlog

from core.events import MembershipChange, NotificationEnvelope
from core.metrics import WS_CONNECTIONS
from core.wire import DEFAULT_LIMITS, Limits, NotificationMessage, Welcome
from gateway.tokens import iso_utc
from gateway.ws.feed import FeedHub

if TYPE_CHECKING:
    from gateway.context import Gateway
    from gateway.ws.connection import Connection

log = structlog.get_logger("concord.gateway.ws")
_NOTES = msgspec.json.Decoder(NotificationEnvelope)
_MEMBERSHIP = msgspec.json.Decoder(MembershipChange)


class Registry:
    def __init__(
        self,
        gw: Gateway,
        *,
        limits: Limits = DEFAULT_LIMITS,
        send_queue: int = 256,
        send_timeout: float = 10.0,
        revocation_interval: float = 0.5,
    ) -> None:
        self.gw = gw
        self.limits = limits
        self.send_queue = send_queue
        self.send_timeout = send_timeout
        self.revocation_interval = revocation_interval
        self.hub = FeedHub(
            store=gw.store,
            bus=gw.bus,
            pool=gw.pool,
            safety_interval=gw.options.feed_safety_interval,
        )
        self.connections: set[Connection] = set()
        self.accepting = True
        self._tasks: list[asyncio.Task[None]] = []
        self._note_sub: object | None = None
        self._member_sub: object | None = None

    def add(self, conn: Connection) -> None:
        if conn not in self.connections:
            self.connections.add(conn)
            WS_CONNECTIONS.inc()

    def remove(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            WS_CONNECTIONS.dec()

    def welcome(self, conn: Connection, server_lamport: int) -> Welcome:
        return Welcome(
            user_id=conn.user_id,
            device_id=conn.device_id,
            server_lamport=server_lamport,
            token_expires_at=iso_utc(conn.expires_at),
            limits=self.limits,
        )

    async def start(self) -> None:
        await self.hub.start()
        self._note_sub = await self.gw.bus.subscribe(
            f"{self.gw.settings.nats_prefix}.notifications.*", self._on_notification
        )
        self._member_sub = await self.gw.bus.subscribe(
            f"{self.gw.settings.nats_prefix}.membership.*", self._on_membership
        )
        self._tasks.append(asyncio.create_task(self._revocations(), name="ws-revocations"))

    async def _on_membership(self, subject: str, payload: bytes) -> None:
        """A removal committed: end the removed member's subscriptions to that space at
        its seq now, on every connection of this gateway (PROTOCOL section 5)."""
        try:
            change = _MEMBERSHIP.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("malformed membership change", subject=subject)
            return
        if change.role is not None:
            return
        for conn in list(self.connections):
            if conn.user_id == change.user_id:
                sub = conn.subs.get(change.space_id)
                if sub is not None:
                    sub.removed(change.seq)

    async def _on_notification(self, subject: str, payload: bytes) -> None:
        try:
            envelope = _NOTES.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("malformed notification", subject=subject)
            return
        members = await self.gw.store.members_of(envelope.space_id)
        message = NotificationMessage(notification=envelope.notification)
        for conn in list(self.connections):
            if conn.user_id in members:
                conn.notify(message)

    async def _revocations(self) -> None:
        while True:
            await asyncio.sleep(self.revocation_interval)
            for conn in list(self.connections):
                try:
                    revoked = await self.gw.revocations.is_revoked(conn.session_id, conn.generation)
                except Exception as exc:  # PostgreSQL away: keep what the cache knows
                    log.warning("revocation check failed", error=str(exc))
                    break
                if revoked:
                    await conn.close(4401, "session revoked")

    async def shutdown(self) -> None:
        """Stop taking connections, let pushes in flight answer, close all with 1001."""
        self.accepting = False
        for conn in list(self.connections):
            async with conn.push_lock:
                await conn.close(1001, "server going away", flush=5.0)

    async def close(self) -> None:
        await self.shutdown()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in (self._note_sub, self._member_sub):
            if sub is not None:
                await self.gw.bus.unsubscribe(sub)
        await self.hub.close()


@contextlib.asynccontextmanager
async def running(registry: Registry) -> AsyncIterator[Registry]:
    await registry.start()
    try:
        yield registry
    finally:
        await registry.close()
