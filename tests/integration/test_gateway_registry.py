"""What acts on every WebSocket connection of one gateway (gateway/ws/registry.py).

On the test run's PostgreSQL and NATS: a removal heard from another gateway ends the
removed member's subscriptions to that space and nothing else; a fired reminder reaches
the connected devices of the space's members only; a revoked session's sockets are
closed; a shutdown answers the push in flight, then closes every socket with 1001 within
its deadline. The connections are stand-ins holding what the registry reads of a
connection (the registry never touches a socket itself).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from core.events import ENCODER, MembershipChange, Names, NotificationEnvelope
from core.metrics import WS_CONNECTIONS
from core.natsbus import NatsBus
from core.wire import DEFAULT_LIMITS, Notification, NotificationMessage
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from gateway.committed import Announcer
from gateway.ws.feed import FeedHub
from gateway.ws.registry import CLOSE_SECONDS, FLUSH_SECONDS, Registry, running
from tests.conftest import TEST_SECRET, has_line, logs_of
from tests.integration.test_projector_support import eventually


class Sub:
    """A subscription: the seqs it was told its member was removed at."""

    def __init__(self) -> None:
        self.removed_at: list[int] = []

    def removed(self, seq: int) -> None:
        self.removed_at.append(seq)


class Conn:
    """A connection as the registry sees it."""

    def __init__(self, user_id: str, *spaces: str, close_seconds: float = 0.0) -> None:
        self.id = new_id()
        self.user_id = user_id
        self.device_id = new_id()
        self.session_id = new_id()
        self.generation = 1
        self.expires_at = 1_800_000_000.0
        self.subs = {space: Sub() for space in spaces}
        self.notes: list[NotificationMessage] = []
        self.closed: list[tuple[int, str]] = []
        self.flushes: list[float] = []
        self.closing = False
        self.push_lock = asyncio.Lock()
        self.close_seconds = close_seconds

    def notify(self, message: NotificationMessage) -> None:
        self.notes.append(message)

    async def close(self, code: int, reason: str, flush: float = 0.0) -> None:
        self.closing = True
        self.flushes.append(flush)
        await asyncio.sleep(self.close_seconds)
        self.closed.append((code, reason))


class Revocations:
    """The revocation cache's answer per session and token generation; ``failing`` makes
    every check raise."""

    def __init__(self) -> None:
        self.revoked: set[tuple[str, object]] = set()
        self.failing = False
        self.checks = 0

    async def is_revoked(self, session_id: str, generation: object) -> bool:
        self.checks += 1
        if self.failing:
            raise OSError("PostgreSQL is away")
        return (session_id, generation) in self.revoked


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


def make(
    store: PostgresEventStore,
    bus: NatsBus,
    pool: asyncpg.Pool,
    *,
    safety_interval: float = 5.0,
    **options: Any,
) -> Registry:
    """A registry on ``store`` and ``bus``, with its own feed hub; ``options`` are the
    registry's (its revocation cache a stand-in unless given)."""
    options.setdefault("revocations", Revocations())
    return Registry(
        FeedHub(store=store, bus=bus, pool=pool, safety_interval=safety_interval),
        store=store,
        bus=bus,
        announcer=Announcer(bus, bus.prefix, publish=False),
        **options,
    )


def fired(space_id: str, note_id: str = "n") -> Notification:
    """A fired reminder of a task of ``space_id``."""
    return Notification(
        id=note_id, space_id=space_id, entity_type="task", entity_id="t-1",
        kind="reminder_fired", fire_at="2026-12-07T04:00:00Z", fired_at="2026-12-07T04:00:01Z",
    )  # fmt: skip


def joined(registry: Registry, *conns: Conn) -> None:
    for conn in conns:
        registry.add(conn)  # type: ignore[arg-type]


async def test_a_removal_heard_over_nats_ends_that_members_subscriptions_to_that_space(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    names = Names(bus.prefix)
    space, other, user, someone = new_id(), new_id(), new_id(), new_id()
    registry = make(store, bus, pool)
    mine, theirs = Conn(user, space, other), Conn(someone, space)
    phone = Conn(user, space)
    joined(registry, mine, theirs, phone)
    async with running(registry):

        async def publish(change: MembershipChange) -> None:
            await bus.publish(names.membership(change.space_id), ENCODER.encode(change))

        await publish(MembershipChange(space_id=space, user_id=user, role="reader", seq=7))
        with logs_of(json_logs) as logs:
            await bus.publish(names.membership(space), b"[")
            await publish(MembershipChange(space_id=space, user_id=user, role=None, seq=9))

            async def ended() -> bool:
                return bool(mine.subs[space].removed_at and phone.subs[space].removed_at)

            await eventually(ended, within=10)
        assert mine.subs[space].removed_at == [9]
        assert phone.subs[space].removed_at == [9], "every device of the member"
        assert mine.subs[other].removed_at == [], "only that space"
        assert theirs.subs[space].removed_at == [], "only that member"
        assert has_line(
            logs,
            event="malformed membership change",
            subject=names.membership(space),
            level="warning",
        )
    assert names.membership("*") not in bus.subjects, "closing unsubscribes"


async def test_a_fired_reminder_reaches_the_devices_of_the_spaces_members_only(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    names = Names(bus.prefix)
    owner, editor, stranger = new_id(), new_id(), new_id()
    space = await store.create_space(name="r", creator_user_id=owner, personal=False)
    await store.change_member(space_id=space, user_id=editor, role="editor", by=owner)
    registry = make(store, bus, pool)
    conns = [Conn(owner), Conn(editor), Conn(editor), Conn(stranger)]
    joined(registry, *conns)
    note = fired(space)
    async with running(registry):
        with logs_of(json_logs) as logs:
            await bus.publish(names.notifications(space), b"{}")
            envelope = NotificationEnvelope(space_id=space, notification=note)
            await bus.publish(names.notifications(space), ENCODER.encode(envelope))

            async def delivered() -> bool:
                return all(c.notes for c in conns[:3])

            await eventually(delivered, within=10)
        await asyncio.sleep(0.1)
    assert [c.notes for c in conns] == [[NotificationMessage(notification=note)]] * 3 + [[]]
    assert has_line(
        logs, event="malformed notification", subject=names.notifications(space), level="warning"
    )
    assert names.notifications("*") not in bus.subjects


async def test_a_revoked_sessions_sockets_are_closed(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    revocations = Revocations()
    registry = make(store, bus, pool, revocations=revocations, revocation_interval=0.05)
    kept, revoked = Conn(new_id()), Conn(new_id())
    revoked.generation = 3
    joined(registry, kept, revoked)
    async with running(registry):
        assert "ws-revocations" in {t.get_name() for t in asyncio.all_tasks()}
        await asyncio.sleep(0.2)
        assert revocations.checks >= 2 * 2, "every connection, every interval"
        assert (kept.closed, revoked.closed) == ([], [])
        revocations.revoked.add((kept.session_id, 2))  # an older token of its session
        revocations.revoked.add((revoked.session_id, 3))

        async def closed() -> bool:
            return bool(revoked.closed)

        await eventually(closed, within=5)
        assert revoked.closed == [(4401, "session revoked")]
        assert kept.closed == []


async def test_revocation_checks_go_on_while_the_cache_cannot_answer(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    """A failing check closes nothing, is logged, and the checks go on."""
    revocations = Revocations()
    registry = make(store, bus, pool, revocations=revocations, revocation_interval=0.05)
    conn = Conn(new_id())
    joined(registry, conn, Conn(new_id()))
    async with running(registry):
        revocations.failing = True
        revocations.revoked.add((conn.session_id, conn.generation))
        with logs_of(json_logs) as logs:
            before = revocations.checks
            await asyncio.sleep(0.3)
        assert revocations.checks - before <= 8, "one failed check per interval, not one per socket"
        assert revocations.checks > before
        assert conn.closed == []
        assert has_line(logs, event="revocation check failed", error="PostgreSQL is away")
        revocations.failing = False

        async def closed() -> bool:
            return bool(conn.closed)

        await eventually(closed, within=5)


async def test_the_default_revocation_interval_is_half_a_second(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    registry = make(store, bus, pool)
    assert registry.accepting
    assert registry.revocation_interval == 0.5
    assert (registry.send_queue, registry.send_timeout) == (256, 10.0)
    assert registry.limits == DEFAULT_LIMITS


async def test_a_shutdown_answers_the_push_in_flight_then_closes_every_socket(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    registry = make(store, bus, pool)
    pushing, idle = Conn(new_id()), Conn(new_id())
    joined(registry, pushing, idle)
    order: list[str] = []
    await registry.start()
    with logs_of(json_logs) as logs:
        async with pushing.push_lock:
            stopping = asyncio.create_task(registry.close())
            await asyncio.sleep(0.05)
            assert not registry.accepting
            assert pushing.closed == [], "a push in flight is answered first"
            order.append("push answered")
        await stopping
    order.append("closed")
    assert order == ["push answered", "closed"]
    assert pushing.closed == [(1001, "server going away")]
    assert idle.closed == [(1001, "server going away")]
    assert pushing.flushes == idle.flushes == [FLUSH_SECONDS], "queued messages go out first"
    assert not has_line(logs, event="devices dropped at shutdown")


async def test_a_device_slow_to_close_is_given_the_flush_and_close_time(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    registry = make(store, bus, pool)
    slow = Conn(new_id(), close_seconds=FLUSH_SECONDS - CLOSE_SECONDS / 2)
    joined(registry, slow)
    with logs_of(json_logs) as logs:
        await registry.shutdown()
    assert slow.closed == [(1001, "server going away")]
    assert not has_line(logs, event="devices dropped at shutdown")


async def test_a_push_that_never_answers_does_not_hold_the_shutdown(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    registry = make(store, bus, pool)
    stuck, fine = Conn(new_id()), Conn(new_id())
    joined(registry, stuck, fine)
    started = time.monotonic()
    async with stuck.push_lock:  # a push in flight that never answers
        with logs_of(json_logs) as logs:
            await registry.shutdown(deadline=0.4)
    assert time.monotonic() - started < 1.5
    assert fine.closed == [(1001, "server going away")]
    assert stuck.closed == []
    [dropped] = [e for e in logs if e["event"] == "devices dropped at shutdown"]
    assert (dropped["late"], dropped["unclosed"]) == (1, 0)


async def test_a_device_that_reads_nothing_does_not_hold_the_shutdown(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    registry = make(store, bus, pool)
    stuck, fine = Conn(new_id(), close_seconds=30), Conn(new_id())
    already = Conn(new_id())
    already.closing = True
    joined(registry, stuck, fine, already)
    started = time.monotonic()
    with logs_of(json_logs) as logs:
        await registry.shutdown(deadline=0.5)
    assert time.monotonic() - started < 2.0
    assert fine.closed == [(1001, "server going away")]
    assert stuck.closed == []
    assert already.closed == [], "a socket already closing is left to its close"
    [dropped] = [e for e in logs if e["event"] == "devices dropped at shutdown"]
    assert (dropped["late"], dropped["unclosed"], dropped["level"]) == (0, 1, "warning")


async def test_a_shutdown_with_nothing_connected_returns_at_once(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool, json_logs: io.StringIO
) -> None:
    registry = make(store, bus, pool)
    with logs_of(json_logs) as logs:
        await registry.shutdown()
    assert not registry.accepting
    assert not has_line(logs, event="devices dropped at shutdown")


async def test_connections_are_counted_once(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    registry = make(store, bus, pool)
    conn = Conn(new_id())
    before = WS_CONNECTIONS._value.get()
    registry.add(conn)  # type: ignore[arg-type]
    registry.add(conn)  # type: ignore[arg-type]
    assert WS_CONNECTIONS._value.get() == before + 1
    registry.remove(conn)  # type: ignore[arg-type]
    registry.remove(conn)  # type: ignore[arg-type]
    assert WS_CONNECTIONS._value.get() == before
    assert registry.connections == set()


async def test_the_registry_is_the_announcers_local_while_it_runs(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    """What this gateway commits reaches its feeds and removals without NATS."""
    registry = make(store, bus, pool)
    announcer = registry._announcer
    owner = new_id()
    space = await store.create_space(name="l", creator_user_id=owner, personal=False)
    async with running(registry):
        assert announcer.local is registry
        user = new_id()
        conn = Conn(user, space)
        joined(registry, conn)
        announcer.local.member_changed(
            MembershipChange(space_id=space, user_id=user, role=None, seq=4)
        )
        assert conn.subs[space].removed_at == [4]
        feed = await registry.hub.watch(space, lambda: None)
        outcome = await store.append(user_id=owner, device_id=new_id(), ops=[op(space)])
        announcer.local.committed(space, outcome.events, 12.5)
        assert feed.known_head == outcome.head
        assert feed.committed_at == {outcome.head: 12.5}
        assert await feed.read_after(outcome.head - 1, 10) == outcome.events
    assert announcer.local is None


async def test_welcome_names_the_connection_and_the_limits(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    registry = make(store, bus, pool)
    conn = Conn(new_id())
    welcome = registry.welcome(conn, 42)  # type: ignore[arg-type]
    assert (welcome.user_id, welcome.device_id, welcome.server_lamport) == (
        conn.user_id,
        conn.device_id,
        42,
    )
    assert welcome.token_expires_at == "2027-01-15T08:00:00Z"
    assert welcome.limits == DEFAULT_LIMITS
