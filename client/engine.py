"""The sync engine: keep one WebSocket up, drain the queue through it, apply what arrives.

One task runs the connection loop: refresh the token if it is due, connect, ``hello``
with a subscription per space from its cursor, then a reader and a writer until the
link fails; then back off (exponential, full jitter) and start over. The writer sends
one push at a time from the head of the queue and waits for its ``push_result``; an
unanswered push is simply resent on the next link with the same op_ids, and the
server's dedup makes that safe (``duplicate`` with the original seq).

Per result: ``applied``/``duplicate`` leave the queue; a retryable rejection keeps the
op queued (``auth_expired``: renew with ``auth`` and resend after ``auth_ok``;
``rate_limited``: wait ``retry_after_ms``; ``unavailable``: back off); any other
rejection is final: the op moves to the rejected record and is never sent again.

Waits with a deadline use ``asyncio.timeout``, never ``asyncio.wait_for``: in Python
3.11, ``wait_for`` returns a result that arrives in the same loop turn as a
cancellation and drops the cancellation, which left ``stop()`` waiting for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

from client.errors import ApiError, SignedOut
from client.faults import Backoff, FlakyLink
from client.link import CLOSE_UNAUTHENTICATED, Link, LinkClosed, first_failure
from client.replica import Replica
from client.session import Session, parse_time
from client.state import Acknowledged, DeviceConfig, Inflight, RejectedOp, SyncStats
from client.store import LocalStore
from core.errors import ErrorBody
from core.wire import (
    DEFAULT_LIMITS,
    Auth,
    AuthExpiring,
    AuthOk,
    CaughtUp,
    Error,
    Event,
    Events,
    Notification,
    NotificationMessage,
    Operation,
    Push,
    PushResult,
    ServerMessage,
    Subscribe,
    Subscription,
)

log = logging.getLogger("concord.client")

T = TypeVar("T")


class _Cut(Exception):
    """End this link and reconnect (a fault, a lost answer, a gap)."""


class _TooLarge(Exception):
    """The server refused the in-flight push as too large: send smaller batches."""


class SyncEngine:
    """Everything the device does on the network, and the facts ``sync`` waits on."""

    def __init__(
        self,
        *,
        base_url: str,
        replica: Replica,
        store: LocalStore,
        session: Session,
        config: DeviceConfig,
        faults: FlakyLink,
        cursors: dict[str, int],
        rejected: list[RejectedOp],
    ) -> None:
        self.base_url = base_url
        self.replica = replica
        self.store = store
        self.session = session
        self.config = config
        self.faults = faults
        self.cursors = cursors
        self.rejected = rejected
        self.stats = SyncStats()
        self.spaces: set[str] = set(cursors)
        self.lost_spaces: set[str] = set()
        self.caught: dict[str, tuple[int, int]] = {}
        self.acked_seq: dict[str, int] = {}
        self.notifications: list[Notification] = []
        self.listeners: list[Callable[[Event], None]] = []
        #: Called once per op the server acknowledged (stored: ``applied`` or
        #: ``duplicate``), after the acknowledgement is durable.
        self.ack_listeners: list[Callable[[Acknowledged], None]] = []
        #: Called once per op the server refused for good, after it is recorded.
        self.reject_listeners: list[Callable[[RejectedOp], None]] = []
        self.limits = DEFAULT_LIMITS
        self.batch_limit = config.batch_size
        self.fatal: BaseException | None = None
        self.link: Link | None = None
        self.online = asyncio.Event()
        self.authed = asyncio.Event()
        self.wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._new_spaces: set[str] = set()
        self._inflight: Inflight | None = None
        self._link_generation = 0
        self._link_expires_at = 0.0
        self._force_refresh = False
        self._renewal: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ control

    def start(self, online: bool) -> None:
        if online:
            self.online.set()
        self._task = asyncio.create_task(self._run(), name="concord-device-sync")

    async def stop(self) -> None:
        self.online.clear()
        for task in (self._renewal, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._drop_link()

    async def go_offline(self) -> None:
        self.online.clear()
        await self._drop_link()

    def watch(self, space_id: str) -> None:
        """Subscribe to a space (at once when connected, else at the next hello)."""
        if space_id not in self.spaces:
            self.spaces.add(space_id)
            self._new_spaces.add(space_id)
            self.wake.set()

    def resubscribe(self, spaces: list[str]) -> None:
        """Subscribe again (on the live link, or at the next hello): a new caught_up."""
        self._new_spaces.update(spaces)
        self.wake.set()

    def notify(self) -> None:
        """Wake everyone waiting in ``wait_until``."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, check: Callable[[], bool], deadline: float) -> bool:
        while not check():
            if self.fatal is not None:
                raise SignedOut(str(self.fatal)) from self.fatal
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await self._changed.wait()
        return True

    # ------------------------------------------------------------------ connection loop

    async def _run(self) -> None:
        backoff = Backoff(self.config.backoff_base, self.config.backoff_cap)
        while True:
            await self.online.wait()
            try:
                await self._serve(backoff)
            except SignedOut as exc:
                log.error("device signed out: %s", exc)
                self.fatal = exc
                self.notify()
                return
            except (LinkClosed, _Cut, ApiError, TimeoutError, OSError) as exc:
                if isinstance(exc, LinkClosed) and exc.code == CLOSE_UNAUTHENTICATED:
                    self._force_refresh = True
                log.info("link down: %s", exc)
            finally:
                await self._drop_link()
            if self.online.is_set():
                self.stats.reconnects += 1
                await asyncio.sleep(backoff.next())

    async def _serve(self, backoff: Backoff) -> None:
        if self._force_refresh:
            self._force_refresh = False
            token = await self.session.refresh(self.session.generation)
        else:
            token = await self.session.fresh_token(margin=1.0)
        link = await Link.connect(self.base_url, msgpack=self.config.msgpack)
        self.link = link
        subs = [Subscription(space_id=s, after=self.cursors.get(s, 0)) for s in sorted(self.spaces)]
        self._new_spaces.clear()
        welcome = await link.hello(token, self.replica.clock.value, subs)
        self._link_generation = self.session.generation
        self._link_expires_at = self.session.expires_at
        self.replica.clock.observe(welcome.server_lamport)
        self.limits = welcome.limits
        backoff.reset()
        self.stats.connects += 1
        self.authed.set()
        self.notify()
        await first_failure(self._reader(link), self._writer(link))

    async def _drop_link(self) -> None:
        self.authed.clear()
        if self._renewal is not None and self._renewal is not asyncio.current_task():
            self._renewal.cancel()
        link, self.link = self.link, None
        if self._inflight is not None and not self._inflight.future.done():
            self._inflight.future.cancel()
        if link is not None:
            await link.close()

    # ------------------------------------------------------------------ reading

    async def _reader(self, link: Link) -> None:
        while True:
            await self._dispatch(link, await link.recv())

    async def _dispatch(self, link: Link, message: ServerMessage) -> None:
        if isinstance(message, PushResult):
            inflight = self._inflight
            if inflight is None or message.batch_id != inflight.batch_id:
                return
            if self.faults.take_drop():
                self.stats.results_dropped += 1
                raise _Cut("fault: push_result dropped, link cut")
            if not inflight.future.done():
                inflight.future.set_result(message)
        elif isinstance(message, Events):
            await self._on_events(message)
        elif isinstance(message, CaughtUp):
            generation = self.caught.get(message.space_id, (0, 0))[0] + 1
            self.caught[message.space_id] = (generation, message.seq)
            self.notify()
        elif isinstance(message, AuthOk):
            self.stats.auth_ok += 1
            self.authed.set()
            self.notify()
        elif isinstance(message, AuthExpiring):
            self._schedule_renewal(link, parse_time(message.expires_at))
        elif isinstance(message, NotificationMessage):
            self.notifications.append(message.notification)
            self.notify()
        elif isinstance(message, Error):
            await self._on_error(link, message.error, message.ref)

    async def _on_events(self, message: Events) -> None:
        space_id = message.space_id
        cursor = self.cursors.get(space_id, 0)
        fresh = [e for e in message.events if e.seq > cursor]
        if not fresh:
            return
        if fresh[0].seq != cursor + 1:
            raise _Cut(f"gap in {space_id}: expected seq {cursor + 1}, got {fresh[0].seq}")
        rows = self.replica.apply_events(fresh)
        await self.store.apply_events(space_id, fresh[-1].seq, rows)
        self.cursors[space_id] = fresh[-1].seq
        self.stats.events += len(fresh)
        for listener in self.listeners:
            for event in fresh:
                try:
                    listener(event)
                except Exception:  # an app's callback must not break sync
                    log.exception("event listener failed")
        self.notify()

    async def _on_error(self, link: Link, error: ErrorBody, ref: str | None) -> None:
        inflight = self._inflight
        if inflight is not None and ref == inflight.batch_id and not inflight.future.done():
            inflight.future.set_exception(_TooLarge(error.message))
        elif error.code == "not_found" and ref in self.spaces:
            log.warning("space %s is gone (not a member)", ref)
            self.spaces.discard(ref)
            self.lost_spaces.add(ref)
            self.notify()
        elif error.code == "auth_expired":
            await self._renew(link)
        else:
            log.warning("server error %s (ref %s): %s", error.code, ref, error.message)

    # ------------------------------------------------------------------ renewal

    def _schedule_renewal(self, link: Link, expires_at: float) -> None:
        if not self.faults.proactive_refresh:
            return
        if self._renewal is not None and not self._renewal.done():
            return
        lead = self.config.refresh_lead
        if lead is None:
            lead = min(60.0, max(1.0, self.session.lifetime * 0.25))
        delay = max(0.0, expires_at - lead - time.time())
        self._renewal = asyncio.create_task(self._renew_later(link, delay), name="renewal")

    async def _renew_later(self, link: Link, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self._renew(link)
        except (ApiError, LinkClosed) as exc:
            log.info("proactive renewal failed (%s); the expiry path will renew", exc)
        except SignedOut as exc:
            self.fatal = exc
            self.notify()

    async def _renew(self, link: Link) -> None:
        """Give the live link a valid token with ``auth`` (``auth_ok`` resumes it): the
        session's own if it is newer than the link's and still valid, else a fresh one."""
        session = self.session
        if session.generation == self._link_generation or session.expires_in() <= 1.0:
            await session.refresh(session.generation)
        self._link_generation = session.generation
        self._link_expires_at = session.expires_at
        await link.send(Auth(token=session.token))
        self.stats.renewals += 1

    # ------------------------------------------------------------------ writing

    async def _writer(self, link: Link) -> None:
        while True:
            await self.authed.wait()
            for space_id in sorted(self._new_spaces):
                await link.send(Subscribe(space_id=space_id, after=self.cursors.get(space_id, 0)))
            self._new_spaces.clear()
            self.wake.clear()
            batch = self._next_batch()
            if not batch:
                await self._idle(link)
                continue
            try:
                result = await self._push(link, batch)
            except _TooLarge:
                self.batch_limit = max(1, len(batch) // 2)
                continue
            await self._settle(link, batch, result)
            if self.config.push_interval:
                await asyncio.sleep(self.config.push_interval)

    async def _idle(self, link: Link) -> None:
        """Wait for work. A link whose token expired is renewed here even with nothing
        to send: the server pauses delivery (``caught_up`` included) until it is."""
        left = self._link_expires_at - time.time()
        if left <= 0:
            self.authed.clear()
            await self._renew(link)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left + 0.05):
                await self.wake.wait()

    def _next_batch(self) -> list[Operation]:
        """The head of the queue: one space, within the published limits."""
        limit = min(self.batch_limit, self.limits.max_ops_per_push)
        return self.replica.next_batch(limit, int(self.limits.max_message_bytes * 0.8))

    async def _push(self, link: Link, batch: list[Operation]) -> PushResult:
        inflight = Inflight(uuid.uuid4().hex, batch, asyncio.get_running_loop().create_future())
        self._inflight = inflight
        try:
            await link.send(Push(batch_id=inflight.batch_id, ops=list(batch)))
            self.stats.pushes += 1
            if self.faults.take_cut():
                self.stats.links_cut += 1
                raise _Cut("fault: link cut right after a push")
            try:
                async with asyncio.timeout(self.config.push_timeout):
                    return await inflight.future
            except TimeoutError:
                raise _Cut("no push_result in time") from None
        finally:
            self._inflight = None

    async def _settle(self, link: Link, batch: list[Operation], result: PushResult) -> None:
        self.replica.clock.observe(result.server_lamport)
        answers = {r.op_id: r for r in result.results}
        acked: list[str] = []
        answered: list[Acknowledged] = []
        final: list[tuple[Operation, str, str]] = []
        retry: ErrorBody | None = None
        for op in batch:
            answer = answers.get(op.op_id)
            if answer is not None and answer.status in ("applied", "duplicate"):
                acked.append(op.op_id)
                self.stats.count(answer.status)
                seq = answer.seq or 0
                answered.append(Acknowledged(op, answer.status, seq))
                self.acked_seq[op.space_id] = max(self.acked_seq.get(op.space_id, 0), seq)
            elif answer is None or answer.error is None or answer.error.retryable:
                retry = retry or (answer.error if answer is not None else None)
                self.stats.count(retry.code if retry is not None else "unanswered")
            else:
                final.append((op, answer.error.code, answer.error.message))
                self.stats.count("rejected")
        if retry is not None and acked:
            self.stats.mixed_pushes += 1
        rows = self.replica.acknowledge(acked)
        self.replica.reject(op.op_id for op, _, _ in final)
        # Shielded: once the answer is applied in memory it is stored and told to the
        # listeners even if the device is closed meanwhile (else an app would miss an
        # acknowledgement that its file holds).
        stored = self.store.settle(acked, final, rows)  # queued before anything else runs
        await asyncio.shield(self._record(stored, final, answered))
        if retry is not None:
            await self._back_off(link, retry)

    async def _record(
        self,
        stored: asyncio.Future[None],
        final: list[tuple[Operation, str, str]],
        answered: list[Acknowledged],
    ) -> None:
        await stored
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        refused = [RejectedOp(op, code, msg, now) for op, code, msg in final]
        self.rejected.extend(refused)
        _tell(self.ack_listeners, answered)
        _tell(self.reject_listeners, refused)
        self.notify()

    async def _back_off(self, link: Link, error: ErrorBody) -> None:
        if error.code == "auth_expired":
            self.authed.clear()
            await self._renew(link)
        elif error.code == "rate_limited":
            await asyncio.sleep((error.retry_after_ms or 1000) / 1000)
        else:
            await asyncio.sleep(min(self.config.backoff_cap, 1.0))


def _tell(listeners: Sequence[Callable[[T], None]], items: Sequence[T]) -> None:
    """Call each listener with each item; an app's callback must not break sync."""
    for listener in listeners:
        for item in items:
            try:
                listener(item)
            except Exception:
                log.exception("listener failed")
