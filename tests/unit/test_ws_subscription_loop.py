"""The delivery loop of one subscription (``Subscription.run``) over a real ``SpaceFeed``
and an in-memory log: catch-up in pages, caught_up, live events, the pause while the
token is expired, and every way a removal ends it (invariants 6 and 8). No socket and no
timing: each step waits for the message it expects, never for a delay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import msgspec
import pytest
from prometheus_client import REGISTRY

from core.wire import CaughtUp, Error, Event, Events
from gateway.ws.feed import SpaceFeed
from gateway.ws.subscription import PAGE, Subscription
from tests.unit.ws_events import OTHER, SPACE, USER, event

GONE = "you are no longer a member of this space"


@dataclass
class Log:
    """The store's reads a subscription and its feed make, over a list of events."""

    events: list[Event] = field(default_factory=list)
    #: Called after each read has taken its snapshot (a commit racing with the read).
    after_read: list[Callable[[], None]] = field(default_factory=list)
    removal_lookups: int = 0

    def append(self, *kinds: tuple[str, str]) -> None:
        for kind, entity in kinds:
            self.events.append(event(len(self.events) + 1, kind, entity))

    async def read(self, space_id: str, after: int, limit: int) -> list[Event]:
        assert space_id == SPACE
        assert isinstance(after, int)
        assert isinstance(limit, int)
        found = [e for e in self.events if e.seq > after][:limit]
        if self.after_read:
            self.after_read.pop(0)()
        return found

    async def removal_after(self, space_id: str, user_id: str, floor: int) -> Event | None:
        assert (space_id, user_id) == (SPACE, USER)
        assert isinstance(floor, int)
        self.removal_lookups += 1
        for e in self.events:
            if e.kind == "member_removed" and e.entity_id == user_id and e.seq > floor:
                return e
        return None


class Conn:
    """What a Subscription uses of its connection; sent messages arrive on a queue."""

    def __init__(self, log: Log) -> None:
        self.user_id = USER
        self.store = log
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.sent: asyncio.Queue[msgspec.Struct] = asyncio.Queue()
        self.dropped: list[tuple[str, bool]] = []

    #: Frames are JSON text (the default subprotocol).
    msgpack = False

    async def enqueue(self, message: msgspec.Struct) -> None:
        self.sent.put_nowait(message)

    async def send_frame(self, frame: str | bytes) -> None:
        """An encoded ``events`` page (one encoding for every subscriber), read back."""
        self.sent.put_nowait(msgspec.json.decode(frame, type=Events))

    async def drop_subscription(self, space_id: str, *, cancel: bool = True) -> None:
        self.dropped.append((space_id, cancel))

    async def next(self) -> msgspec.Struct:
        return await asyncio.wait_for(self.sent.get(), 10)

    async def events(self) -> list[int]:
        message = await self.next()
        assert isinstance(message, Events), message
        assert message.space_id == SPACE
        return [e.seq for e in message.events]


@dataclass
class Running:
    log: Log
    conn: Conn
    feed: SpaceFeed
    sub: Subscription
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.sub.run())

    def commit(self, *kinds: tuple[str, str]) -> None:
        """Append events and hint the feed, as a commit on any gateway does."""
        self.log.append(*kinds)
        self.feed.advance(len(self.log.events))

    async def ended(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)
        assert self.conn.dropped == [(SPACE, False)], "ends itself, from its own task"
        assert self.conn.sent.empty(), "nothing after not_found"


def _running(log: Log, after: int = 0, floor: int = 0) -> Running:
    conn = Conn(log)
    feed = SpaceFeed(SPACE, log)  # type: ignore[arg-type]
    feed.known_head = len(log.events)
    sub = Subscription(conn, SPACE, after, floor)  # type: ignore[arg-type]
    sub.feed = feed
    feed.listeners.add(sub.wake)
    return Running(log, conn, feed, sub)


@pytest.fixture
async def live() -> AsyncIterator[Running]:
    log = Log()
    log.append(("member_added", USER), ("set", "t-1"), ("set", "t-2"))
    running = _running(log)
    yield running
    if running.task is not None and not running.task.done():
        running.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running.task


async def settle() -> None:
    """Let every ready task run as far as it can (yields, not a delay)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def caught_up(conn: Conn, seq: int) -> None:
    message = await conn.next()
    assert message == CaughtUp(space_id=SPACE, seq=seq)


async def not_found(conn: Conn) -> None:
    message = await conn.next()
    assert isinstance(message, Error), message
    assert (message.error.code, message.ref, message.error.message) == ("not_found", SPACE, GONE)


def test_a_new_subscription_starts_at_its_cursor_not_caught_up() -> None:
    sub = Subscription(Conn(Log()), SPACE, 7, floor=3)  # type: ignore[arg-type]
    assert (sub.last, sub.floor, sub.removed_at, sub.caught_up) == (7, 3, None, False)
    assert sub.feed is None
    assert sub.task is None


async def test_catch_up_then_caught_up_then_live_events(live: Running) -> None:
    live.start()
    assert await live.conn.events() == [1, 2, 3]
    await caught_up(live.conn, 3)
    live.commit(("set", "t-3"))
    assert await live.conn.events() == [4]
    live.commit(("set", "t-4"), ("set", "t-5"))
    assert await live.conn.events() == [5, 6]
    assert live.sub.last == 6
    assert live.conn.sent.empty()


async def test_catch_up_comes_in_pages_and_caught_up_names_the_last_seq() -> None:
    log = Log()
    log.append(*[("set", f"t-{i}") for i in range(2 * PAGE + 7)])
    running = _running(log)
    running.start()
    try:
        assert await running.conn.events() == list(range(1, PAGE + 1))
        assert await running.conn.events() == list(range(PAGE + 1, 2 * PAGE + 1))
        assert await running.conn.events() == list(range(2 * PAGE + 1, 2 * PAGE + 8))
        await caught_up(running.conn, 2 * PAGE + 7)
    finally:
        assert running.task is not None
        running.task.cancel()


async def test_each_page_names_the_head_known_or_its_own_last_seq() -> None:
    log = Log()
    conn = Conn(log)
    sub = Subscription(conn, SPACE, 0, floor=0)  # type: ignore[arg-type]
    ahead, behind = SpaceFeed(SPACE, log), SpaceFeed(SPACE, log)  # type: ignore[arg-type]
    ahead.advance(9)
    assert not await sub._deliver(ahead, [event(1), event(2)])
    assert not await sub._deliver(behind, [event(3), event(4)])  # the hint is behind
    first, second = await conn.next(), await conn.next()
    assert isinstance(first, Events)
    assert isinstance(second, Events)
    assert (first.space_id, first.head, second.space_id, second.head) == (SPACE, 9, SPACE, 4)
    assert sub.last == 4


async def test_nothing_is_delivered_while_paused_then_all_from_the_cursor(live: Running) -> None:
    live.start()
    assert await live.conn.events() == [1, 2, 3]
    await caught_up(live.conn, 3)
    live.conn.resumed.clear()  # the access token expired
    live.commit(("set", "t-3"), ("set", "t-4"))
    await settle()
    assert live.conn.sent.empty()
    live.conn.resumed.set()  # auth_ok
    live.sub.wake()
    assert await live.conn.events() == [4, 5]


async def test_subscribing_again_moves_the_cursor_and_sends_caught_up_again(
    live: Running,
) -> None:
    live.start()
    assert await live.conn.events() == [1, 2, 3]
    await caught_up(live.conn, 3)
    live.sub.resume_from(1)  # behind the cursor: no repeat
    await caught_up(live.conn, 3)
    live.log.append(("set", "t-3"), ("set", "t-4"), ("set", "t-5"))
    live.sub.resume_from(6)  # ahead of the cursor: skips 4..6
    await caught_up(live.conn, 6)
    live.commit(("set", "t-6"))
    assert await live.conn.events() == [7]


async def test_a_removal_in_a_live_page_ends_it_at_the_removal(live: Running) -> None:
    live.start()
    assert await live.conn.events() == [1, 2, 3]
    await caught_up(live.conn, 3)
    live.commit(("set", "t-3"), ("member_removed", USER), ("set", "t-4"))
    assert await live.conn.events() == [4, 5]
    await not_found(live.conn)
    await live.ended()
    assert live.sub.last == 5


async def test_another_members_removal_is_delivered_like_any_event(live: Running) -> None:
    live.start()
    assert await live.conn.events() == [1, 2, 3]
    await caught_up(live.conn, 3)
    live.commit(("member_removed", OTHER), ("set", "t-3"))
    assert await live.conn.events() == [4, 5]
    await settle()
    assert live.task is not None
    assert not live.task.done()
    assert live.conn.dropped == []


async def test_a_removal_hint_with_nothing_left_to_read_sends_the_removal(
    live: Running,
) -> None:
    """The hint says the member was removed at seq 4, and the reads are already there:
    the removal event itself goes out, then not_found."""
    live.start()
    assert await live.conn.events() == [1, 2, 3]
    await caught_up(live.conn, 3)
    live.log.append(("member_removed", USER))
    live.sub.last = 4  # delivered by a page this test does not model
    live.sub.removed(4)
    message = await live.conn.next()
    assert isinstance(message, Events)
    assert [(e.seq, e.kind) for e in message.events] == [(4, "member_removed")]
    assert (message.space_id, message.head) == (SPACE, 4)
    await not_found(live.conn)
    await live.ended()


async def test_a_removal_hinted_before_its_page_is_read_cuts_the_page(live: Running) -> None:
    live.log.append(("set", "t-3"), ("member_removed", USER), ("set", "t-4"))
    live.sub.removed(5)
    live.start()
    assert await live.conn.events() == [1, 2, 3, 4, 5]
    await not_found(live.conn)
    await live.ended()


async def test_a_cursor_beyond_the_head_still_gets_the_removal() -> None:
    """No page will ever reach a cursor past the head: when the head moves, the loop asks
    the log whether this member was removed, and ends with that event."""
    log = Log()
    log.append(("member_added", USER), ("set", "t-1"))
    running = _running(log, after=100)
    running.start()
    await caught_up(running.conn, 100)
    running.commit(("set", "t-2"))  # the head moves, no removal: nothing to send
    await settle()
    assert running.conn.sent.empty()
    running.commit(("member_removed", USER))
    message = await running.conn.next()
    assert isinstance(message, Events)
    assert [(e.seq, e.kind) for e in message.events] == [(4, "member_removed")]
    assert (message.space_id, message.head) == (SPACE, 4)
    await not_found(running.conn)
    await running.ended()


async def test_a_removal_before_the_membership_is_history() -> None:
    """Removed at seq 2, added back at seq 3 (the floor): the old removal is delivered
    like any event and ends nothing, even for a cursor past the head."""
    log = Log()
    log.append(("member_added", USER), ("member_removed", USER), ("member_added", USER))
    running = _running(log, floor=3)
    running.start()
    try:
        assert await running.conn.events() == [1, 2, 3]
        await caught_up(running.conn, 3)
        running.commit(("set", "t-1"))
        assert await running.conn.events() == [4]
    finally:
        assert running.task is not None
        running.task.cancel()
    beyond = _running(log, after=50, floor=3)
    beyond.start()
    try:
        await caught_up(beyond.conn, 50)
        beyond.commit(("set", "t-2"))
        await settle()
        assert beyond.sub.removed_at is None
        assert beyond.conn.sent.empty()
    finally:
        assert beyond.task is not None
        beyond.task.cancel()


def _fanout() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("concord_fanout_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("concord_fanout_seconds_sum") or 0.0
    return count, total


async def test_fan_out_time_is_observed_for_the_events_with_a_commit_time() -> None:
    conn = Conn(Log())
    sub = Subscription(conn, SPACE, 0, floor=0)  # type: ignore[arg-type]
    count, total = _fanout()
    feed = SpaceFeed(SPACE, conn.store)  # type: ignore[arg-type]
    feed.advance(2, committed_at=time.time() - 1000.0)
    await sub._deliver(feed, [event(1), event(2)])
    new_count, new_total = _fanout()
    assert new_count == count + 1, "one per event with a stamp"
    assert 1000.0 <= new_total - total < 1100.0
    feed.advance(3, committed_at=time.time() + 1000.0)
    await sub._deliver(feed, [event(3)])
    assert _fanout() == (new_count + 1, new_total), "a stamp in the future counts as 0"


async def test_expired_while_reading_delivers_after_auth_ok(live: Running) -> None:
    """The token expires while a page is being read: the page waits for auth_ok."""
    live.log.after_read.append(live.conn.resumed.clear)
    live.start()
    await settle()
    assert live.conn.sent.empty()
    live.conn.resumed.set()
    assert await live.conn.events() == [1, 2, 3]
    await caught_up(live.conn, 3)


async def test_a_cursor_moved_during_a_read_drops_what_it_passed(live: Running) -> None:
    """Subscribing again while a page is read moves the cursor: that page is trimmed."""
    live.log.after_read.append(lambda: live.sub.resume_from(2))
    live.start()
    assert await live.conn.events() == [3]
    await caught_up(live.conn, 3)


async def test_a_commit_racing_with_the_empty_read_is_not_missed(live: Running) -> None:
    """The head moves between an empty read and the wait: the loop reads again."""
    live.log.after_read.extend([lambda: None, lambda: None, lambda: live.commit(("set", "t-3"))])
    live.start()
    assert await live.conn.events() == [1, 2, 3]
    await caught_up(live.conn, 3)
    assert await live.conn.events() == [4]


async def test_subscribed_at_the_removal_itself_gets_it_and_nothing_after() -> None:
    """A cursor exactly at the member's removal (subscribing again after an unseen one):
    the removal event, not_found, and never the event after it."""
    log = Log()
    log.append(("member_added", USER), ("set", "t-1"), ("member_removed", USER), ("set", "t-2"))
    running = _running(log, after=3)
    running.sub.removed(3)
    running.start()
    message = await running.conn.next()
    assert isinstance(message, Events)
    assert [(e.seq, e.kind) for e in message.events] == [(3, "member_removed")]
    await not_found(running.conn)
    await running.ended()


async def test_a_removal_hint_the_feed_cannot_read_yet_ends_with_the_removal() -> None:
    """The hint is there, the feed reads nothing after the cursor yet: the removal event
    is read from the store itself, then not_found."""
    log = Log()
    log.append(("member_added", USER), ("set", "t-1"), ("member_removed", USER))
    running = _running(log, after=2)
    running.feed.known_head = 7

    async def nothing(after: int, limit: int) -> list[Event]:
        return []

    running.feed.read_after = nothing  # type: ignore[method-assign]
    running.sub.removed(3)
    running.start()
    message = await running.conn.next()
    assert isinstance(message, Events)
    assert [(e.seq, e.kind) for e in message.events] == [(3, "member_removed")]
    assert message.head == 7
    await not_found(running.conn)
    await running.ended()


async def test_a_removal_landing_exactly_at_a_cursor_beyond_the_head_ends_it() -> None:
    log = Log()
    log.append(("member_added", USER), ("set", "t-1"), ("set", "t-2"))
    running = _running(log, after=5)
    running.start()
    await caught_up(running.conn, 5)
    running.commit(("set", "t-3"))
    await settle()
    assert running.log.removal_lookups == 1, "the head moved: the log is asked"
    running.sub.wake()  # a wake-up without the head moving asks nothing
    await settle()
    assert running.log.removal_lookups == 1
    running.commit(("member_removed", USER))  # seq 5, the cursor itself
    message = await running.conn.next()
    assert isinstance(message, Events)
    assert [(e.seq, e.kind) for e in message.events] == [(5, "member_removed")]
    await not_found(running.conn)
    await running.ended()
