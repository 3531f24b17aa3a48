"""The removal cut of a subscription, deterministically (no socket, no timing): a page
``[e1, member_removed(u), e3]`` delivers ``e1`` and the removal, then ``not_found``,
and never ``e3`` (invariant 8)."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec

from core.events import Names, SpaceHint
from core.wire import Error, Event, Events, decode_server
from gateway.ws.feed import FeedHub, Frame, SpaceFeed
from gateway.ws.subscription import Subscription, removal_of
from tests.unit.ws_events import OTHER, SPACE, USER, event


class FakeConnection:
    """What a Subscription uses of its connection, recording what it would send."""

    def __init__(self) -> None:
        self.user_id = USER
        self.msgpack = False
        self.frames: list[Frame] = []
        self.sent: list[msgspec.Struct] = []
        self.dropped: list[str] = []
        self.store = self

    async def enqueue(self, message: msgspec.Struct) -> None:
        self.sent.append(message)

    async def send_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        self.sent.append(decode_server(frame, msgpack=self.msgpack))

    async def drop_subscription(self, space_id: str, *, cancel: bool = True) -> None:
        self.dropped.append(space_id)

    async def read(self, space_id: str, after: int, limit: int) -> list[Event]:
        return [event(after + 1, "member_removed", USER)][:limit]


def feed_at(head: int, conn: FakeConnection) -> SpaceFeed:
    feed = SpaceFeed(SPACE, conn)  # type: ignore[arg-type]
    feed.known_head = head
    return feed


def test_removal_of_finds_the_members_own_removal_after_the_floor() -> None:
    page = [event(1), event(2, "member_removed", USER), event(3)]
    assert removal_of(page, USER, floor=0) == 1
    assert removal_of(page, OTHER, floor=0) is None
    assert removal_of(page, USER, floor=2) is None, "a removal before the membership"
    other = [event(1), event(2, "member_removed", OTHER), event(3)]
    assert removal_of(other, USER, floor=0) is None


async def test_a_page_is_cut_after_the_removal_and_the_subscription_ends() -> None:
    conn = FakeConnection()
    sub = Subscription(conn, SPACE, 0, floor=0)  # type: ignore[arg-type]
    page = [event(1), event(2, "member_removed", USER), event(3)]
    ended = await sub._deliver(feed_at(3, conn), page)
    assert ended
    events, error = conn.sent
    assert isinstance(events, Events)
    assert [e.seq for e in events.events] == [1, 2]
    assert isinstance(error, Error)
    assert (error.error.code, error.ref) == ("not_found", SPACE)
    assert conn.dropped == [SPACE]
    assert sub.last == 2


async def test_a_page_without_the_removal_is_delivered_whole() -> None:
    conn = FakeConnection()
    sub = Subscription(conn, SPACE, 0, floor=0)  # type: ignore[arg-type]
    page = [event(1), event(2, "member_removed", OTHER), event(3)]
    assert not await sub._deliver(feed_at(3, conn), page)
    [events] = conn.sent
    assert isinstance(events, Events)
    assert [e.seq for e in events.events] == [1, 2, 3]
    assert conn.dropped == []


async def test_a_cursor_past_the_removal_gets_the_removal_itself() -> None:
    conn = FakeConnection()
    sub = Subscription(conn, SPACE, 1000, floor=0)  # type: ignore[arg-type]
    sub.removed(7)
    assert sub.removed_at == 7
    await sub._end_at(7, head=9)
    events, error = conn.sent
    assert isinstance(events, Events)
    assert [(e.seq, e.kind) for e in events.events] == [(7, "member_removed")]
    assert isinstance(error, Error)
    assert conn.dropped == [SPACE]


def test_a_removal_at_or_before_the_floor_is_ignored() -> None:
    sub = Subscription(FakeConnection(), SPACE, 0, floor=5)  # type: ignore[arg-type]
    sub.removed(5)
    assert sub.removed_at is None
    sub.removed(9)
    sub.removed(12)
    assert sub.removed_at == 9, "the first removal ends it"


async def test_one_page_is_encoded_once_for_every_subscriber() -> None:
    """Two subscribers of one gateway asking for the same page get the same frame
    object (encoded once), per format."""
    first, second, packed = FakeConnection(), FakeConnection(), FakeConnection()
    packed.msgpack = True
    feed = feed_at(3, first)
    page = [event(1), event(2), event(3)]
    for conn in (first, second, packed):
        sub = Subscription(conn, SPACE, 0, floor=0)  # type: ignore[arg-type]
        assert not await sub._deliver(feed, page)
    assert first.frames[0] is second.frames[0]
    assert isinstance(first.frames[0], str)
    assert isinstance(packed.frames[0], bytes)
    assert first.sent == second.sent == packed.sent


async def test_committed_events_are_served_from_memory() -> None:
    """Events this gateway committed are handed to the feed: a subscriber at the old
    head reads them without a query; a gap (another process committed in between) is
    left for PostgreSQL."""
    conn = FakeConnection()
    feed = feed_at(0, conn)
    woken: list[int] = []
    feed.listeners.add(lambda: woken.append(feed.known_head))
    feed.offer([event(1), event(2)], committed_at=1.0)
    feed.offer([event(3)], committed_at=2.0)
    assert woken == [2, 3]
    conn.read = None  # type: ignore[assignment]  # any read from the store would fail
    assert [e.seq for e in await feed.read_after(0, 10)] == [1, 2, 3]
    assert [e.seq for e in await feed.read_after(2, 10)] == [3]
    feed.offer([event(5)], committed_at=3.0)  # seq 4 was committed elsewhere
    assert feed.known_head == 5
    assert feed._from_cache(3, 10) is None, "not cached across the gap"


async def test_a_hint_carrying_its_events_is_served_without_a_read() -> None:
    """Another gateway's hint with the events themselves: the feed offers them (no
    query); a hint without them only moves the head."""
    conn = FakeConnection()
    hub = FeedHub(store=conn, bus=SimpleNamespace(prefix="p"), pool=None)  # type: ignore[arg-type]
    feed = feed_at(2, conn)
    hub._feeds[SPACE] = feed
    names = Names("p")
    carried = SpaceHint(space_id=SPACE, first_seq=3, last_seq=4, events=[event(3), event(4)])
    await hub._on_hint(names.space(SPACE), msgspec.json.encode(carried))
    conn.read = None  # type: ignore[assignment]  # any read from the store would fail
    assert [e.seq for e in await feed.read_after(2, 10)] == [3, 4]
    bare = SpaceHint(space_id=SPACE, first_seq=5, last_seq=5)
    await hub._on_hint(names.space(SPACE), msgspec.json.encode(bare))
    assert feed.known_head == 5
    assert feed._from_cache(4, 10) is None
