"""One WebSocket connection of docs/protocol.md section 5: hello, push, subscriptions, renewal.

The connection owns three kinds of task: the receive loop (this object's ``run``),
one writer draining a bounded queue, and one delivery loop per subscribed space.
Everything sent goes through the queue, so results and events keep their order; a
device that lets the queue stay full for ``send_timeout`` seconds is closed 4429.
The queue holds frames ready to send (text for JSON, bytes for msgpack): an
``events`` page is encoded once per gateway and shared by every subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from litestar import WebSocket

from core.errors import (
    AuthExpired,
    BadMessage,
    ConcordError,
    NotFound,
    TooLarge,
    Unauthenticated,
)
from core.ids import canonical_id
from core.metrics import AUTH_FAILURES, AUTH_RENEWALS
from core.wire import (
    Auth,
    AuthExpiring,
    AuthOk,
    Error,
    Hello,
    NotificationMessage,
    Ping,
    Pong,
    Push,
    Subscribe,
    Unsubscribe,
    decode_client,
    encode,
)
from gateway.tokens import iso_utc
from gateway.ws.feed import Frame
from gateway.ws.push import handle_push
from gateway.ws.subscription import Subscription

if TYPE_CHECKING:
    from core.ports import EventStore
    from gateway.limits import TokenBuckets
    from gateway.revocation import RevocationCache
    from gateway.tokens import AccessTokens
    from gateway.ws.registry import Registry

log = structlog.get_logger("concord.gateway.ws")

CLOSE_BAD_MESSAGES = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NO_HELLO = 4408
CLOSE_TOO_SLOW = 4429
CLOSE_GOING_AWAY = 1001
HELLO_TIMEOUT = 10.0
#: The largest seq a cursor may name (PostgreSQL ``bigint``).
MAX_SEQ = 2**63 - 1
#: Malformed messages in a row before the connection is closed 4400.
MAX_BAD_IN_A_ROW = 10


class Closed(Exception):
    """The connection is closing; unwind the loop that noticed."""


class Connection:
    """One device's socket; ``sync_socket`` (gateway/ws/route.py) gives it the resources
    it uses: the store, the token checks, the devices' push rate and the auth grace."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        registry: Registry,
        *,
        store: EventStore,
        access: AccessTokens,
        revocations: RevocationCache,
        push_buckets: TokenBuckets,
        auth_grace: float,
        msgpack: bool,
    ) -> None:
        self.socket = socket
        self.registry = registry
        self.store = store
        self.access = access
        self.revocations = revocations
        self.push_buckets = push_buckets
        self.auth_grace = auth_grace
        self.msgpack = msgpack
        self.id = uuid.uuid4().hex[:12]
        self.user_id = ""
        self.device_id = ""
        self.session_id = ""
        self.generation = ""
        self.expires_at = 0.0
        self.subs: dict[str, Subscription] = {}
        self.resumed = asyncio.Event()
        self.closing = False
        self.push_lock = asyncio.Lock()
        self._out: asyncio.Queue[Frame] = asyncio.Queue(maxsize=registry.send_queue)
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # set while nothing is queued or being written
        self._idle.set()
        self._pending_notes: deque[NotificationMessage] = deque(maxlen=100)
        self._tasks: set[asyncio.Task[None]] = set()
        self._clock: asyncio.Task[None] | None = None
        self._bad = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve the connection until either side closes it."""
        self._writer = self._spawn(self._write_loop(), "ws-writer")
        try:
            first = await self._receive(limit=HELLO_TIMEOUT)
            if first is None:
                return
            try:
                hello = decode_client(first, msgpack=self.msgpack)
            except BadMessage:
                hello = None
            if not isinstance(hello, Hello):
                await self.close(CLOSE_UNAUTHENTICATED, "the first message must be hello")
                return
            await self._hello(hello)
            while not self.closing:
                frame = await self._receive()
                if frame is None:
                    return
                await self._handle(frame)
        except Closed:
            return
        finally:
            await self._cleanup()

    async def _receive(self, limit: float | None = None) -> bytes | str | None:
        try:
            message = await asyncio.wait_for(self.socket.receive(), limit)
        except TimeoutError:
            await self.close(CLOSE_NO_HELLO, "no hello in time")
            return None
        if message["type"] == "websocket.disconnect":
            self.closing = True
            return None
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
        return data if isinstance(data, bytes | str) else b""

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(self._guard(coro), name=f"{name}-{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cleanup(self) -> None:
        self.closing = True
        for space_id in list(self.subs):
            await self.drop_subscription(space_id)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.registry.remove(self)

    async def close(self, code: int, reason: str, *, flush: float = 0.0) -> None:
        """Close once with ``code``, giving queued messages ``flush`` seconds first.

        The writer is stopped before the close frame goes out, so a writer stuck on a
        device that reads nothing cannot hold the close back."""
        if self.closing:
            return
        self.closing = True
        if flush > 0 and not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), flush)
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        # uvicorn sends the close frame only once the socket is writable again (flow
        # control): for a device that reads nothing that is when it reads, or when the
        # keepalive ping declares it dead. So the close runs on its own task, and the
        # caller waits for it only briefly.
        self._closer = asyncio.create_task(
            self._send_close(code, reason), name=f"ws-close-{self.id}"
        )
        await asyncio.wait({self._closer}, timeout=2.0)

    async def _send_close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.socket.close(code=code, reason=reason[:120])

    # ------------------------------------------------------------------ sending

    async def enqueue(self, message: msgspec.Struct) -> None:
        """Queue a message; a device that cannot take it in time is closed 4429."""
        data = encode(message, msgpack=self.msgpack)
        await self.send_frame(data if self.msgpack else data.decode())

    async def send_frame(self, frame: Frame) -> None:
        """Queue an encoded message (``str`` for JSON, ``bytes`` for msgpack)."""
        if self.closing:
            raise Closed
        self._idle.clear()
        if not self._out.full():  # the usual case: no timer, no wait
            self._out.put_nowait(frame)
            return
        try:
            await asyncio.wait_for(self._out.put(frame), self.registry.send_timeout)
        except TimeoutError:
            await self.close(CLOSE_TOO_SLOW, "too slow: resume with after")
            raise Closed from None

    async def _write_loop(self) -> None:
        while True:
            data = await self._out.get()
            try:
                # The server's send waits while the socket cannot take more (flow
                # control): a device that reads nothing stalls this loop, the queue
                # fills, and enqueue closes it 4429 after send_timeout.
                if isinstance(data, str):
                    await self.socket.send_text(data)
                else:
                    await self.socket.send_bytes(data)
            except Exception:  # the peer went away; the receive loop will notice
                self.closing = True
                return
            if self._out.empty():
                self._idle.set()

    async def send_error(self, error: ConcordError, ref: str | None = None) -> None:
        await self.enqueue(Error(error=error.body(), ref=ref))

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, frame: bytes | str) -> None:
        try:
            message = decode_client(frame, msgpack=self.msgpack)
        except BadMessage as exc:
            self._bad += 1
            if self._bad >= MAX_BAD_IN_A_ROW:
                await self.close(CLOSE_BAD_MESSAGES, "too many malformed messages")
                raise Closed from None
            await self.send_error(exc)
            return
        self._bad = 0
        if isinstance(message, Push):
            async with self.push_lock:
                await handle_push(self, message, _byte_size(frame))
        elif isinstance(message, Subscribe):
            await self._subscribe(message.space_id, message.after)
        elif isinstance(message, Unsubscribe):
            await self.drop_subscription(canonical_id(message.space_id) or message.space_id)
        elif isinstance(message, Auth):
            await self._auth(message.token)
        elif isinstance(message, Ping):
            await self.enqueue(Pong(nonce=message.nonce))
        else:  # a second hello
            await self.send_error(BadMessage("hello was already accepted"))

    # ------------------------------------------------------------------ session

    async def _verify(self, token: str) -> Any:
        try:
            claims = self.access.verify(token, now=time.time())
        except Unauthenticated:
            AUTH_FAILURES.labels(reason="invalid_token").inc()
            await self.close(CLOSE_UNAUTHENTICATED, "invalid token")
            raise Closed from None
        if await self.revocations.is_revoked(claims.session_id, claims.generation):
            AUTH_FAILURES.labels(reason="revoked").inc()
            await self.close(CLOSE_UNAUTHENTICATED, "session revoked")
            raise Closed
        return claims

    async def _hello(self, hello: Hello) -> None:
        claims = await self._verify(hello.token)
        if claims.expired:
            AUTH_FAILURES.labels(reason="expired").inc()
            await self.close(CLOSE_UNAUTHENTICATED, "token expired: refresh, then connect")
            raise Closed
        self.user_id, self.device_id = claims.user_id, claims.device_id
        self.registry.add(self)
        spaces = [m.space_id for m in await self.store.spaces_of(self.user_id)]
        lamport = await self.store.max_lamport(spaces) if spaces else 0
        self.expires_at = float(claims.expires_at)
        await self.enqueue(self.registry.welcome(self, lamport))
        self._adopt(claims)  # starts the expiry clock: auth_expiring comes after welcome
        for sub in hello.subscriptions:
            await self._subscribe(sub.space_id, sub.after)

    def _adopt(self, claims: Any) -> None:
        self.session_id, self.generation = claims.session_id, claims.generation
        self.expires_at = float(claims.expires_at)
        self.resumed.set()
        if self._clock is not None:
            self._clock.cancel()
        self._clock = self._spawn(self._auth_clock(), "ws-auth-clock")

    def expired(self) -> bool:
        return time.time() >= self.expires_at

    async def _auth(self, token: str) -> None:
        claims = await self._verify(token)
        if claims.user_id != self.user_id or claims.device_id != self.device_id:
            AUTH_FAILURES.labels(reason="wrong_device").inc()
            await self.close(CLOSE_UNAUTHENTICATED, "token of another user or device")
            raise Closed
        if claims.expired:
            AUTH_FAILURES.labels(reason="expired").inc()
            await self.send_error(AuthExpired("this token has expired too"))
            return
        self._adopt(claims)
        AUTH_RENEWALS.labels(route="ws").inc()
        await self.enqueue(AuthOk(token_expires_at=iso_utc(self.expires_at)))
        while self._pending_notes:
            await self.enqueue(self._pending_notes.popleft())

    async def _auth_clock(self) -> None:
        """auth_expiring ~60 s before expiry, pause at expiry, 4401 after the grace."""
        warn_at = self.expires_at - 60
        if time.time() < self.expires_at:
            await asyncio.sleep(max(0.0, warn_at - time.time()))
            await self.enqueue(AuthExpiring(expires_at=iso_utc(self.expires_at)))
            await asyncio.sleep(max(0.0, self.expires_at - time.time()))
        self.resumed.clear()
        grace_end = self.expires_at + self.auth_grace
        await asyncio.sleep(max(0.0, grace_end - time.time()))
        await self.close(CLOSE_UNAUTHENTICATED, "access token expired")

    def notify(self, message: NotificationMessage) -> None:
        """A fired reminder: sent now, or after ``auth_ok`` while delivery is paused."""
        if self.closing:
            return
        if not self.resumed.is_set():
            self._pending_notes.append(message)
            return
        self._spawn(self.enqueue(message), "ws-notify")

    async def _guard(self, coro: Any) -> None:
        """Run a connection task: Closed ends it quietly; anything else closes the socket."""
        try:
            await coro
        except (Closed, asyncio.CancelledError):
            return
        except Exception:
            log.exception("connection task failed", connection=self.id)
            await self.close(1011, "internal error")

    # ------------------------------------------------------------------ subscriptions

    async def _subscribe(self, raw_space_id: str, after: int) -> None:
        """Check the role on every subscribe, the first and any later one (section 5)."""
        if not 0 <= after <= MAX_SEQ:
            ref = canonical_id(raw_space_id) or raw_space_id
            await self.send_error(BadMessage(f"after must lie in 0..{MAX_SEQ}"), ref=ref)
            return
        space_id = canonical_id(raw_space_id)
        member = None if space_id is None else await self.store.membership(space_id, self.user_id)
        existing = None if space_id is None else self.subs.get(space_id)
        if existing is not None:
            if member is not None and member.since_seq <= existing.floor:
                existing.resume_from(after)
                return
            # Removed since this subscription began (and perhaps added back): it ends
            # at that removal, delivering it, whatever the cursor says.
            removal = await self.store.removal_after(space_id or "", self.user_id, existing.floor)
            if removal is not None:
                existing.removed(removal.seq)
                return
        if space_id is None or member is None:
            await self.send_error(NotFound("no such space"), ref=space_id or raw_space_id)
            return
        if len(self.subs) >= self.registry.limits.max_subscriptions:
            await self.send_error(TooLarge("too many subscriptions"), ref=space_id)
            return
        sub = Subscription(self, space_id, after, member.since_seq)
        self.subs[space_id] = sub
        sub.feed = await self.registry.hub.watch(space_id, sub.wake)
        sub.task = self._spawn(sub.run(), "ws-sub")

    async def drop_subscription(self, space_id: str, *, cancel: bool = True) -> None:
        sub = self.subs.pop(space_id, None)
        if sub is None:
            return
        await self.registry.hub.unwatch(space_id, sub.wake)
        if cancel and sub.task is not None and sub.task is not asyncio.current_task():
            sub.task.cancel()


def _byte_size(frame: bytes | str) -> int:
    """A frame's size in bytes, as the limits count it (a text frame arrives decoded)."""
    if isinstance(frame, bytes) or frame.isascii():
        return len(frame)
    return len(frame.encode("utf-8", "surrogatepass"))
