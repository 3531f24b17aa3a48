"""One space subscribed on one connection: catch-up from PostgreSQL, then live.

Per connection and space every event is sent once and in seq order (invariant 6):
``last`` is the only cursor, every page starts at ``last + 1``, and it moves only when
a page has been queued for sending. Delivery pauses while the session's access token
has expired and resumes from ``last`` after ``auth_ok``: no gap, no repeat.

A removal ends the subscription whatever the cursor says (invariant 8, docs/protocol.md
section 5): the member gets its ``member_removed`` event, then ``not_found``, then
nothing more of the space. A removal is noticed three ways: in a page being delivered,
from the membership hint the moment it commits (``removed``), and, for a cursor beyond
the head that no page will ever reach, by asking the log whenever the head moves.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from core.breaks import broken
from core.errors import NotFound
from core.metrics import FANOUT_SECONDS
from core.wire import CaughtUp, Error, Event, Events

if TYPE_CHECKING:
    from gateway.ws.connection import Connection
    from gateway.ws.feed import SpaceFeed

#: Events per ``events`` message.
PAGE = 200


def removal_of(events: list[Event], user_id: str, floor: int) -> int | None:
    """Index of the first ``member_removed`` of ``user_id`` after seq ``floor``, if any.

    Removals at or before ``floor`` ended an earlier membership (the member was added
    back at ``floor``); they are history, delivered like any other event."""
    for index, event in enumerate(events):
        if event.kind == "member_removed" and event.entity_id == user_id and event.seq > floor:
            return index
    return None


class Subscription:
    """The delivery loop of one (connection, space)."""

    def __init__(self, conn: Connection, space_id: str, after: int, floor: int) -> None:
        self.conn = conn
        self.space_id = space_id
        self.last = after
        #: ``since_seq`` of the membership this subscription was granted under.
        self.floor = floor
        #: Seq of the removal that ends this subscription, once known.
        self.removed_at: int | None = None
        self.caught_up = False
        self.feed: SpaceFeed | None = None
        self.task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    def resume_from(self, after: int) -> None:
        """Subscribing again resumes from max(after, last delivered) with a new caught_up."""
        self.last = max(self.last, after)
        self.caught_up = False
        self.wake()

    def removed(self, seq: int) -> None:
        """The member was removed at ``seq``: deliver up to that event, then end."""
        if broken("removal"):  # only in the chaos lab's broken build: delivery goes on
            return
        if seq > self.floor and (self.removed_at is None or seq < self.removed_at):
            self.removed_at = seq
            self.wake()

    async def run(self) -> None:
        assert self.feed is not None
        feed = self.feed
        while True:
            await self.conn.resumed.wait()
            if self.removed_at is not None and self.removed_at <= self.last:
                await self._end_at(self.removed_at, feed.known_head)
                return
            events = await feed.read_after(self.last, PAGE)
            if not self.conn.resumed.is_set():
                continue  # expired while reading: deliver after auth_ok, from self.last
            # A subscribe again may have moved the cursor on while this page was read.
            events = [e for e in events if e.seq > self.last]
            if events:
                if await self._deliver(feed, events):
                    return
                continue
            if self.removed_at is not None:
                # Nothing left to read before the removal (it is committed before its
                # hint is sent): end with the removal event itself.
                await self._end_at(self.removed_at, feed.known_head)
                return
            if not self.caught_up:
                self.caught_up = True
                await self.conn.enqueue(CaughtUp(space_id=self.space_id, seq=self.last))
                continue
            self._wakeup.clear()
            if self.last < feed.known_head:
                continue
            seen = feed.known_head
            await self._wakeup.wait()
            if self.removed_at is None and seen < feed.known_head <= self.last:
                await self._look_for_removal()

    async def _look_for_removal(self) -> None:
        """The space moved but not past this cursor (an ``after`` beyond the head), so no
        page will carry a removal: ask the log whether this member was removed."""
        removal = await self.conn.store.removal_after(self.space_id, self.conn.user_id, self.floor)
        if removal is not None:
            self.removed(removal.seq)

    async def _deliver(self, feed: SpaceFeed, events: list[Event]) -> bool:
        """Queue one page (encoded once for every subscriber of this gateway that asks
        for it); True when this subscription ended (the member was removed)."""
        cut = None if broken("removal") else removal_of(events, self.conn.user_id, self.floor)
        page = events if cut is None else events[: cut + 1]
        head = max(feed.known_head, page[-1].seq)
        await self.conn.send_frame(feed.frame(page, head, self.conn.msgpack))
        self.last = page[-1].seq
        committed = feed.committed_at
        now = time.time()
        for event in page:
            stamp = committed.get(event.seq)
            if stamp:
                FANOUT_SECONDS.observe(max(0.0, now - stamp))
        if cut is None:
            return False
        await self._end()
        return True

    async def _end_at(self, seq: int, head: int) -> None:
        """The cursor is at or past the removal: send the removal event itself, then end."""
        events = await self.conn.store.read(self.space_id, seq - 1, 1)
        page = [e for e in events if e.seq == seq]
        if page:
            await self.conn.enqueue(
                Events(space_id=self.space_id, events=page, head=max(head, seq))
            )
        await self._end()

    async def _end(self) -> None:
        error = NotFound("you are no longer a member of this space").body()
        await self.conn.enqueue(Error(error=error, ref=self.space_id))
        await self.conn.drop_subscription(self.space_id, cancel=False)
