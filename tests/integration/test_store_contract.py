"""The contract of ``core.ports.EventStore``: one suite, run against every adapter.

Every test speaks to the store through the port alone; the adapter's harness supplies
only what the port presupposes (accounts for invitations to name, a connection in an
open transaction for ``create_space_in``). An adapter joins the suite by adding its
harness to ``ADAPTERS``, as pyeventsourcing runs one recorder suite over each of its
recorders. The adapter's own behaviour (group commit, faults, SQL) is tested beside it
(tests/integration/test_eventstore_*.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from core.errors import Conflict, Forbidden, NotFound
from core.ops import op_from_event
from core.ports import Acceptance, EventStore, Invitation, RoleChange, ServerAppend, ServerEvent
from core.wire import SERVER_DEVICE_ID, Event
from crdt import EntityState
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, new_user, op
from tests.conftest import TEST_SECRET

DAY = 86_400.0


@dataclass(frozen=True)
class Harness:
    """A store under test and what its port presupposes."""

    store: EventStore
    #: A new account; its user_id.
    user: Callable[[], Awaitable[str]]
    #: A connection to the store's database in an open transaction, committed when the
    #: block ends, rolled back when it raises.
    transaction: Callable[[], AbstractAsyncContextManager[Any]]


@contextlib.asynccontextmanager
async def _postgres(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    async def user() -> str:
        return await new_user(pool)

    @contextlib.asynccontextmanager
    async def transaction() -> AsyncIterator[Any]:
        async with pool.acquire() as conn, conn.transaction():
            yield conn

    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
        yield Harness(store, user, transaction)


ADAPTERS: dict[str, Callable[[asyncpg.Pool], AbstractAsyncContextManager[Harness]]] = {
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(ADAPTERS))
async def harness(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    async with ADAPTERS[request.param](pool) as made:
        yield made


@pytest.fixture
def store(harness: Harness) -> EventStore:
    return harness.store


async def _space(h: Harness, *, personal: bool = False) -> tuple[str, str]:
    """A new space and its owner."""
    owner = await h.user()
    space = await h.store.create_space(name="s", creator_user_id=owner, personal=personal)
    return space, owner


def _statuses(results: list[Any]) -> list[str]:
    return [r.error.code if r.error else r.status for r in results]


# ------------------------------------------------------------------ spaces and members


async def test_a_space_begins_with_its_owner(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness, personal=True)
    assert await store.head(space) == 1
    [event] = await store.read(space, 0, 10)
    assert (event.seq, event.kind, event.entity_id) == (1, "member_added", owner)
    assert (event.device_id, event.user_id) == (SERVER_DEVICE_ID, None)
    assert await store.role_of(space, owner) == "owner"
    membership = await store.membership(space, owner)
    assert membership is not None
    assert (membership.role, membership.since_seq) == ("owner", 1)
    assert await store.members_of(space) == {owner: "owner"}
    [mine] = await store.spaces_of(owner)
    assert (mine.space_id, mine.role, mine.personal) == (space, "owner", True)


async def test_create_space_in_shares_the_callers_transaction(harness: Harness) -> None:
    owner = await harness.user()
    async with harness.transaction() as conn:
        kept = await harness.store.create_space_in(
            conn, name="kept", creator_user_id=owner, personal=False
        )
    dropped = ""

    async def roll_back() -> None:
        nonlocal dropped
        async with harness.transaction() as conn:
            dropped = await harness.store.create_space_in(
                conn, name="dropped", creator_user_id=owner, personal=False
            )
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        await roll_back()
    assert [m.space_id for m in await harness.store.spaces_of(owner)] == [kept]
    assert await harness.store.head(kept) == 1
    assert await harness.store.head(dropped) == 0


async def test_member_changes_are_events(harness: Harness, store: EventStore) -> None:
    """Add, re-role, remove: each an event carrying who, what before, what now and by
    whom; the current role and its ``since_seq`` follow; a no-op writes nothing."""
    space, owner = await _space(harness)
    other = await harness.user()
    added = await store.change_member(space_id=space, user_id=other, role="reader", by=owner)
    assert added is not None
    assert (added.kind, added.seq) == ("member_added", 2)
    assert await store.change_member(space_id=space, user_id=other, role="reader", by=owner) is None
    raised = await store.change_member(space_id=space, user_id=other, role="owner", by=owner)
    assert raised is not None
    assert (raised.kind, raised.value) == (
        "member_role_changed",
        {"user_id": other, "role": "owner", "previous_role": "reader", "by": owner},
    )
    membership = await store.membership(space, other)
    assert membership is not None
    assert membership.since_seq == raised.seq
    # The new owner removes the first: the space keeps an owner, so that is allowed.
    removed = await store.change_member(space_id=space, user_id=owner, role=None, by=other)
    assert removed is not None
    assert (removed.kind, removed.value["role"], removed.value["previous_role"]) == (
        "member_removed",
        None,
        "owner",
    )
    assert await store.role_of(space, owner) is None
    assert await store.membership(space, owner) is None
    assert await store.spaces_of(owner) == []
    assert await store.removal_after(space, owner, raised.seq) == removed
    assert await store.removal_after(space, owner, removed.seq) is None
    assert await store.change_member(space_id=space, user_id=owner, role=None, by=other) is None
    assert await store.members_of(space) == {other: "owner"}
    assert [e.seq for e in await store.read(space, 0, 100)] == [1, 2, 3, 4]


async def test_a_space_keeps_an_owner(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    with pytest.raises(Conflict):
        await store.change_member(space_id=space, user_id=owner, role=None, by=owner)
    with pytest.raises(Conflict):
        await store.change_member(space_id=space, user_id=owner, role="editor", by=owner)
    with pytest.raises(NotFound):
        await store.change_member(space_id=new_id(), user_id=owner, role="editor", by=owner)
    assert await store.head(space) == 1


# ------------------------------------------------------------------ append


async def test_appends_are_numbered_without_gaps(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    device = new_id()
    first = [op(space, entity_id=f"t{i}", lamport=i + 1) for i in range(3)]
    out = await store.append(user_id=owner, device_id=device, ops=first)
    assert [r.status for r in out.results] == ["applied"] * 3
    assert [r.seq for r in out.results] == [2, 3, 4]
    assert [r.op_id for r in out.results] == [o["op_id"] for o in first]
    assert (out.space_id, out.head, out.server_lamport) == (space, 4, 3)
    assert out.events == await store.read(space, 1, 10)
    stored = out.events[0]
    assert (stored.op_id, stored.value, stored.device_id, stored.user_id) == (
        first[0]["op_id"],
        "hello",
        device,
        owner,
    )
    more = await store.append(user_id=owner, device_id=device, ops=[op(space, lamport=9)])
    assert [r.seq for r in more.results] == [5]
    assert await store.head(space) == 5


async def test_an_op_id_is_stored_once(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    device = new_id()
    a = op(space, lamport=1)
    out = await store.append(user_id=owner, device_id=device, ops=[a, a])
    assert _statuses(out.results) == ["applied", "duplicate"]
    assert out.results[1].seq == out.results[0].seq
    changed = {**a, "value": "other"}
    again = await store.append(user_id=owner, device_id=new_id(), ops=[a, changed])
    assert _statuses(again.results) == ["duplicate", "op_id_conflict"]
    assert again.results[0].seq == out.results[0].seq
    assert again.events == []
    assert await store.head(space) == 2


async def test_who_may_push(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    reader, editor, stranger = await harness.user(), await harness.user(), await harness.user()
    await store.change_member(space_id=space, user_id=reader, role="reader", by=owner)
    await store.change_member(space_id=space, user_id=editor, role="editor", by=owner)
    ops = [op(space, lamport=1), op(space, entity_id="t-2", lamport=1)]
    refused = await store.append(user_id=reader, device_id=new_id(), ops=ops)
    assert _statuses(refused.results) == ["forbidden", "forbidden"]
    unknown = await store.append(user_id=stranger, device_id=new_id(), ops=ops)
    assert _statuses(unknown.results) == ["not_found", "not_found"]
    nowhere = [op(new_id(), lamport=1)]
    assert _statuses(
        (await store.append(user_id=owner, device_id=new_id(), ops=nowhere)).results
    ) == ["not_found"]
    assert await store.head(space) == 3
    applied = await store.append(user_id=editor, device_id=new_id(), ops=ops)
    assert _statuses(applied.results) == ["applied", "applied"]
    with pytest.raises(ValueError, match="device_id"):
        await store.append(user_id=owner, device_id="not a uuid", ops=ops)


async def test_each_op_is_judged_alone(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    good = op(space, lamport=1)
    dangling = op(space, entity_id="t-2", lamport=2, pred=[new_id()])
    unknown_type = op(space, entity_type="nope", lamport=1)
    far = op(space, entity_id="t-3", lamport=2**40)
    named = op(space, lamport=2, pred=[good["op_id"]])  # an earlier op of the push
    out = await store.append(
        user_id=owner, device_id=new_id(), ops=[good, dangling, unknown_type, "x", far, named]
    )
    assert _statuses(out.results) == [
        "applied",
        "invalid_op",
        "unknown_entity_type",
        "invalid_op",
        "invalid_op",
        "applied",
    ]
    assert [e.op_id for e in out.events] == [good["op_id"], named["op_id"]]


async def test_concurrent_pushes_to_one_space(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    pushes = [[op(space, entity_id=f"p{p}-{i}", lamport=1) for i in range(5)] for p in range(12)]
    outcomes = await asyncio.gather(
        *(store.append(user_id=owner, device_id=new_id(), ops=p) for p in pushes)
    )
    seqs = sorted(r.seq or 0 for o in outcomes for r in o.results)
    assert seqs == list(range(2, 62))
    events = await store.read(space, 1, 100)
    assert [e.seq for e in events] == seqs
    assert {e.op_id for e in events} == {o["op_id"] for p in pushes for o in p}


# ------------------------------------------------------------------ server events


async def test_server_events_are_keyed(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    await store.append(user_id=owner, device_id=new_id(), ops=[op(space, lamport=7)])
    value = {"reminder_id": new_id()}
    first = await store.append_server_event(
        space_id=space, kind="reminder_fired", entity_type="task", entity_id="t-1",
        value=value, key="fired:1",
    )  # fmt: skip
    assert not first.duplicate
    event = first.event
    assert (event.seq, event.kind, event.value, event.lamport) == (3, "reminder_fired", value, 7)
    assert (event.device_id, event.user_id, event.field) == (SERVER_DEVICE_ID, None, None)
    again = await store.append_server_event(
        space_id=space, kind="reminder_fired", entity_type="task", entity_id="t-1",
        value=value, key="fired:1",
    )  # fmt: skip
    assert again.duplicate
    assert again.event == event
    assert await store.head(space) == 3
    with pytest.raises(NotFound):
        await store.append_server_event(
            space_id=new_id(), kind="reminder_fired", entity_type="task", entity_id="t-1",
            value=value, key="fired:2",
        )  # fmt: skip


def _server(space: str, key: str, entity_id: str = "t-1") -> ServerEvent:
    return ServerEvent(
        space_id=space, kind="reminder_fired", entity_type="task", entity_id=entity_id,
        value={"key": key}, key=key,
    )  # fmt: skip


async def test_a_batch_of_server_events_answers_each_in_input_order(
    harness: Harness, store: EventStore
) -> None:
    a, owner = await _space(harness)
    b, _ = await _space(harness)
    await store.append(user_id=owner, device_id=new_id(), ops=[op(a, lamport=7)])
    before = await store.append_server_event(
        space_id=a, kind="reminder_fired", entity_type="task", entity_id="t-0",
        value={"key": "k0"}, key="k0",
    )  # fmt: skip
    assert before.event.seq == 3
    assert await store.append_server_events([]) == []
    gone = new_id()
    batch = [
        _server(b, "k1"),
        _server(a, "k2", "t-2"),
        _server(gone, "k3"),
        _server(a, "k0", "t-0"),  # stored before this batch
        _server("not-a-uuid", "k4"),
        _server(a, "k5", "t-5"),
        _server(a, "k2", "t-2"),  # twice in this batch: one event
        _server(b, "k6"),
    ]
    outcomes = await store.append_server_events(batch)
    assert len(outcomes) == len(batch)
    for i in (2, 4):
        error = outcomes[i]
        assert isinstance(error, NotFound), (i, error)
        assert not error.retryable
        assert error.message == f"no such space: {batch[i].space_id}"
    stored = [o for o in outcomes if isinstance(o, ServerAppend)]
    assert len(stored) == 6
    b1, a2, a0, a5, a2_again, b6 = stored
    assert [o.duplicate for o in stored] == [False, False, True, False, True, False]
    assert a0.event == before.event
    assert a2_again.event == a2.event
    # New events take the next seqs of their space, in input order.
    assert [a2.event.seq, a5.event.seq] == [4, 5]
    assert [b1.event.seq, b6.event.seq] == [2, 3]
    sent_in = [batch[0], batch[1], batch[3], batch[5], batch[6], batch[7]]
    for appended, sent in zip(stored, sent_in, strict=True):
        e = appended.event
        assert (e.space_id, e.kind, e.entity_type, e.entity_id) == (
            sent.space_id, sent.kind, sent.entity_type, sent.entity_id,
        )  # fmt: skip
        assert e.value == sent.value
        assert (e.device_id, e.user_id, e.field) == (SERVER_DEVICE_ID, None, None)
    assert a2.event.lamport == a5.event.lamport == 7
    assert await store.head(a) == 5
    assert await store.head(b) == 3
    assert await store.head(gone) == 0
    assert await store.read(a, 3, 10) == [a2.event, a5.event]
    assert await store.read(b, 1, 10) == [b1.event, b6.event]
    # The batch and the single append share keys: each way sees the other's events.
    single = await store.append_server_event(
        space_id=a, kind="reminder_fired", entity_type="task", entity_id="t-5",
        value={"key": "k5"}, key="k5",
    )  # fmt: skip
    assert single.duplicate
    assert single.event == a5.event
    again = await store.append_server_events([_server(b, "k6"), _server(a, "k7")])
    assert [(o.duplicate, o.event.seq) for o in again if isinstance(o, ServerAppend)] == [
        (True, 3),
        (False, 6),
    ]


# ------------------------------------------------------------------ invitations


def _code() -> bytes:
    return hashlib.sha256(secrets.token_bytes(16)).digest()


async def test_invitations(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    digest = _code()
    made = await store.invite(
        space_id=space, email="new@example.test", role="editor", by=owner,
        code_digest=digest, ttl_seconds=DAY, user_id=None,
    )  # fmt: skip
    assert isinstance(made, Invitation)
    assert (made.space_id, made.role, made.invited_by) == (space, "editor", owner)
    assert await store.invitations_of(space, after=None, limit=10) == [made]
    joiner = await harness.user()
    accepted = await store.accept_invitation(code_digest=digest, user_id=joiner)
    assert isinstance(accepted, Acceptance)
    assert accepted.role == "editor"
    assert accepted.event is not None
    assert accepted.event.kind == "member_added"
    assert await store.role_of(space, joiner) == "editor"
    assert await store.accept_invitation(code_digest=digest, user_id=await harness.user()) is None
    assert await store.invitations_of(space, after=None, limit=10) == []
    raised = await store.invite(
        space_id=space, email="j@example.test", role="owner", by=owner,
        code_digest=_code(), ttl_seconds=DAY, user_id=joiner,
    )  # fmt: skip
    assert isinstance(raised, RoleChange)
    assert raised.event is not None
    assert await store.role_of(space, joiner) == "owner"


async def test_only_owners_invite_and_cancel(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    editor = await harness.user()
    await store.change_member(space_id=space, user_id=editor, role="editor", by=owner)
    with pytest.raises(Forbidden):
        await store.invite(
            space_id=space, email="x@example.test", role="reader", by=editor,
            code_digest=_code(), ttl_seconds=DAY, user_id=None,
        )  # fmt: skip
    with pytest.raises(NotFound):
        await store.invite(
            space_id=new_id(), email="x@example.test", role="reader", by=owner,
            code_digest=_code(), ttl_seconds=DAY, user_id=None,
        )  # fmt: skip
    made = await store.invite(
        space_id=space, email="x@example.test", role="reader", by=owner,
        code_digest=_code(), ttl_seconds=DAY, user_id=None,
    )  # fmt: skip
    assert isinstance(made, Invitation)
    assert await store.cancel_invitation(space_id=space, invitation_id=made.invitation_id)
    assert not await store.cancel_invitation(space_id=space, invitation_id=made.invitation_id)


# ------------------------------------------------------------------ reads


async def test_reads_of_a_range(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    other, _ = await _space(harness)
    ops = [op(space, entity_id=f"t{i % 2}", lamport=i + 1) for i in range(6)]
    await store.append(user_id=owner, device_id=new_id(), ops=ops)
    everything = await store.read(space, 0, 100)
    assert [e.seq for e in everything] == list(range(1, 8))
    assert await store.read(space, 2, 3) == everything[2:5]
    assert await store.read(space, 7, 10) == []
    assert [e async for e in store.iter_events(space)] == everything
    assert [e async for e in store.iter_events(space, 3, 5)] == everything[3:5]
    t1 = await store.entity_events(space, "task", "t1", 0, 100)
    assert [e.seq for e in t1] == [3, 5, 7]
    assert await store.entity_events(space, "task", "t1", 3, 1) == [t1[1]]
    assert await store.max_lamport([space, other]) == 6
    assert await store.max_lamport([other]) == 0


async def test_malformed_or_unknown_ids_read_as_nothing(store: EventStore) -> None:
    for space in ("not-a-uuid", new_id()):
        assert await store.head(space) == 0
        assert await store.read(space, 0, 10) == []
        assert [e async for e in store.iter_events(space)] == []
        assert await store.entity_events(space, "task", "t-1", 0, 10) == []
        assert await store.role_of(space, new_id()) is None
        assert await store.membership(space, "nope") is None
        assert await store.members_of(space) == {}
        assert await store.replay_entity(space, "task", "t-1") == (None, 0)
        assert await store.replay_space(space) == ({}, 0)
        assert await store.verify(space) is None
    assert await store.spaces_of("nope") == []
    assert await store.max_lamport(["nope"]) == 0


def _folded(events: list[Event]) -> dict[tuple[str, str], EntityState]:
    states: dict[tuple[str, str], EntityState] = {}
    for event in events:
        key = (event.entity_type, event.entity_id)
        states.setdefault(key, EntityState.new(*key)).apply(op_from_event(event))
    return states


async def test_replay_is_the_fold_of_the_first_n_events(
    harness: Harness, store: EventStore
) -> None:
    space, owner = await _space(harness)
    a = op(space, value="a", lamport=1)
    b = op(space, value="b", lamport=2, pred=[a["op_id"]])
    c = op(space, entity_id="t-2", value="c", lamport=3)
    for push in ([a], [b, c]):
        await store.append(user_id=owner, device_id=new_id(), ops=push)
    events = await store.read(space, 0, 10)
    for as_of in (1, 2, 3, 4, None, 99):
        states, seq = await store.replay_space(space, as_of)
        upto = 4 if as_of is None else min(as_of, 4)
        assert seq == upto
        expected = _folded(events[:upto])
        assert {k: v.view() for k, v in states.items()} == {
            k: v.view() for k, v in expected.items()
        }
        state, seq = await store.replay_entity(space, "task", "t-1", as_of)
        assert seq == upto
        if ("task", "t-1") in expected:
            assert state is not None
            assert state.view() == expected[("task", "t-1")].view()
        else:
            assert state is None
    state, _ = await store.replay_entity(space, "task", "t-1")
    assert state is not None
    assert state.view().fields["title"].value == "b"


async def test_an_untouched_log_verifies(harness: Harness, store: EventStore) -> None:
    space, owner = await _space(harness)
    await store.append(user_id=owner, device_id=new_id(), ops=[op(space, lamport=1)])
    await store.change_member(space_id=space, user_id=await harness.user(), role="reader", by=owner)
    assert await store.verify(space) is None
