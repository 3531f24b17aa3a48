"""The gateway's space feed on real PostgreSQL and NATS (issue 15 items 11 and 14)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from core.events import MembershipChange
from core.metrics import BACKGROUND_ERRORS
from core.natsbus import NatsBus
from core.ports import ServerAppend, ServerEvent
from core.settings import Settings
from core.wire import Event
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from gateway.committed import Announcer, AnnouncingStore
from gateway.ws.feed import CACHE_EVENTS, FeedHub, SpaceFeed
from tests.conftest import TEST_SECRET, logs_of


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def space_with(store: PostgresEventStore, sets: int) -> tuple[str, str]:
    owner = new_id()
    space = await store.create_space(name="feed", creator_user_id=owner, personal=False)
    for start in range(0, sets, 500):
        ops = [op(space, entity_id=f"t-{i}", lamport=1) for i in range(start, start + 500)]
        await store.append(user_id=owner, device_id=new_id(), ops=ops[: sets - start])
    return space, owner


async def test_a_cursor_past_the_cache_tail_still_gets_its_page(
    store: PostgresEventStore,
) -> None:
    """With the cache holding seqs 1..10 and a cursor at 500, the page is 501..700:
    never an empty answer (a premature caught_up) while events follow the cursor."""
    space, _ = await space_with(store, 1000)
    feed = SpaceFeed(space, store)
    first = await feed.read_after(0, 10)
    assert [e.seq for e in first] == list(range(1, 11))
    page = await feed.read_after(500, 200)
    assert [e.seq for e in page] == list(range(501, 701))
    # and the cache still answers from the start of what it holds
    assert [e.seq for e in await feed.read_after(300, 5)] == list(range(301, 306))


async def test_a_cursor_far_past_the_cache_reads_straight_from_postgres(
    store: PostgresEventStore,
) -> None:
    space, _ = await space_with(store, CACHE_EVENTS + 600)
    feed = SpaceFeed(space, store)
    assert [e.seq for e in await feed.read_after(0, 3)] == [1, 2, 3]
    far = CACHE_EVENTS + 100
    assert [e.seq for e in await feed.read_after(far, 50)] == list(range(far + 1, far + 51))
    assert [e.seq for e in await feed.read_after(3, 2)] == [4, 5], "cache untouched"


async def test_the_safety_poll_outlives_an_unexpected_error(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    """asyncpg's InternalClientError (seen after pg_terminate_backend) killed the poll
    task for good; now every failure is logged, counted, and the loop goes on."""
    space, owner = await space_with(store, 1)
    hub = FeedHub(store=store, bus=bus, pool=pool, poll_interval=0.05, safety_interval=0.05)
    woken = asyncio.Event()
    feed = await hub.watch(space, woken.set)
    real_poll = hub.poll_once
    failures = 0

    async def failing_twice() -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise asyncpg.InternalClientError("cannot switch to state 12")
        await real_poll()

    hub.poll_once = failing_twice  # type: ignore[method-assign]
    before = BACKGROUND_ERRORS.labels(loop="feed-poll")._value.get()
    try:
        with logs_of(json_logs) as logs:
            await hub.start()
            head = feed.known_head
            woken.clear()  # watch's first look at the head may wake its listeners
            # A commit whose hint never comes (this hub's NATS subscription hears nothing,
            # the store publishes none): only the poll can find it.
            await store.append(user_id=owner, device_id=new_id(), ops=[op(space, lamport=2)])
            await asyncio.wait_for(woken.wait(), 10)
        assert feed.known_head == head + 1, "the poll went on after two failures"
        assert failures == 2
        assert BACKGROUND_ERRORS.labels(loop="feed-poll")._value.get() == before + 2
        failed = [e for e in logs if e["event"] == "feed poll failed; polling on"]
        assert [e["level"] for e in failed] == ["error", "error"]
    finally:
        await hub.close()


class CountingStore(AnnouncingStore):
    """The gateway's store, counting the reads of events."""

    reads = 0

    async def read(self, space_id: str, after: int, limit: int) -> list[Event]:
        self.reads += 1
        return await super().read(space_id, after, limit)


class HubOnly:
    """The announcer's ``Local``: the feed hub alone (no connections)."""

    def __init__(self, hub: FeedHub) -> None:
        self.hub = hub

    def committed(self, space_id: str, events: Sequence[Event], committed_at: float) -> None:
        self.hub.committed(space_id, events, committed_at)

    def member_changed(self, change: MembershipChange) -> None:
        return None


async def test_events_committed_by_this_gateway_are_not_read_back(
    pool: asyncpg.Pool, bus: NatsBus, settings: Settings
) -> None:
    """A subscriber at the head of a space gets what this gateway commits from memory:
    no query for it (issue 17: the local feed is handed the committed events)."""
    announcer = Announcer(bus, settings.nats_prefix)
    async with CountingStore(pool, announcer=announcer, secret_key=TEST_SECRET) as store:
        space, owner = await space_with(store, 3)
        hub = FeedHub(store=store, bus=bus, pool=pool)
        announcer.local = HubOnly(hub)
        feed = await hub.watch(space, lambda: None)
        head = feed.known_head
        assert [e.seq for e in await feed.read_after(0, 200)][-1] == head
        before = store.reads
        device = new_id()
        for i in range(20):
            ops = [op(space, entity_id=f"n-{i}", lamport=1)]
            await store.append(user_id=owner, device_id=device, ops=ops)
            page = await feed.read_after(head + i, 200)
            assert [e.seq for e in page] == [head + i + 1]
        assert feed.known_head == head + 20
        assert await feed.read_after(head + 20, 200) == [], "at the head: nothing new"
        assert store.reads == before, "every committed event came from memory"
        await hub.close()
        await announcer.close()


class Recorder:
    """The announcer's ``Local``: what was handed over, space by space."""

    def __init__(self) -> None:
        self.events: list[tuple[str, list[int]]] = []

    def committed(self, space_id: str, events: Sequence[Event], committed_at: float) -> None:
        self.events.append((space_id, [e.seq for e in events]))

    def member_changed(self, change: MembershipChange) -> None:
        return None


async def test_a_batch_of_server_events_is_announced_per_space(
    pool: asyncpg.Pool, bus: NatsBus, settings: Settings
) -> None:
    """The gateway's store announces what a batch stored: each space's new events once,
    in seq order; never a duplicate or an event kept out."""
    announcer = Announcer(bus, settings.nats_prefix, publish=False)
    recorder = Recorder()
    announcer.local = recorder
    async with AnnouncingStore(pool, announcer=announcer, secret_key=TEST_SECRET) as store:
        a = await store.create_space(name="a", creator_user_id=new_id(), personal=False)
        b = await store.create_space(name="b", creator_user_id=new_id(), personal=False)
        recorder.events.clear()

        def server(space: str, key: str) -> ServerEvent:
            return ServerEvent(
                space_id=space, kind="reminder_fired", entity_type="task", entity_id=key,
                value={"k": key}, key=key,
            )  # fmt: skip

        await store.append_server_events([server(a, "a1")])
        assert recorder.events == [(a, [2])]
        recorder.events.clear()
        outcomes = await store.append_server_events(
            [server(b, "b1"), server(a, "a1"), server(new_id(), "x"), server(a, "a2"),
             server(b, "b2")]
        )  # fmt: skip
        assert [not isinstance(o, ServerAppend) or o.duplicate for o in outcomes] == [
            False, True, True, False, False,
        ]  # fmt: skip
        assert sorted(recorder.events) == sorted([(a, [3]), (b, [2, 3])])
        recorder.events.clear()
        await store.append_server_events([server(a, "a2")])  # a duplicate only
        assert recorder.events == []


async def test_one_server_event_is_announced_once(
    pool: asyncpg.Pool, bus: NatsBus, settings: Settings
) -> None:
    announcer = Announcer(bus, settings.nats_prefix, publish=False)
    recorder = Recorder()
    announcer.local = recorder
    async with AnnouncingStore(pool, announcer=announcer, secret_key=TEST_SECRET) as store:
        a = await store.create_space(name="a", creator_user_id=new_id(), personal=False)
        recorder.events.clear()
        fields = {
            "space_id": a, "kind": "reminder_fired", "entity_type": "task",
            "entity_id": "t", "value": {"k": 1}, "key": "k1",
        }  # fmt: skip
        appended = await store.append_server_event(**fields)
        assert (appended.duplicate, appended.event.seq) == (False, 2)
        assert recorder.events == [(a, [2])]
        again = await store.append_server_event(**fields)
        assert again.duplicate
        assert recorder.events == [(a, [2])], "a duplicate is not announced again"


async def test_a_watch_in_progress_survives_another_listener_leaving(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first watch of a space makes its feed, then waits for NATS and the head. A
    second subscriber that joins and leaves meanwhile (a device's link opening and
    closing) must not unregister the feed under the first: that subscription was left
    on a feed no commit or hint reached, so its device received nothing more and a
    subscribe again answered ``caught_up`` at the old seq (the JS client's end-to-end
    suite failed so about one run in six)."""
    space, owner = await space_with(store, 1)
    hub = FeedHub(store=store, bus=bus, pool=pool)
    gate = asyncio.Event()
    real_subscribe = bus.subscribe

    async def held(subject: str, cb: object) -> object:
        await gate.wait()  # NATS answers only when the test says so
        return await real_subscribe(subject, cb)  # type: ignore[arg-type]

    monkeypatch.setattr(bus, "subscribe", held)
    woken: list[str] = []

    def first_wake() -> None:
        woken.append("first")

    def second_wake() -> None:
        woken.append("second")

    first = asyncio.create_task(hub.watch(space, first_wake))
    await asyncio.sleep(0.05)  # the first watch is waiting for NATS
    await hub.watch(space, second_wake)  # joins the feed being made ...
    await hub.unwatch(space, second_wake)  # ... and leaves before NATS answered
    gate.set()
    feed = await first
    woken.clear()  # the first look at the head may wake its listeners
    try:
        ops = [op(space, entity_id="t-after", lamport=5)]
        outcome = await store.append(user_id=owner, device_id=new_id(), ops=ops)
        hub.committed(space, outcome.events, 0.0)
        assert woken == ["first"], "the first subscriber's feed no longer hears commits"
        [added] = outcome.events
        assert feed.known_head == added.seq
        assert [e.seq for e in await feed.read_after(added.seq - 1, 10)] == [added.seq]
    finally:
        await hub.close()
