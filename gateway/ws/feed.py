"""Live feeds of spaces for the WebSocket connections of one gateway process.

What this gateway commits is handed to its feed at once (``FeedHub.committed``, from
gateway/committed.py): appended to the space's cache when it follows on, so its
subscribers never read it back. What other processes commit arrives as NATS hints
(``<prefix>.space.<id>``: "seqs a..b are committed"), which carry the events when there
are few (offered like a local commit) and otherwise only say *that* there is something
new; those events are read from PostgreSQL, once per space per wake-up for every
connection of this gateway (a small contiguous cache). Either way a lost, repeated or
reordered hint can delay delivery but never corrupt it: the cache only ever takes
events that follow on from its tail, and a cursor reads from its own ``last + 1``.
Because a space's seqs are assigned under its row lock and committed in seq order,
everything up to a hinted seq is visible when the hint arrives: no reorder buffer is
needed before reading. A periodic head check (every ``poll_interval`` while NATS is
down, every ``safety_interval`` while it is up) covers lost hints and NATS outages.

Each ``events`` message is encoded once per format and the same bytes (or text) go
to every subscriber whose cursor asks for that page (``SpaceFeed.frame``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import msgspec
import structlog

from core.breaks import broken
from core.events import Names, SpaceHint
from core.metrics import BACKGROUND_ERRORS
from core.natsbus import NatsBus
from core.ports import EventStore
from core.wire import JSON_ENCODER, MSGPACK_ENCODER, Event, Events

log = structlog.get_logger("concord.gateway.feed")

_HINTS = msgspec.json.Decoder(SpaceHint)
#: Events kept per space for the connections of this gateway that are caught up.
CACHE_EVENTS = 2000
#: Encoded ``events`` messages kept per space (the pages of the latest wake-ups).
CACHE_FRAMES = 8

#: A frame as the socket sends it: text (``concord.v1.json``) or bytes (msgpack).
Frame = str | bytes


class SpaceFeed:
    """One space as seen by this gateway: its known head and a contiguous event cache."""

    def __init__(self, space_id: str, store: EventStore) -> None:
        self.space_id = space_id
        self._store = store
        self.known_head = 0
        #: True once ``known_head`` came from PostgreSQL or news (a hint, a commit here):
        #: from then on a cursor at the head waits for news instead of asking.
        self.head_known = False
        self.committed_at: dict[int, float] = {}
        self._cache: list[Event] = []
        self._frames: dict[tuple[int, int, int, bool], Frame] = {}
        self._lock = asyncio.Lock()
        self.listeners: set[Callable[[], None]] = set()
        self.nats_token: object | None = None

    def advance(self, head: int, committed_at: float | None = None) -> None:
        """Learn that ``head`` is committed; wake every listener if it is news."""
        if committed_at is not None and head > self.known_head:
            self.committed_at[head] = committed_at
            if len(self.committed_at) > 256:
                for seq in sorted(self.committed_at)[:128]:
                    del self.committed_at[seq]
        self.head_known = True
        if head > self.known_head:
            self.known_head = head
            for wake in list(self.listeners):
                wake()

    def offer(self, events: Sequence[Event], committed_at: float) -> None:
        """This gateway committed ``events``: keep them (when they follow on from the
        cache) and wake every listener."""
        self._extend(events)
        self.advance(events[-1].seq, committed_at)

    def _extend(self, events: Sequence[Event]) -> None:
        """Append the events that follow on from the cache's tail; anything else (a gap:
        another process committed in between) is left for a read from PostgreSQL."""
        cache = self._cache
        if not cache:
            cache.extend(events)
            return
        tail = cache[-1].seq
        fresh = [e for e in events if e.seq > tail]
        if not fresh or fresh[0].seq != tail + 1:
            return
        cache.extend(fresh)
        if len(cache) > CACHE_EVENTS:
            del cache[: len(cache) - CACHE_EVENTS]

    def frame(self, page: list[Event], head: int, msgpack: bool) -> Frame:
        """The ``events`` message of ``page``, encoded once for every subscriber."""
        key = (page[0].seq, page[-1].seq, head, msgpack)
        frame = self._frames.get(key)
        if frame is None:
            message = Events(space_id=self.space_id, events=page, head=head)
            if msgpack:
                frame = MSGPACK_ENCODER.encode(message)
            else:
                frame = JSON_ENCODER.encode(message).decode()
            if len(self._frames) >= CACHE_FRAMES:
                del self._frames[next(iter(self._frames))]
            self._frames[key] = frame
        return frame

    def _from_cache(self, after: int, limit: int) -> list[Event] | None:
        cache = self._cache
        if cache and cache[0].seq <= after + 1 <= cache[-1].seq:
            start = after + 1 - cache[0].seq
            return cache[start : start + limit]
        return None

    async def read_after(self, after: int, limit: int) -> list[Event]:
        """Up to ``limit`` events with seq > ``after``, in order, without gaps."""
        hit = self._from_cache(after, limit)
        if hit is not None:
            return hit
        if self.head_known and after >= self.known_head:
            # Nothing is committed past what this gateway knows of (every caught-up
            # subscriber asks once more after each page): wait for news, do not query.
            return []
        if self._cache and after + 1 < self._cache[0].seq:
            # Behind the cache (an old catch-up): read straight from PostgreSQL.
            return await self._store.read(self.space_id, after, limit)
        async with self._lock:
            # At or past the cache's tail: extend it once for every listener.
            hit = self._from_cache(after, limit)
            if hit is not None:
                return hit
            tail = self._cache[-1].seq if self._cache else after
            if after - tail >= CACHE_EVENTS:
                # Far past the tail (a cursor beyond what this gateway has read): the
                # cache cannot reach it contiguously, so read straight from PostgreSQL.
                return await self._store.read(self.space_id, after, limit)
            # Read from the tail up to a full page past ``after``, so that a cursor a
            # little past the tail still gets its page (never an empty answer while
            # events follow ``after``: that would send caught_up too early).
            fresh = await self._store.read(self.space_id, tail, after - tail + limit)
            if not fresh:
                return []
            if fresh[-1].seq > self.known_head:
                # A head learnt by reading wakes the listeners too, else the hint that
                # follows is no news and a subscription asleep at the old head never
                # wakes (found by ``concord lab chaos --seed 19``).
                self.known_head = fresh[-1].seq
                for wake in list(self.listeners):
                    wake()
            if not self._cache or self._cache[-1].seq < fresh[0].seq - 1:
                self._cache = fresh[-CACHE_EVENTS:]  # nothing cached joins on: start anew
            else:
                self._extend(fresh)  # events offered while this read ran are kept
            hit = self._from_cache(after, limit)
            if hit is None:  # the cache moved on while this read ran: answer from it
                hit = [e for e in fresh if e.seq > after][:limit]
        return hit


class FeedHub:
    """Every watched space of this gateway, with NATS subscriptions while watched."""

    def __init__(
        self,
        *,
        store: EventStore,
        bus: NatsBus,
        pool: asyncpg.Pool,
        poll_interval: float = 1.0,
        safety_interval: float = 5.0,
    ) -> None:
        self._store = store
        self._bus = bus
        self._pool = pool
        self.poll_interval = poll_interval
        self.safety_interval = safety_interval
        self._names = Names(bus.prefix)
        self._feeds: dict[str, SpaceFeed] = {}
        self._task: asyncio.Task[None] | None = None
        #: Only in the chaos lab's broken build: hints dropped, PostgreSQL never polled.
        self._deaf = broken("hint")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll_forever(), name="feed-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for feed in list(self._feeds.values()):
            if feed.nats_token is not None:
                await self._bus.unsubscribe(feed.nats_token)
        self._feeds.clear()

    async def watch(self, space_id: str, wake: Callable[[], None]) -> SpaceFeed:
        """Register ``wake`` for news of ``space_id``; subscribe to its hints if new.

        The listener is added before the first await: a feed without listeners is
        unregistered by ``unwatch``, and a subscriber that joined and left while this
        one waited for NATS would otherwise leave it on a feed no commit or hint reaches
        (tests/integration/test_gateway_feed.py)."""
        feed = self._feeds.get(space_id)
        if feed is not None:
            feed.listeners.add(wake)
            return feed
        feed = self._feeds[space_id] = SpaceFeed(space_id, self._store)
        feed.listeners.add(wake)
        token = await self._bus.subscribe(self._names.space(space_id), self._on_hint)
        if self._feeds.get(space_id) is not feed:  # every listener left meanwhile
            await self._bus.unsubscribe(token)
            return feed
        feed.nats_token = token
        feed.advance(await self._store.head(space_id))
        return feed

    async def unwatch(self, space_id: str, wake: Callable[[], None]) -> None:
        feed = self._feeds.get(space_id)
        if feed is None:
            return
        feed.listeners.discard(wake)
        if not feed.listeners:
            del self._feeds[space_id]
            if feed.nats_token is not None:
                await self._bus.unsubscribe(feed.nats_token)

    def committed(self, space_id: str, events: Sequence[Event], committed_at: float) -> None:
        """This gateway committed ``events``: no need to wait for NATS, nor to read them."""
        feed = self._feeds.get(space_id)
        if feed is not None and events:
            feed.offer(events, committed_at)

    async def _on_hint(self, subject: str, payload: bytes) -> None:
        try:
            hint = _HINTS.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("malformed space hint", subject=subject)
            return
        if self._deaf:
            return
        feed = self._feeds.get(hint.space_id)
        if feed is None:
            return
        events = hint.events
        if events and events[-1].seq == hint.last_seq and events[0].space_id == hint.space_id:
            feed.offer(events, hint.committed_at or time.time())  # no read back
        else:
            feed.advance(hint.last_seq, hint.committed_at or None)

    async def poll_once(self) -> None:
        """Read the heads of every watched space in one query and advance the feeds."""
        if not self._feeds or self._deaf:
            return
        ids = list(self._feeds)
        rows: list[Any] = await self._pool.fetch(
            "SELECT space_id::text AS space_id, head FROM spaces WHERE space_id = ANY($1::uuid[])",
            ids,
        )
        for row in rows:
            feed = self._feeds.get(row["space_id"])
            if feed is not None:
                feed.advance(int(row["head"]))

    async def _poll_forever(self) -> None:
        while True:
            interval = self.safety_interval if self._bus.connected else self.poll_interval
            await asyncio.sleep(interval)
            try:
                await self.poll_once()
            except Exception:  # the safety net for lost hints must outlive any failure
                BACKGROUND_ERRORS.labels(loop="feed-poll").inc()
                log.exception("feed poll failed; polling on")
