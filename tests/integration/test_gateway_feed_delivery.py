"""What a space's feed hands a subscriber, whatever it learnt and in whatever order.

A mutation audit (make mutation, target ``feed``) showed that the feed's cache could
hand out an event twice, that a page could begin at ``after`` instead of after it, that
no test saw a hint arrive over NATS, and that a feed left subscribed after its last
listener went passed every test. These tests pin each of those down on real PostgreSQL
and NATS: the feed's answers against the log itself, its reads of PostgreSQL counted,
and its NATS subscriptions read from the bus.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.events import ENCODER, Names, SpaceHint, space_hint
from core.natsbus import NatsBus
from core.wire import Event
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from gateway.ws import feed as feeds
from gateway.ws.feed import CACHE_FRAMES, FeedHub, SpaceFeed
from tests.conftest import TEST_SECRET, has_line, logs_of
from tests.integration.test_projector_support import eventually, new_space


class CountingStore(PostgresEventStore):
    """The event store, counting its reads of events (``after`` and ``limit`` of each);
    while ``gate`` is set, a read answers only once the gate opens."""

    reads = 0
    calls: list[tuple[int, int]]
    gate: asyncio.Event | None = None

    async def read(self, space_id: str, after: int, limit: int) -> list[Event]:
        self.reads += 1
        self.calls.append((after, limit))
        events = await super().read(space_id, after, limit)
        if self.gate is not None:
            await self.gate.wait()
        return events


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[CountingStore]:
    async with CountingStore(pool, secret_key=TEST_SECRET) as s:
        s.calls = []
        yield s


class Log:
    """A space and what it holds: every event this test committed, by seq."""

    def __init__(self, store: CountingStore, space: str, owner: str) -> None:
        self.store = store
        self.space = space
        self.owner = owner
        self.device = new_id()
        self.events: list[Event] = []

    @classmethod
    async def new(cls, store: CountingStore) -> Log:
        space, owner = await new_space(store)
        log = cls(store, space, owner)
        log.events = await store.read(space, 0, 10)  # the owner's member_added
        return log

    @property
    def head(self) -> int:
        return len(self.events)

    async def commit(self, n: int) -> list[Event]:
        """Commit ``n`` sets in one push; the events it stored."""
        ops = [op(self.space, entity_id=f"t-{self.head + i}", lamport=1) for i in range(n)]
        outcome = await self.store.append(user_id=self.owner, device_id=self.device, ops=ops)
        assert [e.seq for e in outcome.events] == list(range(self.head + 1, self.head + n + 1))
        self.events.extend(outcome.events)
        return list(outcome.events)


@pytest.mark.parametrize("seed", range(12))
async def test_every_page_is_the_log_itself_whatever_the_feed_learnt(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """A feed learns of commits every way a gateway does (its own commits handed over,
    hints with and without their events, lost, repeated and late hints) while cursors
    anywhere ask for pages of any size. Every page is exactly the log's events after the
    cursor, without a gap or a repeat; a page is empty only when nothing follows the
    cursor or the cursor is at or past the head the feed knows (it then waits for news);
    and listeners are woken on news, never without."""
    monkeypatch.setattr(feeds, "CACHE_EVENTS", 24)  # so the cache fills and trims
    rnd = random.Random(seed)
    log = await Log.new(store)
    feed = SpaceFeed(log.space, store)
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    feed.listeners.add(wake)
    batches: list[list[Event]] = []
    for _ in range(70):
        step = rnd.random()
        if step < 0.35:
            batch = await log.commit(rnd.randint(1, 6))
            batches.append(batch)
            before, woken = feed.known_head, wakes
            how = rnd.choice(("offer", "offer", "hint", "lost", "tail"))
            if how == "offer":  # committed here, or a hint carrying its events
                feed.offer(batch, time.time())
            elif how == "hint":  # a hint without events
                feed.advance(batch[-1].seq, time.time())
            elif how == "tail":  # a hint carrying the last events only
                feed.offer(batch[-1:], time.time())
            if how != "lost":
                assert feed.known_head == max(before, batch[-1].seq)
                assert wakes == woken + (batch[-1].seq > before), "woken on news only"
        elif step < 0.45 and batches:  # a repeated or late hint
            learnt = [b for b in batches if b[-1].seq <= feed.known_head]
            if not learnt:
                continue
            old = rnd.choice(learnt)
            before, woken = feed.known_head, wakes
            feed.offer(old, time.time())
            assert (feed.known_head, wakes) == (before, woken), "an old hint is no news"
        else:
            after = rnd.randint(0, log.head + 3)
            limit = rnd.randint(1, 30)
            known, head_known, woken = feed.known_head, feed.head_known, wakes
            page = await feed.read_after(after, limit)
            assert wakes == woken + (feed.known_head > known), "a read wakes on news only"
            expected = log.events[after : after + len(page)]
            assert page == expected, f"cursor {after}, limit {limit}"
            assert len(page) <= limit
            waits = head_known and after >= known
            assert bool(page) == (after < log.head and not waits), (after, known, log.head)
            if page:
                assert feed.known_head >= page[-1].seq


async def test_a_new_device_behind_the_cache_reads_its_pages_from_postgres(
    store: CountingStore,
) -> None:
    """A gateway whose feed holds only the latest commits (it started after the rest)
    answers a device catching up from 0 from PostgreSQL, page by page, and the newest
    events from memory."""
    log = await Log.new(store)
    await log.commit(30)
    feed = SpaceFeed(log.space, store)
    latest = await log.commit(5)
    feed.offer(latest, time.time())
    before = store.reads
    pages = [await feed.read_after(0, 10), await feed.read_after(10, 10)]
    assert [e.seq for e in pages[0]] == list(range(1, 11))
    assert pages[1] == log.events[10:20]
    assert store.reads == before + 2
    assert await feed.read_after(log.head - 5, 10) == latest
    assert store.reads == before + 2, "what was offered is answered from memory"


async def test_the_cache_keeps_the_latest_events_and_answers_them_from_memory(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feeds, "CACHE_EVENTS", 10)
    log = await Log.new(store)
    feed = SpaceFeed(log.space, store)
    for _ in range(8):
        feed.offer(await log.commit(3), time.time())
    before = store.reads
    assert await feed.read_after(log.head - 10, 100) == log.events[-10:]
    assert store.reads == before, "the last CACHE_EVENTS events are in memory"
    assert await feed.read_after(log.head - 11, 1) == [log.events[-11]]
    assert store.reads == before + 1, "one event older than the cache is read"


async def test_a_cursor_far_past_the_cache_gets_the_events_after_it(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cursor more than CACHE_EVENTS past the cache's tail reads straight from
    PostgreSQL, from itself on; the cache keeps what it had."""
    monkeypatch.setattr(feeds, "CACHE_EVENTS", 10)
    log = await Log.new(store)
    feed = SpaceFeed(log.space, store)
    feed.offer(await log.commit(3), time.time())
    feed.advance((await log.commit(40))[-1].seq)  # a hint without its events
    assert await feed.read_after(14, 5) == log.events[14:19], "exactly CACHE_EVENTS past"
    assert await feed.read_after(30, 50) == log.events[30:]
    assert store.calls[-2:] == [(14, 5), (30, 50)], "from the cursor on, a page"
    reads = store.reads
    assert await feed.read_after(1, 2) == log.events[1:3]
    assert store.reads == reads, "the cache kept what it had"


async def test_a_cursor_a_little_past_the_tail_reads_from_the_tail(
    store: CountingStore,
) -> None:
    """The cache only ever grows contiguously: a cursor a little past its tail reads from
    the tail up to a full page past the cursor, and the cache then holds all of it."""
    log = await Log.new(store)
    feed = SpaceFeed(log.space, store)
    feed.offer(await log.commit(3), time.time())
    feed.advance((await log.commit(20))[-1].seq)
    assert await feed.read_after(8, 5) == log.events[8:13]
    assert store.calls == [(0, 10), (4, 9)]
    assert await feed.read_after(1, 20) == log.events[1:13]
    assert store.reads == 2, "seqs 2..13 are all in memory"


async def test_a_long_first_read_keeps_only_the_latest_events(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feeds, "CACHE_EVENTS", 10)
    log = await Log.new(store)
    await log.commit(40)
    feed = SpaceFeed(log.space, store)
    assert await feed.read_after(0, 50) == log.events
    reads = store.reads
    assert await feed.read_after(log.head - 10, 10) == log.events[-10:]
    assert store.reads == reads
    assert await feed.read_after(15, 1) == [log.events[15]]
    assert store.reads == reads + 1, "no more than CACHE_EVENTS are kept"


async def test_events_offered_over_the_caches_tail_are_kept(store: CountingStore) -> None:
    """Events that overlap the cache's tail (a read that raced a commit) extend it from
    the tail on: never a repeat, never a drop."""
    log = await Log.new(store)
    feed = SpaceFeed(log.space, store)
    first = await log.commit(3)
    feed.offer(first, time.time())
    second = await log.commit(3)
    feed.offer(first[1:] + second, time.time())
    reads = store.reads
    assert await feed.read_after(1, 100) == first + second
    assert store.reads == reads


async def test_subscribers_at_the_tail_share_one_read(store: CountingStore) -> None:
    """Every subscriber of this gateway waiting at the cache's tail is answered by one
    read of PostgreSQL."""
    log = await Log.new(store)
    feed = SpaceFeed(log.space, store)
    feed.offer(await log.commit(2), time.time())
    feed.advance((await log.commit(6))[-1].seq)
    reads = store.reads
    pages = await asyncio.gather(*(feed.read_after(3, 4) for _ in range(5)))
    assert pages == [log.events[3:7]] * 5
    assert store.reads == reads + 1


async def test_a_page_read_while_a_burst_is_committed_here_is_exact(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a page is read from PostgreSQL, this gateway commits more than the cache
    holds: the cache moves on past the page, which is answered from what was read,
    from the cursor on, without repeating the cursor's own event."""
    monkeypatch.setattr(feeds, "CACHE_EVENTS", 10)
    log = await Log.new(store)
    feed = SpaceFeed(log.space, store)
    feed.offer(await log.commit(3), time.time())
    feed.advance((await log.commit(5))[-1].seq)
    store.gate = asyncio.Event()
    reading = asyncio.create_task(feed.read_after(6, 3))
    await asyncio.sleep(0.1)  # the read is waiting at the gate
    burst = await log.commit(30)
    feed.offer(log.events[4:8] + burst, time.time())  # joins on: 2..39, trimmed to 30..39
    store.gate.set()
    assert await reading == log.events[6:9]


async def test_a_read_that_learns_the_head_wakes_the_listeners_once(
    store: CountingStore,
) -> None:
    log = await Log.new(store)
    await log.commit(4)
    feed = SpaceFeed(log.space, store)
    woken: list[int] = []
    feed.listeners.add(lambda: woken.append(feed.known_head))
    assert await feed.read_after(0, 100) == log.events
    assert woken == [log.head]
    assert await feed.read_after(log.head - 1, 100) == log.events[-1:]
    assert woken == [log.head], "no news the second time"


async def test_a_new_feed_wakes_its_listeners_for_the_first_event() -> None:
    """A space's first event (seq 1) is news to a feed that knows of none."""
    feed = SpaceFeed(new_id(), store=None)  # type: ignore[arg-type]
    woken: list[int] = []
    feed.listeners.add(lambda: woken.append(feed.known_head))
    assert (feed.known_head, feed.head_known) == (0, False)
    feed.advance(1)
    assert woken == [1]
    assert feed.head_known


async def test_commit_times_are_kept_for_news_only_and_for_the_latest_256() -> None:
    """``committed_at`` stamps each new head with its COMMIT's time, for the fan-out
    latency metric: an old or repeated hint does not restamp, and at most 256 are kept
    (past that the oldest 128 go)."""
    feed = SpaceFeed(new_id(), store=None)  # type: ignore[arg-type]
    feed.advance(5, 100.0)
    feed.advance(5, 200.0)  # the same hint again
    feed.advance(3, 300.0)  # a late one
    feed.advance(6)  # a poll: no time known
    assert feed.committed_at == {5: 100.0}
    for seq in range(7, 262):
        feed.advance(seq, float(seq))
    assert len(feed.committed_at) == 256  # 5 and 7..261: full, nothing dropped yet
    feed.advance(262, 262.0)  # 257: the oldest 128 (5 and 7..133) go
    assert sorted(feed.committed_at) == list(range(134, 263))
    event = Event(
        space_id=feed.space_id, seq=263, op_id=new_id(), entity_type="task", entity_id="t",
        kind="set", field="title", value="x", lamport=1, device_id=new_id(),
        user_id=new_id(), recorded_at="2026-12-07T00:00:00Z", schema_version=1,
    )  # fmt: skip
    feed.offer([event], 263.5)
    assert feed.committed_at[263] == 263.5


async def test_the_frame_cache_keeps_the_latest_pages(store: CountingStore) -> None:
    """A page's encoded frame is shared by every subscriber that asks for it; the cache
    holds the latest CACHE_FRAMES pages, the oldest going first."""
    log = await Log.new(store)
    await log.commit(CACHE_FRAMES + 1)
    feed = SpaceFeed(log.space, store)
    pages = [[e] for e in log.events[1:]]
    first = [feed.frame(page, log.head, msgpack=False) for page in pages]
    again = [feed.frame(page, log.head, msgpack=False) for page in pages[1:]]
    assert all(a is b for a, b in zip(again, first[1:], strict=True)), "still cached"
    oldest = feed.frame(pages[0], log.head, msgpack=False)
    assert oldest == first[0]
    assert oldest is not first[0], "the oldest was dropped, and encoded anew"
    assert feed.frame(pages[0], log.head, msgpack=True) != oldest


async def publish(bus: NatsBus, events: list[Event], at: float = 0.0) -> None:
    """Publish the hint another gateway publishes after committing ``events``."""
    first, last = events[0].seq, events[-1].seq
    subject, payload = space_hint(bus.prefix, events[0].space_id, first, last, at, events)
    await bus.publish(subject, payload)


async def learns(feed: SpaceFeed, head: int) -> None:
    """Wait until ``feed`` knows of ``head``."""

    async def known() -> bool:
        return feed.known_head == head

    await eventually(known, within=10)


async def test_hints_from_other_gateways_reach_a_watched_feed(
    store: CountingStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    """Another gateway's commits arrive as NATS hints: with their events (offered to the
    feed, never read back), without them (the head only), or malformed (logged and
    dropped). A hint for a space this gateway does not watch is ignored."""
    names = Names(bus.prefix)
    log = await Log.new(store)
    hub = FeedHub(store=store, bus=bus, pool=pool)
    woken = asyncio.Event()
    feed = await hub.watch(log.space, woken.set)
    assert bus.subjects.count(names.space(log.space)) == 1
    try:
        batch = await log.commit(3)
        woken.clear()
        await publish(bus, batch, at=1234.5)
        await learns(feed, log.head)
        assert woken.is_set()
        assert feed.committed_at[log.head] == 1234.5
        before = store.reads
        assert await feed.read_after(batch[0].seq - 1, 10) == batch
        assert store.reads == before, "the hint's events were kept, not read back"

        single = await log.commit(1)
        await publish(bus, single)  # no COMMIT time: the time it arrived
        await learns(feed, log.head)
        assert abs(feed.committed_at[log.head] - time.time()) < 30

        many = await log.commit(3)
        subject, payload = space_hint(bus.prefix, log.space, many[0].seq, many[-1].seq, 99.0)
        await bus.publish(subject, payload)  # the seqs only
        await learns(feed, log.head)
        assert feed.committed_at[log.head] == 99.0
        assert await feed.read_after(many[0].seq - 1, 10) == many
        assert store.reads == before + 1, "a hint without events: read once"

        other = await Log.new(store)
        with logs_of(json_logs) as logs:
            await bus.publish(names.space(log.space), b"{not a hint")
            await publish(bus, await other.commit(2))  # a space not watched here
            await log.commit(1)
            subject, payload = space_hint(bus.prefix, log.space, log.head, log.head, 0.0)
            await bus.publish(subject, payload)
            await learns(feed, log.head)
        assert log.head not in feed.committed_at, "no COMMIT time, none kept"
        assert has_line(
            logs, event="malformed space hint", subject=names.space(log.space), level="warning"
        )
    finally:
        await hub.close()
    assert names.space(log.space) not in bus.subjects, "closing unsubscribes"


async def test_a_hint_carrying_other_events_than_it_names_only_moves_the_head(
    store: CountingStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    """The events a hint carries are kept only when they end at its ``last_seq`` and
    belong to its space: otherwise the feed learns the head and reads the events."""
    log = await Log.new(store)
    hub = FeedHub(store=store, bus=bus, pool=pool)
    feed = await hub.watch(log.space, lambda: None)
    names = Names(bus.prefix)
    try:
        other = await Log.new(store)
        foreign = await other.commit(2)
        mine = await log.commit(2)
        # seqs 2..3 of this space, carrying another space's events 2..3, a repeat of
        # one event, and its seq 3 alone
        subject = names.space(log.space)
        for carried in (foreign, mine[:1] * 2, mine[1:]):
            hint = SpaceHint(
                space_id=log.space, first_seq=mine[0].seq, last_seq=mine[-1].seq,
                events=carried,
            )  # fmt: skip
            await bus.publish(subject, ENCODER.encode(hint))
        await learns(feed, log.head)
        await asyncio.sleep(0.1)  # every hint handled
        assert await feed.read_after(1, 10) == mine
    finally:
        await hub.close()


async def test_a_feed_unsubscribes_when_its_last_listener_leaves(
    store: CountingStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    log = await Log.new(store)
    subject = Names(bus.prefix).space(log.space)
    hub = FeedHub(store=store, bus=bus, pool=pool)

    def one() -> None:
        return None

    def two() -> None:
        return None

    await hub.watch(log.space, one)
    await hub.watch(log.space, two)
    assert bus.subjects.count(subject) == 1, "one subscription per space"
    await hub.unwatch(log.space, one)
    assert bus.subjects.count(subject) == 1
    await hub.unwatch(log.space, two)
    assert subject not in bus.subjects
    await hub.unwatch(log.space, two)  # again: nothing to do
    await hub.close()


async def test_a_watch_left_before_nats_answered_unsubscribes(
    store: CountingStore, bus: NatsBus, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device that subscribes and unsubscribes at once: the watch's NATS subscription,
    made after every listener left, is undone."""
    log = await Log.new(store)
    subject = Names(bus.prefix).space(log.space)
    hub = FeedHub(store=store, bus=bus, pool=pool)
    gate = asyncio.Event()
    real_subscribe = bus.subscribe

    async def held(subject: str, cb: object) -> object:
        await gate.wait()
        return await real_subscribe(subject, cb)  # type: ignore[arg-type]

    monkeypatch.setattr(bus, "subscribe", held)

    def wake() -> None:
        return None

    watching = asyncio.create_task(hub.watch(log.space, wake))
    await asyncio.sleep(0.05)
    await hub.unwatch(log.space, wake)
    gate.set()
    await watching
    assert subject not in bus.subjects
    await hub.close()


async def test_this_gateways_commits_reach_watched_feeds_only(
    store: CountingStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    log = await Log.new(store)
    hub = FeedHub(store=store, bus=bus, pool=pool)
    hub.committed(log.space, await log.commit(1), 1.0)  # not watched: nothing to do
    feed = await hub.watch(log.space, lambda: None)
    hub.committed(log.space, [], 2.0)  # nothing committed
    batch = await log.commit(2)
    hub.committed(log.space, batch, 3.0)
    assert feed.known_head == log.head
    assert feed.committed_at == {log.head: 3.0}
    await hub.close()


async def test_the_poll_runs_every_poll_interval_while_nats_is_down(
    store: CountingStore, pool: asyncpg.Pool
) -> None:
    """Without NATS no hint comes: the heads are polled every ``poll_interval``."""
    log = await Log.new(store)
    down = NatsBus("nats://127.0.0.1:1", prefix=f"down-{new_id()}")  # never started
    hub = FeedHub(store=store, bus=down, pool=pool, poll_interval=0.05, safety_interval=600)
    feed = await hub.watch(log.space, lambda: None)
    await hub.start()
    try:
        assert "feed-poll" in {t.get_name() for t in asyncio.all_tasks()}
        await log.commit(1)
        await learns(feed, log.head)
    finally:
        await hub.close()


async def test_the_poll_waits_safety_interval_while_nats_is_up(
    store: CountingStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    """With NATS up, hints bring the news; the poll is only a safety net, every
    ``safety_interval``."""
    log = await Log.new(store)
    hub = FeedHub(store=store, bus=bus, pool=pool, poll_interval=0.02, safety_interval=600)
    feed = await hub.watch(log.space, lambda: None)
    await hub.start()
    try:
        await log.commit(1)  # no hint is published for it
        await asyncio.sleep(0.5)
        assert feed.known_head == log.head - 1, "no poll yet"
        await hub.poll_once()
        assert feed.known_head == log.head
    finally:
        await hub.close()


def test_the_default_intervals() -> None:
    """One second without NATS, five with it (docs/operations.md)."""
    hub = FeedHub(store=None, bus=NatsBus("nats://x"), pool=None)  # type: ignore[arg-type]
    assert (hub.poll_interval, hub.safety_interval) == (1.0, 5.0)
