"""One WebSocket connection (gateway/ws/connection.py), in this process, on the test
run's PostgreSQL and NATS.

The socket is a stand-in with the four calls the connection makes of litestar's (an
inbox the test fills, and what was sent and how it was closed); everything behind it is
real: the event store, the registry and its feeds, access tokens. What a connection must
do by docs/protocol.md section 5 is checked frame by frame: hello first and only once,
the token checks, a role check on every subscribe, the renewal and its clock, the limits
on malformed messages and on a device too slow to read.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from core.events import Names
from core.metrics import AUTH_FAILURES, AUTH_RENEWALS
from core.natsbus import NatsBus
from core.wire import DEFAULT_LIMITS, NotificationMessage, Pong
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from gateway.limits import TokenBuckets
from gateway.tokens import AccessTokens, iso_utc
from gateway.ws import connection as connections
from gateway.ws.connection import MAX_BAD_IN_A_ROW, Connection, _byte_size
from gateway.ws.registry import Registry
from tests.conftest import TEST_SECRET, logged
from tests.integration.test_gateway_registry import Revocations, fired, make
from tests.integration.test_projector_support import eventually, new_space

ACCESS = AccessTokens(secrets.token_bytes(32), 900)


class Socket:
    """What a connection uses of litestar's ``WebSocket``."""

    def __init__(
        self, *, stuck: bool = False, slow: float = 0.0, stuck_close: bool = False
    ) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[str | bytes] = []
        self.closed: tuple[int, str] | None = None
        self.closes = 0
        #: A device that reads nothing: every send waits forever.
        self.stuck = stuck
        #: A device that reads slowly: each send takes this long.
        self.slow = slow
        #: A close frame that never goes out (flow control).
        self.stuck_close = stuck_close

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        """The device sends ``message`` (a dict is encoded as JSON)."""
        if isinstance(message, dict):
            message = json.dumps(message)
        key = "text" if isinstance(message, str) else "bytes"
        self.inbox.put_nowait({"type": "websocket.receive", key: message})

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send_text(self, data: str) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        await asyncio.sleep(self.slow)
        self.sent.append(data)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closes += 1
        if self.stuck_close:
            await asyncio.Event().wait()
        self.closed = (code, reason)
        self.inbox.put_nowait({"type": "websocket.disconnect"})

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        """What was sent, decoded; only the messages of type ``kind`` when given."""
        out = [
            msgspec.json.decode(m) if isinstance(m, str) else msgspec.msgpack.decode(m)
            for m in self.sent
        ]
        return [m for m in out if kind is None or m["type"] == kind]

    async def next(self, kind: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait until ``count`` messages of type ``kind`` were sent; every one sent so far."""

        async def arrived() -> bool:
            return len(self.messages(kind)) >= count

        await eventually(arrived, within=10, interval=0.01)
        return self.messages(kind)

    async def closing(self) -> tuple[int, str]:
        async def closed() -> bool:
            return self.closed is not None

        await eventually(closed, within=10, interval=0.01)
        assert self.closed is not None
        return self.closed


class Device:
    """One device's connection to the gateway, served by a task of this test."""

    def __init__(self, registry: Registry, store: PostgresEventStore, **options: Any) -> None:
        self.socket = Socket(
            stuck=options.pop("stuck", False),
            slow=options.pop("slow", 0.0),
            stuck_close=options.pop("stuck_close", False),
        )
        self.revocations: Revocations = options.pop("revocations", Revocations())
        self.conn = Connection(
            self.socket,  # type: ignore[arg-type]
            registry,
            store=store,
            access=options.pop("access", ACCESS),
            revocations=self.revocations,
            push_buckets=TokenBuckets(rate=100.0, burst=100),
            auth_grace=options.pop("auth_grace", 30.0),
            msgpack=options.pop("msgpack", False),
        )
        self.task = asyncio.create_task(self.conn.run())

    async def stop(self) -> None:
        self.socket.inbox.put_nowait({"type": "websocket.disconnect"})
        await asyncio.wait_for(self.task, 10)


def token(user_id: str, device_id: str, *, ttl: float = 900, session: str = "s-1") -> str:
    now = time.time()
    return ACCESS.sign(
        user_id=user_id,
        device_id=device_id,
        session_id=session,
        generation="g-1",
        issued_at=int(now),
        expires_at=int(now + ttl),
    )


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


@pytest.fixture
async def registry(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> AsyncIterator[Registry]:
    reg = make(store, bus, pool)
    await reg.start()
    yield reg
    await reg.close()


class World:
    """An owner with a space of three sets, and a stranger to it."""

    def __init__(self, store: PostgresEventStore, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.owner, self.stranger, self.device = new_id(), new_id(), new_id()
        self.space = ""

    async def make(self) -> World:
        self.space, self.owner = await new_space(self.store)
        ops = [op(self.space, entity_id=f"t{i}", lamport=10 + i) for i in range(3)]
        await self.store.append(user_id=self.owner, device_id=self.device, ops=ops)
        return self

    async def connect(self, user_id: str | None = None, **options: Any) -> Device:
        """A device of ``user_id`` (the owner) that sent hello with ``options['hello']``."""
        user = user_id or self.owner
        hello = options.pop("hello", {})
        device = Device(self.registry, self.store, **options)
        device.socket.send({"type": "hello", "token": token(user, self.device), **hello})
        return device


@pytest.fixture
async def world(store: PostgresEventStore, registry: Registry) -> World:
    return await World(store, registry).make()


async def test_hello_is_welcomed_with_the_users_lamport_and_the_limits(world: World) -> None:
    device = await world.connect(hello={"subscriptions": [{"space_id": world.space}]})
    [welcome] = await device.socket.next("welcome")
    assert (welcome["user_id"], welcome["device_id"]) == (world.owner, world.device)
    assert welcome["server_lamport"] == 12
    assert welcome["limits"] == msgspec.to_builtins(DEFAULT_LIMITS)
    assert device.conn.expires_at > time.time() + 800
    assert welcome["token_expires_at"] == iso_utc(device.conn.expires_at)
    [events] = await device.socket.next("events")
    assert [e["seq"] for e in events["events"]] == [1, 2, 3, 4]
    assert device.conn in world.registry.connections
    await device.stop()
    assert device.conn not in world.registry.connections
    assert device.conn.subs == {}
    assert device.conn._tasks == set(), "the writer, the clock, the subscription: all ended"


async def test_a_user_of_no_space_is_welcomed_with_lamport_zero(world: World) -> None:
    device = await world.connect(world.stranger)
    [welcome] = await device.socket.next("welcome")
    assert welcome["server_lamport"] == 0
    await device.stop()


@pytest.mark.parametrize(
    "first",
    [{"type": "ping"}, "not json", {"type": "hello"}, {"type": "subscribe", "space_id": "x"}],
)
async def test_the_first_message_must_be_hello(world: World, first: Any) -> None:
    device = Device(world.registry, world.store)
    device.socket.send(first)
    assert await device.socket.closing() == (4401, "the first message must be hello")
    await asyncio.wait_for(device.task, 10)
    assert device.socket.messages() == []


async def test_no_hello_in_time_is_closed_4408(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connections, "HELLO_TIMEOUT", 0.1)
    device = Device(world.registry, world.store)
    assert await device.socket.closing() == (4408, "no hello in time")
    await asyncio.wait_for(device.task, 10)


async def test_a_device_gone_before_hello_leaves_quietly(world: World) -> None:
    device = Device(world.registry, world.store)
    await device.stop()
    assert device.socket.closed is None
    assert device.conn not in world.registry.connections


@pytest.mark.parametrize(
    ("make_token", "reason", "label"),
    [
        (lambda w: "not a token", "invalid token", "invalid_token"),
        (
            lambda w: token(w.owner, w.device, ttl=-5),
            "token expired: refresh, then connect",
            "expired",
        ),
        (lambda w: token(w.owner, w.device, session="revoked"), "session revoked", "revoked"),
    ],
)
async def test_a_hello_whose_token_fails_is_closed_4401(
    world: World, make_token: Any, reason: str, label: str
) -> None:
    revocations = Revocations()
    revocations.revoked.add(("revoked", "g-1"))
    device = Device(world.registry, world.store, revocations=revocations)
    failures = AUTH_FAILURES.labels(reason=label)._value.get()
    device.socket.send({"type": "hello", "token": make_token(world)})
    assert await device.socket.closing() == (4401, reason)
    await asyncio.wait_for(device.task, 10)
    assert AUTH_FAILURES.labels(reason=label)._value.get() == failures + 1
    assert device.socket.messages("welcome") == []
    assert device.conn not in world.registry.connections


async def test_ping_pong_and_a_second_hello(world: World) -> None:
    device = await world.connect()
    device.socket.send({"type": "ping", "nonce": 7})
    device.socket.send({"type": "hello", "token": token(world.owner, world.device)})
    [pong] = await device.socket.next("pong")
    assert pong == {"type": "pong", "nonce": 7}
    [error] = await device.socket.next("error")
    assert error["error"]["code"] == "bad_message"
    assert error["error"]["message"] == "hello was already accepted"
    await device.stop()


async def test_malformed_messages_are_answered_until_ten_in_a_row(world: World) -> None:
    device = await world.connect()
    await device.socket.next("welcome")
    for _ in range(MAX_BAD_IN_A_ROW - 1):
        device.socket.send("{")
    device.socket.send({"type": "ping"})  # a good one: the count starts again
    for _ in range(MAX_BAD_IN_A_ROW - 1):
        device.socket.send({"type": "nonsense"})
    errors = await device.socket.next("error", 2 * (MAX_BAD_IN_A_ROW - 1))
    assert {e["error"]["code"] for e in errors} == {"bad_message"}
    assert device.socket.closed is None
    device.socket.send(b"\x00")
    assert await device.socket.closing() == (4400, "too many malformed messages")
    await asyncio.wait_for(device.task, 10)


async def test_every_subscribe_checks_the_role(world: World) -> None:
    device = await world.connect(world.stranger)
    await device.socket.next("welcome")
    device.socket.send({"type": "subscribe", "space_id": world.space})
    device.socket.send({"type": "subscribe", "space_id": "not-a-uuid"})
    device.socket.send({"type": "subscribe", "space_id": world.space.upper(), "after": -1})
    device.socket.send({"type": "subscribe", "space_id": "no", "after": 2**63})
    errors = await device.socket.next("error", 4)
    assert [(e["error"]["code"], e["ref"]) for e in errors] == [
        ("not_found", world.space),
        ("not_found", "not-a-uuid"),
        ("bad_message", world.space),
        ("bad_message", "no"),
    ]
    assert errors[2]["error"]["message"] == f"after must lie in 0..{2**63 - 1}"
    assert errors[0]["error"]["message"] == "no such space"
    assert device.socket.messages("events") == []
    await world.store.change_member(
        space_id=world.space, user_id=world.stranger, role="reader", by=world.owner
    )
    device.socket.send({"type": "subscribe", "space_id": world.space.upper(), "after": 2**63 - 1})
    await device.socket.next("caught_up")
    assert list(device.conn.subs) == [world.space], "the id canonicalised"
    await device.stop()


async def test_subscribing_again_resumes_and_unsubscribe_ends_it(
    world: World, bus: NatsBus
) -> None:
    device = await world.connect(hello={"subscriptions": [{"space_id": world.space, "after": 3}]})
    [events] = await device.socket.next("events")
    assert [e["seq"] for e in events["events"]] == [4]
    await device.socket.next("caught_up")
    sub = device.conn.subs[world.space]
    device.socket.send({"type": "subscribe", "space_id": world.space, "after": 1})
    await device.socket.next("caught_up", 2)  # from what it delivered, not from 1
    assert device.conn.subs[world.space] is sub, "the same subscription, resumed"
    device.socket.send({"type": "unsubscribe", "space_id": world.space.upper()})

    async def dropped() -> bool:
        return device.conn.subs == {}

    await eventually(dropped, within=10)
    assert sub.task is not None

    async def ended() -> bool:
        return sub.task is not None and sub.task.done()

    await eventually(ended, within=10)
    assert Names(bus.prefix).space(world.space) not in bus.subjects, "no longer watched"
    outcome = await world.store.append(
        user_id=world.owner, device_id=world.device, ops=[op(world.space, lamport=20)]
    )
    world.registry.committed(world.space, outcome.events, time.time())  # as a commit here
    device.socket.send({"type": "unsubscribe", "space_id": new_id()})  # never subscribed
    device.socket.send({"type": "ping", "nonce": 1})
    await device.socket.next("pong")
    assert len(device.socket.messages("events")) == 1, "nothing after unsubscribe"
    assert device.socket.messages("error") == []
    await device.stop()


async def test_a_subscription_of_a_member_removed_since_ends_at_the_removal(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    """Subscribing again after a removal (and an add back) that this subscription never
    delivered ends it at the removal, whatever the cursor says (section 5). This store
    announces nothing and the feed's safety poll waits ten minutes: only the subscribe
    can tell."""
    registry = make(store, bus, pool, safety_interval=600)
    await registry.start()
    try:
        await _removed_then_subscribed_again(await World(store, registry).make())
    finally:
        await registry.close()


async def _removed_then_subscribed_again(world: World) -> None:
    reader = new_id()
    await world.store.change_member(
        space_id=world.space, user_id=reader, role="reader", by=world.owner
    )
    device = await world.connect(reader, hello={"subscriptions": [{"space_id": world.space}]})
    await device.socket.next("caught_up")
    removed = await world.store.change_member(
        space_id=world.space, user_id=reader, role=None, by=world.owner
    )
    await world.store.change_member(
        space_id=world.space, user_id=reader, role="reader", by=world.owner
    )
    assert removed is not None
    device.socket.send({"type": "subscribe", "space_id": world.space, "after": 2**40})
    errors = await device.socket.next("error")
    assert errors[-1]["error"]["code"] == "not_found"
    assert removed.seq in [e["seq"] for m in device.socket.messages("events") for e in m["events"]]
    await device.stop()


async def test_too_many_subscriptions_are_refused(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    limits = msgspec.structs.replace(DEFAULT_LIMITS, max_subscriptions=1)
    registry = make(store, bus, pool, limits=limits)
    await registry.start()
    try:
        world = await World(store, registry).make()
        other = await store.create_space(name="d", creator_user_id=world.owner, personal=False)
        device = await world.connect(hello={"subscriptions": [{"space_id": world.space}]})
        device.socket.send({"type": "subscribe", "space_id": other})
        [error] = await device.socket.next("error")
        assert (error["error"]["code"], error["ref"]) == ("too_large", other)
        assert error["error"]["message"] == "too many subscriptions"
        await device.stop()
    finally:
        await registry.close()


async def test_a_renewal_of_the_same_device_is_ok_and_of_another_is_closed(
    world: World,
) -> None:
    device = await world.connect(hello={})
    await device.socket.next("welcome")
    renewals = AUTH_RENEWALS.labels(route="ws")._value.get()
    device.socket.send({"type": "auth", "token": token(world.owner, world.device, ttl=1800)})
    [ok] = await device.socket.next("auth_ok")
    assert ok["token_expires_at"] == iso_utc(device.conn.expires_at)
    assert device.conn.expires_at > time.time() + 1700
    assert AUTH_RENEWALS.labels(route="ws")._value.get() == renewals + 1
    expired = AUTH_FAILURES.labels(reason="expired")._value.get()
    device.socket.send({"type": "auth", "token": token(world.owner, world.device, ttl=-1)})
    [error] = await device.socket.next("error")
    assert AUTH_FAILURES.labels(reason="expired")._value.get() == expired + 1
    assert (error["error"]["code"], error["error"]["message"]) == (
        "auth_expired",
        "this token has expired too",
    )
    failures = AUTH_FAILURES.labels(reason="wrong_device")._value.get()
    device.socket.send({"type": "auth", "token": token(world.owner, new_id())})
    assert await device.socket.closing() == (4401, "token of another user or device")
    assert AUTH_FAILURES.labels(reason="wrong_device")._value.get() == failures + 1
    await asyncio.wait_for(device.task, 10)


async def test_a_renewal_by_another_user_is_closed(world: World) -> None:
    device = await world.connect()
    await device.socket.next("welcome")
    device.socket.send({"type": "auth", "token": token(world.stranger, world.device)})
    assert await device.socket.closing() == (4401, "token of another user or device")
    await asyncio.wait_for(device.task, 10)


async def test_the_auth_clock_warns_pauses_and_closes_after_the_grace(world: World) -> None:
    """A token close to its end: ``auth_expiring`` at once (less than 60 s are left),
    delivery paused at expiry (a reminder is held), 4401 after the grace."""
    device = Device(world.registry, world.store, auth_grace=0.2)
    device.socket.send({"type": "hello", "token": token(world.owner, world.device, ttl=2)})
    [welcome] = await device.socket.next("welcome")
    welcomed = time.time()
    [expiring] = await device.socket.next("auth_expiring")
    assert time.time() - welcomed < 0.5, "at once: less than a minute is left"
    assert expiring["expires_at"] == welcome["token_expires_at"]
    assert device.socket.messages()[0]["type"] == "welcome", "auth_expiring after welcome"

    async def paused() -> bool:
        return not device.conn.resumed.is_set()

    await eventually(paused, within=10, interval=0.01)
    assert device.conn.expired()
    assert device.socket.closed is None, "within the grace"
    assert await device.socket.closing() == (4401, "access token expired")
    late = time.time() - device.conn.expires_at
    assert 0.15 <= late < 0.8, f"closed {late:.2f} s after expiry, the grace is 0.2 s"
    await asyncio.wait_for(device.task, 10)


async def test_a_reminder_while_paused_is_sent_after_auth_ok(world: World) -> None:
    device = await world.connect()
    await device.socket.next("welcome")
    note = NotificationMessage(notification=fired(world.space))
    device.conn.notify(note)
    await device.socket.next("notification")
    device.conn.resumed.clear()  # the token expired: delivery paused
    device.conn.notify(note)
    await asyncio.sleep(0.1)
    assert len(device.socket.messages("notification")) == 1, "held while paused"
    device.socket.send({"type": "auth", "token": token(world.owner, world.device)})
    await device.socket.next("auth_ok")
    sent = await device.socket.next("notification", 2)
    assert [m["type"] for m in device.socket.messages()][-2:] == ["auth_ok", "notification"]
    assert sent[1] == msgspec.to_builtins(note)
    await device.stop()
    device.conn.notify(note)  # closed: dropped
    assert len(device.socket.messages("notification")) == 2


async def test_a_device_that_reads_nothing_is_closed_4429(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    registry = make(store, bus, pool, send_queue=2, send_timeout=0.2)
    await registry.start()
    try:
        world = await World(store, registry).make()
        device = await world.connect(stuck=True)
        for i in range(5):
            device.socket.send({"type": "ping", "nonce": i})
        assert await device.socket.closing() == (4429, "too slow: resume with after")
        await asyncio.wait_for(device.task, 10)
    finally:
        await registry.close()


async def test_msgpack_is_spoken_both_ways(world: World) -> None:
    device = Device(world.registry, world.store, msgpack=True)
    device.socket.send(
        msgspec.msgpack.encode({"type": "hello", "token": token(world.owner, world.device)})
    )
    device.socket.send(msgspec.msgpack.encode({"type": "ping", "nonce": "n"}))
    await device.socket.next("pong")
    assert all(isinstance(m, bytes) for m in device.socket.sent)
    await device.stop()


def test_a_frames_size_is_its_bytes() -> None:
    assert _byte_size(b"\xff\x00") == 2
    assert _byte_size("abc") == 3
    assert _byte_size("é€") == 5
    assert _byte_size("\ud800") == 3, "a lone surrogate counts as it would be sent"


async def test_a_push_is_answered_through_the_connection(world: World) -> None:
    device = await world.connect()
    ops = [op(world.space, entity_id="p", lamport=30)]
    device.socket.send({"type": "push", "batch_id": "b-1", "ops": ops})
    [result] = await device.socket.next("push_result")
    assert (result["batch_id"], [r["status"] for r in result["results"]]) == ("b-1", ["applied"])
    big = "x" * DEFAULT_LIMITS.max_message_bytes  # the frame is over the limit
    device.socket.send({"type": "push", "batch_id": big, "ops": ops})
    [error] = await device.socket.next("error")
    assert (error["error"]["code"], error["ref"]) == ("too_large", big)
    await device.stop()


async def test_a_failing_connection_task_closes_1011_and_is_logged(
    world: World, json_logs: io.StringIO
) -> None:
    device = await world.connect()
    await device.socket.next("welcome")
    device.conn.notify(object())  # type: ignore[arg-type]  # cannot be encoded: a bug
    assert await device.socket.closing() == (1011, "internal error")
    await asyncio.wait_for(device.task, 10)
    [line] = [e for e in logged(json_logs) if e["event"] == "connection task failed"]
    assert (line["connection"], line["level"]) == (device.conn.id, "error")
    assert "TypeError" in line["exception"]


async def queued(world: World, slow: float) -> Device:
    """A device taking ``slow`` seconds a message, welcomed, with four pongs queued."""
    device = await world.connect(slow=slow)
    await device.socket.next("welcome")
    for i in range(4):
        await device.conn.enqueue(Pong(nonce=i))
    return device


async def test_a_close_lets_the_queue_go_out_first_within_its_flush(world: World) -> None:
    device = await queued(world, slow=0.05)
    await device.conn.close(1001, "server going away", flush=0.5)
    assert [m["nonce"] for m in device.socket.messages("pong")] == [0, 1, 2, 3]
    assert device.socket.closed == (1001, "server going away")
    await device.conn.close(4401, "again")  # closed once only
    assert (device.socket.closes, device.socket.closed) == (1, (1001, "server going away"))
    await asyncio.wait_for(device.task, 10)


async def test_a_close_waits_for_the_queue_no_longer_than_its_flush(world: World) -> None:
    device = await queued(world, slow=0.2)
    started = time.monotonic()
    await device.conn.close(1001, "server going away", flush=0.3)
    assert 0.25 <= time.monotonic() - started < 0.7, "the queue would take 0.8 s"
    assert len(device.socket.messages("pong")) < 4
    assert device.socket.closed == (1001, "server going away")
    await asyncio.wait_for(device.task, 10)


async def test_a_close_without_flush_does_not_wait_for_the_queue(world: World) -> None:
    device = await queued(world, slow=0.2)
    started = time.monotonic()
    await device.conn.close(4429, "too slow")
    assert time.monotonic() - started < 0.5, "the queue takes 0.8 s to go out"
    assert len(device.socket.messages("pong")) < 4
    await asyncio.wait_for(device.task, 10)


async def test_a_close_frame_that_never_goes_out_does_not_hold_the_close(
    world: World,
) -> None:
    device = await world.connect(stuck_close=True)
    await device.socket.next("welcome")
    started = time.monotonic()
    await device.conn.close(1001, "server going away")
    assert 1.9 <= time.monotonic() - started < 2.6, "given two seconds, then left behind"
    await device.stop()


async def test_a_slow_reader_gets_every_message_in_order(
    store: PostgresEventStore, bus: NatsBus, pool: asyncpg.Pool
) -> None:
    """A queue of two, a device taking 20 ms a message: the pushes of the queue wait
    for room (within ``send_timeout``) and nothing is lost or reordered."""
    registry = make(store, bus, pool, send_queue=2, send_timeout=5.0)
    await registry.start()
    try:
        world = await World(store, registry).make()
        device = await world.connect(slow=0.02)
        for i in range(12):
            device.socket.send({"type": "ping", "nonce": i})
        pongs = await device.socket.next("pong", 12)
        assert [m["nonce"] for m in pongs] == list(range(12))
        assert device.socket.closed is None
        await device.stop()
    finally:
        await registry.close()


async def test_at_most_a_hundred_reminders_are_held_while_paused(world: World) -> None:
    device = await world.connect()
    await device.socket.next("welcome")
    device.conn.resumed.clear()
    notes = [NotificationMessage(notification=fired(world.space, f"n-{i}")) for i in range(130)]
    for note in notes:
        device.conn.notify(note)
    device.socket.send({"type": "auth", "token": token(world.owner, world.device)})
    await device.socket.next("notification", 100)
    await asyncio.sleep(0.1)
    held = [m["notification"]["id"] for m in device.socket.messages("notification")]
    assert held == [f"n-{i}" for i in range(30, 130)], "the latest hundred"
    await device.stop()


async def test_finished_tasks_are_not_kept(world: World) -> None:
    """Each reminder is sent by a task of its own: a long-lived connection must not keep
    them once done."""
    device = await world.connect()
    await device.socket.next("welcome")
    note = NotificationMessage(notification=fired(world.space))
    for _ in range(50):
        device.conn.notify(note)
    await device.socket.next("notification", 50)
    await asyncio.sleep(0.05)
    assert len(device.conn._tasks) <= 3, "the writer, the auth clock and nothing else"
    await device.stop()


async def test_a_frame_with_neither_text_nor_bytes_is_malformed(world: World) -> None:
    device = await world.connect()
    await device.socket.next("welcome")
    device.socket.inbox.put_nowait({"type": "websocket.receive"})
    [error] = await device.socket.next("error")
    assert error["error"]["code"] == "bad_message"
    await device.stop()
