"""One space subscribed on one connection: catch-up from PostgreSQL, then live.

Per connection and space every event is sent once and in seq order (invariant 6):
``last`` is the only cursor, every page starts at ``last + 1``, and it moves only when
a page has been queued for sending. Delivery pauses while the session's access token
has expired and resumes from ``last`` after ``auth_ok``: no gap, no repeat.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from core.errors import NotFound
from core.metrics import FANOUT_SECONDS
from core.wire import CaughtUp, Error, Event, Events

if TYPE_CHECKING:
    from gateway.ws.connection import Connection
    from gateway.ws.feed import SpaceFeed

#: Events per ``events`` message.
PAGE = 200


def removal_of(events: list[Event], user_id: str) -> int | None:
    """Index of the first ``member_removed`` of ``user_id`` in ``events``, if any."""
    for index, event in enumerate(events):
        if event.kind == "member_removed" and event.entity_id == user_id:
            return index
    return None


class Subscription:
    """The delivery loop of one (connection, space)."""

    def __init__(self, conn: Connection, space_id: str, after: int) -> None:
        self.conn = conn
        self.space_id = space_id
        self.last = after
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

    async def run(self) -> None:
        assert self.feed is not None
        feed = self.feed
        while True:
            await self.conn.resumed.wait()
            events = await feed.read_after(self.last, PAGE)
            if not self.conn.resumed.is_set():
                continue  # expired while reading: deliver after auth_ok, from self.last
            if events:
                if await self._deliver(events, feed.known_head, feed.committed_at):
                    return
                continue
            if not self.caught_up:
                self.caught_up = True
                await self.conn.enqueue(CaughtUp(space_id=self.space_id, seq=self.last))
                continue
            self._wakeup.clear()
            if self.last < feed.known_head:
                continue
            await self._wakeup.wait()

    async def _deliver(self, events: list[Event], head: int, committed: dict[int, Any]) -> bool:
        """Queue one page; True when this subscription ended (the member was removed)."""
        cut = removal_of(events, self.conn.user_id)
        page = events if cut is None else events[: cut + 1]
        await self.conn.enqueue(
            Events(space_id=self.space_id, events=page, head=max(head, page[-1].seq))
        )
        self.last = page[-1].seq
        now = time.time()
        for event in page:
            stamp = committed.get(event.seq)
            if stamp:
                FANOUT_SECONDS.observe(max(0.0, now - stamp))
        if cut is None:
            return False
        if await self.conn.store.role_of(self.space_id, self.conn.user_id) is not None:
            return False  # removed, then added back later in the log: keep delivering
        error = NotFound("you are no longer a member of this space").body()
        await self.conn.enqueue(Error(error=error, ref=self.space_id))
        await self.conn.drop_subscription(self.space_id, cancel=False)
        return True
