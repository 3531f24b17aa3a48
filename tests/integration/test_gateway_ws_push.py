"""``push`` over the WebSocket (gateway/ws/push.py, gateway/pushes.py) on real PostgreSQL.

Every op of a push gets exactly one result. When nothing of it may be applied (an
expired token, the device's rate, a store that fails) each op is rejected with that one
error and nothing is stored; a push over the size limits gets a single ``too_large``
error naming its batch. The connection is a stand-in holding what the push path reads
of one (its user, device, limits, token expiry and rate bucket) and recording what it
would send.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import asyncpg
import msgspec
import pytest

from core.errors import ConcordError, Unavailable
from core.metrics import AUTH_FAILURES, IDEMPOTENCY_HITS, OPS, PUSH_SECONDS
from core.ports import AppendOutcome
from core.wire import DEFAULT_LIMITS, Push, PushResult
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from gateway.limits import TokenBuckets
from gateway.ws.push import handle_push
from tests.conftest import TEST_SECRET, logged
from tests.integration.test_projector_support import new_space

pytestmark = pytest.mark.usefixtures("json_logs")  # the project's logging, as the gateway's


class Conn:
    """A connection as the push path sees it."""

    def __init__(self, store: Any, user_id: str, *, expired: bool = False) -> None:
        self.id = new_id()
        self.store = store
        self.user_id = user_id
        self.device_id = new_id()
        self.registry = SimpleNamespace(limits=DEFAULT_LIMITS)
        self.push_buckets = TokenBuckets(rate=0.0, burst=2)
        self._expired = expired
        self.errors: list[tuple[ConcordError, str | None]] = []
        self.sent: list[msgspec.Struct] = []

    def expired(self) -> bool:
        return self._expired

    async def send_error(self, error: ConcordError, ref: str | None = None) -> None:
        self.errors.append((error, ref))

    async def enqueue(self, message: msgspec.Struct) -> None:
        self.sent.append(message)


class Failing:
    """A store whose append raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def append(self, *, user_id: str, device_id: str, ops: Sequence[Any]) -> AppendOutcome:
        raise self.error


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


def push_of(ops: list[dict[str, Any]], batch_id: str = "b-1") -> Push:
    return msgspec.convert({"type": "push", "batch_id": batch_id, "ops": ops}, Push)


async def send(conn: Conn, push: Push, size: int) -> None:
    """``push`` arriving on ``conn`` in a frame of ``size`` bytes."""
    await handle_push(conn, push, size)  # type: ignore[arg-type]


async def stored(store: PostgresEventStore, space: str) -> int:
    return len(await store.read(space, 1, 1000))  # after the owner's member_added


async def test_a_push_is_stored_and_answered_one_result_per_op(
    store: PostgresEventStore,
) -> None:
    space, owner = await new_space(store)
    conn = Conn(store, owner)
    ops = [op(space, entity_id=f"t{i}", lamport=i + 1) for i in range(3)]
    seconds = PUSH_SECONDS._sum.get()
    hits = IDEMPOTENCY_HITS.labels(route="ws")._value.get()
    await send(conn, push_of(ops), 100)
    [result] = conn.sent
    assert isinstance(result, PushResult)
    assert result.batch_id == "b-1"
    assert [(r.op_id, r.status, r.seq) for r in result.results] == [
        (o["op_id"], "applied", seq) for o, seq in zip(ops, (2, 3, 4), strict=True)
    ]
    assert result.server_lamport == 3
    assert PUSH_SECONDS._sum.get() > seconds
    assert IDEMPOTENCY_HITS.labels(route="ws")._value.get() == hits, "no duplicate yet"
    await send(conn, push_of([*ops[:2], op(space, lamport=9)], "b-2"), 100)
    again = conn.sent[1]
    assert isinstance(again, PushResult)
    assert [r.status for r in again.results] == ["duplicate", "duplicate", "applied"]
    assert IDEMPOTENCY_HITS.labels(route="ws")._value.get() == hits + 2
    assert conn.errors == []


@pytest.mark.parametrize(("count", "size"), [(DEFAULT_LIMITS.max_ops_per_push + 1, 10), (1, None)])
async def test_a_push_over_the_limits_is_one_too_large_error_and_nothing_stored(
    store: PostgresEventStore, count: int, size: int | None
) -> None:
    space, owner = await new_space(store)
    conn = Conn(store, owner)
    frame = DEFAULT_LIMITS.max_message_bytes + 1 if size is None else size
    ops = [op(space, entity_id=f"t{i}") for i in range(count)]
    await send(conn, push_of(ops), frame)
    [(error, ref)] = conn.errors
    assert (error.code, ref) == ("too_large", "b-1")
    limits = DEFAULT_LIMITS
    assert error.message == (
        f"a push may carry at most {limits.max_ops_per_push} ops and "
        f"{limits.max_message_bytes} bytes"
    )
    assert conn.sent == []
    assert await stored(store, space) == 0


async def test_a_push_at_the_limits_is_stored(store: PostgresEventStore) -> None:
    space, owner = await new_space(store)
    conn = Conn(store, owner)
    ops = [op(space, entity_id=f"t{i}") for i in range(DEFAULT_LIMITS.max_ops_per_push)]
    await send(conn, push_of(ops), DEFAULT_LIMITS.max_message_bytes)
    assert conn.errors == []
    assert await stored(store, space) == len(ops)


async def test_an_expired_token_rejects_every_op_and_stores_nothing(
    store: PostgresEventStore,
) -> None:
    space, owner = await new_space(store)
    conn = Conn(store, owner, expired=True)
    failures = AUTH_FAILURES.labels(reason="expired")._value.get()
    rejected = OPS.labels(status="rejected")._value.get()
    ops = [op(space, entity_id=f"t{i}") for i in range(2)]
    await send(conn, push_of(ops), 100)
    [result] = conn.sent
    assert isinstance(result, PushResult)
    assert (result.batch_id, result.server_lamport) == ("b-1", 0)
    assert [(r.op_id, r.status, r.error and r.error.code) for r in result.results] == [
        (o["op_id"], "rejected", "auth_expired") for o in ops
    ]
    assert all(r.error is not None and r.error.retryable for r in result.results)
    assert {r.error and r.error.message for r in result.results} == {
        "access token expired: renew with auth, then resend"
    }
    assert AUTH_FAILURES.labels(reason="expired")._value.get() == failures + 1
    assert OPS.labels(status="rejected")._value.get() == rejected + 2
    assert await stored(store, space) == 0


async def test_past_the_devices_rate_every_op_is_rejected_as_rate_limited(
    store: PostgresEventStore,
) -> None:
    """The rate is the device's: another device of the same gateway pushes on."""
    space, owner = await new_space(store)
    conn = Conn(store, owner)  # a burst of two pushes, no refill
    for i in range(3):
        await send(conn, push_of([op(space, entity_id=f"t{i}")], f"b-{i}"), 100)
    last = conn.sent[-1]
    assert isinstance(last, PushResult)
    [r] = last.results
    assert (r.status, r.error and r.error.code) == ("rejected", "rate_limited")
    assert await stored(store, space) == 2
    tablet = Conn(store, owner)
    tablet.push_buckets = conn.push_buckets  # the gateway's buckets, keyed by device
    await send(tablet, push_of([op(space, entity_id="t9")]), 100)
    [answer] = tablet.sent
    assert isinstance(answer, PushResult)
    assert [r.status for r in answer.results] == ["applied"]


async def test_a_store_that_refuses_rejects_every_op_with_its_error() -> None:
    conn = Conn(Failing(Unavailable("storage unavailable")), new_id())
    ops = [op(new_id(), entity_id=f"t{i}") for i in range(2)]
    await send(conn, push_of(ops), 100)
    [result] = conn.sent
    assert isinstance(result, PushResult)
    assert [(r.status, r.error and r.error.message) for r in result.results] == [
        ("rejected", "storage unavailable")
    ] * 2


async def test_an_internal_error_is_answered_with_a_reference_only(json_logs: io.StringIO) -> None:
    """An internal error's text stays in the log: the device sees a reference to it."""
    conn = Conn(Failing(ConcordError("relation events is broken at /var/lib/pg")), new_id())
    await send(conn, push_of([op(new_id())], "b-5"), 100)
    [result] = conn.sent
    assert isinstance(result, PushResult)
    [r] = result.results
    assert r.error is not None
    assert r.error.code == "internal"
    assert "/var/lib/pg" not in r.error.message
    assert r.error.message.startswith("internal error; reference ")
    [line] = [e for e in logged(json_logs) if e["event"] == "internal error"]
    assert line["reference"] in r.error.message
    assert "/var/lib/pg" in line["error"]
    assert (line["connection"], line["batch_id"]) == (conn.id, "b-5")


async def test_a_store_bug_rejects_every_op_as_unavailable_and_is_logged(
    json_logs: io.StringIO,
) -> None:
    """Never let a store bug kill the connection silently."""
    conn = Conn(Failing(KeyError("seq")), new_id())
    ops = [op(new_id(), entity_id=f"t{i}") for i in range(2)]
    await send(conn, push_of(ops, "b-9"), 100)
    [result] = conn.sent
    assert isinstance(result, PushResult)
    assert result.batch_id == "b-9"
    assert [(r.op_id, r.status) for r in result.results] == [(o["op_id"], "rejected") for o in ops]
    assert {(r.error and r.error.code, r.error and r.error.message) for r in result.results} == {
        ("unavailable", "storage error: KeyError")
    }
    assert all(r.error is not None and r.error.retryable for r in result.results)
    [line] = [e for e in logged(json_logs) if e["event"] == "append failed"]
    assert (line["batch_id"], line["level"]) == ("b-9", "error")
    assert "KeyError: 'seq'" in line["exception"]
