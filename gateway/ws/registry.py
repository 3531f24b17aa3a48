"""The WebSocket connections of one gateway process, and what acts on all of them.

It owns the feed hub and is the announcer's ``Local`` (gateway/committed.py): what this
gateway commits reaches its feeds and removals without a round trip. It delivers fired
reminders (``<prefix>.notifications.<space>``) to the connected devices of the space's
members, closes connections whose session was revoked (checked every
``revocation_interval``; the revocation cache itself learns from NATS at once and
re-reads PostgreSQL within a second), and on shutdown lets pushes in flight finish
before closing every socket with 1001, all at once and within ``DRAIN_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import msgspec
import structlog

from core.events import ANY, MembershipChange, Names, NotificationEnvelope
from core.metrics import WS_CONNECTIONS
from core.wire import DEFAULT_LIMITS, Event, Limits, NotificationMessage, Welcome
from gateway.tokens import iso_utc
from gateway.ws.feed import FeedHub

if TYPE_CHECKING:
    from core.natsbus import NatsBus
    from core.ports import EventStore
    from gateway.committed import Announcer
    from gateway.revocation import RevocationCache
    from gateway.ws.connection import Connection

log = structlog.get_logger("concord.gateway.ws")
_NOTES = msgspec.json.Decoder(NotificationEnvelope)
_MEMBERSHIP = msgspec.json.Decoder(MembershipChange)
#: The whole shutdown drain: pushes in flight answer, queued messages go out and the
#: 1001 closes are sent within this, however many devices are connected and whether or
#: not they read (a stop must stay well under two seconds; docs/operations.md).
DRAIN_SECONDS = 1.0
#: Once its push (if any) is answered, how long a connection's queued messages may
#: take to go out, and then its close frame: a device that reads nothing is given up
#: on after both (a device that reads takes milliseconds).
FLUSH_SECONDS = 0.2
CLOSE_SECONDS = 0.1


class Registry:
    def __init__(
        self,
        hub: FeedHub,
        *,
        store: EventStore,
        bus: NatsBus,
        announcer: Announcer,
        revocations: RevocationCache,
        limits: Limits = DEFAULT_LIMITS,
        send_queue: int = 256,
        send_timeout: float = 10.0,
        revocation_interval: float = 0.5,
    ) -> None:
        self.hub = hub
        self._store = store
        self._bus = bus
        self._announcer = announcer
        self._revocations = revocations
        self.limits = limits
        self.send_queue = send_queue
        self.send_timeout = send_timeout
        self.revocation_interval = revocation_interval
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
        names = Names(self._bus.prefix)
        self._note_sub = await self._bus.subscribe(names.notifications(ANY), self._on_notification)
        self._member_sub = await self._bus.subscribe(names.membership(ANY), self._on_membership)
        self._tasks.append(asyncio.create_task(self._revoke_loop(), name="ws-revocations"))
        self._announcer.local = self

    def committed(self, space_id: str, events: Sequence[Event], committed_at: float) -> None:
        """This gateway committed ``events``: its subscribers get them from memory."""
        self.hub.committed(space_id, events, committed_at)

    async def _on_membership(self, subject: str, payload: bytes) -> None:
        try:
            change = _MEMBERSHIP.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("malformed membership change", subject=subject)
            return
        self.member_changed(change)

    def member_changed(self, change: MembershipChange) -> None:
        """A removal committed: end the removed member's subscriptions to that space at
        its seq now, on every connection of this gateway (docs/protocol.md section 5).
        Heard twice (from this gateway's store, then back from NATS), it acts once."""
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
        members = await self._store.members_of(envelope.space_id)
        message = NotificationMessage(notification=envelope.notification)
        for conn in list(self.connections):
            if conn.user_id in members:
                conn.notify(message)

    async def _revoke_loop(self) -> None:
        while True:
            await asyncio.sleep(self.revocation_interval)
            for conn in list(self.connections):
                try:
                    revoked = await self._revocations.is_revoked(conn.session_id, conn.generation)
                except Exception as exc:  # PostgreSQL away: keep what the cache knows
                    log.warning("revocation check failed", error=str(exc))
                    break
                if revoked:
                    await conn.close(4401, "session revoked")

    async def shutdown(self, deadline: float = DRAIN_SECONDS) -> None:
        """Stop taking connections, let pushes in flight answer, close all with 1001.

        Every connection is closed concurrently and the whole drain ends after
        ``deadline`` seconds at most: one device that reads nothing (its close frame
        waits on flow control) or a slow push must not hold the others, nor the stop.
        What is left then is dropped by the server's own shutdown."""
        self.accepting = False
        conns = [c for c in self.connections if not c.closing]
        if not conns:
            return
        tasks = [asyncio.create_task(self._drain(c), name=f"ws-drain-{c.id}") for c in conns]
        done, late = await asyncio.wait(tasks, timeout=deadline)
        for task in late:
            task.cancel()
        closed = [t for t in done if not t.cancelled() and t.exception() is None and t.result()]
        if len(closed) < len(tasks):
            log.warning(
                "devices dropped at shutdown", late=len(late), unclosed=len(done) - len(closed)
            )

    async def _drain(self, conn: Connection) -> bool:
        """Answer the connection's push in flight, then close it 1001; False when the
        close did not finish in time (the device reads nothing)."""
        async with conn.push_lock:  # a push in flight gets its push_result first
            closing = asyncio.create_task(
                conn.close(1001, "server going away", flush=FLUSH_SECONDS),
                name=f"ws-close-1001-{conn.id}",
            )
            # asyncio.wait, not wait_for: a close stuck on flow control is left behind
            # (the server drops its socket), never waited for.
            done, _ = await asyncio.wait({closing}, timeout=FLUSH_SECONDS + CLOSE_SECONDS)
            return bool(done)

    async def close(self) -> None:
        if self._announcer.local is self:
            self._announcer.local = None
        await self.shutdown()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in (self._note_sub, self._member_sub):
            if sub is not None:
                await self._bus.unsubscribe(sub)
        await self.hub.close()


@contextlib.asynccontextmanager
async def running(registry: Registry) -> AsyncIterator[Registry]:
    await registry.start()
    try:
        yield registry
    finally:
        await registry.close()
