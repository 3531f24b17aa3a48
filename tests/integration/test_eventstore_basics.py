"""PostgresEventStore on real PostgreSQL: spaces, members, appends, reads, server events."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from core.errors import Conflict, NotFound, Unavailable
from core.metrics import CONFLICTS, OPS
from core.ops import op_from_event
from core.ports import ServerAppend, ServerEvent
from core.wire import SERVER_DEVICE_ID
from crdt import EntityState
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from tests.conftest import TEST_SECRET


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def test_create_space_writes_member_added_as_seq_1(store: PostgresEventStore) -> None:
    owner = new_id()
    space = await store.create_space(name="home", creator_user_id=owner, personal=True)
    assert await store.head(space) == 1
    [event] = await store.read(space, 0, 10)
    assert event.seq == 1
    assert event.kind == "member_added"
    assert (event.entity_type, event.entity_id) == ("_member", owner)
    assert event.value == {"user_id": owner, "role": "owner", "previous_role": None, "by": owner}
    assert event.device_id == SERVER_DEVICE_ID
    assert event.user_id is None
    assert event.lamport == 0
    assert event.recorded_at.endswith("Z")
    assert await store.role_of(space, owner) == "owner"
    [membership] = await store.spaces_of(owner)
    assert (membership.space_id, membership.role, membership.personal) == (space, "owner", True)
    assert await store.members_of(space) == {owner: "owner"}


async def test_last_owner_cannot_leave_or_be_demoted(store: PostgresEventStore) -> None:
    owner = new_id()
    space = await store.create_space(name="solo", creator_user_id=owner, personal=False)
    with pytest.raises(Conflict):
        await store.change_member(space_id=space, user_id=owner, role=None, by=owner)
    with pytest.raises(Conflict):
        await store.change_member(space_id=space, user_id=owner, role="editor", by=owner)
    assert await store.head(space) == 1


async def test_unknown_space(store: PostgresEventStore) -> None:
    with pytest.raises(NotFound):
        await store.change_member(space_id=new_id(), user_id=new_id(), role="reader", by=new_id())
    assert await store.head(new_id()) == 0
    assert await store.head("not-a-uuid") == 0
    assert await store.role_of("nope", new_id()) is None
    assert await store.read(new_id(), 0, 10) == []
    assert await store.max_lamport([new_id(), "junk"]) == 0


async def test_append_then_duplicate_then_conflict(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="s", creator_user_id=user, personal=True)
    first = op(space, lamport=5, client_time="yesterday")
    out = await store.append(user_id=user, device_id=device, ops=[first])
    assert [(r.status, r.seq) for r in out.results] == [("applied", 2)]
    assert (out.server_lamport, out.head, out.space_id) == (5, 2, space)
    [event] = out.events
    assert (event.user_id, event.device_id, event.client_time) == (user, device, "yesterday")
    assert await store.read(space, 1, 10) == [event]

    again = await store.append(
        user_id=user, device_id=new_id(), ops=[first, {**first, "value": "x"}]
    )
    assert [(r.status, r.seq) for r in again.results] == [("duplicate", 2), ("rejected", None)]
    assert again.results[1].error is not None
    assert again.results[1].error.code == "op_id_conflict"
    assert again.events == []
    assert again.head == 2
    assert await store.head(space) == 2


async def test_same_op_id_twice_in_one_push(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="s", creator_user_id=user, personal=True)
    one = op(space)
    out = await store.append(user_id=user, device_id=device, ops=[one, one, {**one, "value": "y"}])
    statuses = [(r.status, r.seq, r.error and r.error.code) for r in out.results]
    assert statuses == [
        ("applied", 2, None),
        ("duplicate", 2, None),
        ("rejected", None, "op_id_conflict"),
    ]
    assert len(out.events) == 1


async def test_uppercase_ids_are_the_same_op(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="s", creator_user_id=user, personal=True)
    one = op(space)
    upper = {**one, "op_id": one["op_id"].upper(), "space_id": space.upper()}
    out = await store.append(user_id=user, device_id=device, ops=[one, upper])
    assert [r.status for r in out.results] == ["applied", "duplicate"]
    assert out.results[1].op_id == one["op_id"]  # answered in the canonical form


async def test_pred_may_name_an_earlier_op_of_the_same_push(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="s", creator_user_id=user, personal=True)
    a = op(space, lamport=1, value="a")
    b = op(space, lamport=2, value="b", pred=[a["op_id"]])
    late = op(space, lamport=4, value="d", pred=[new_id()])
    out = await store.append(user_id=user, device_id=device, ops=[b, a, late])
    codes = [r.error.code if r.error else r.status for r in out.results]
    assert codes == ["invalid_op", "applied", "invalid_op"]  # b named a before a came
    out = await store.append(user_id=user, device_id=device, ops=[a, b])
    assert [r.status for r in out.results] == ["duplicate", "applied"]
    state, seq = await store.replay_entity(space, "task", "t-1")
    assert state is not None
    assert seq == 3
    assert state.view().fields["title"].value == "b"


async def test_conflicts_are_counted_at_append_time(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="s", creator_user_id=user, personal=True)
    before = CONFLICTS.labels(entity_type="task", field="notes")._value.get()
    applied_before = OPS.labels(status="applied")._value.get()
    a = op(space, field="notes", value="a", lamport=1)
    b = op(space, field="notes", value="b", lamport=1)  # concurrent: no pred
    await store.append(user_id=user, device_id=device, ops=[a])
    await store.append(user_id=user, device_id=device, ops=[b])
    assert CONFLICTS.labels(entity_type="task", field="notes")._value.get() == before + 1
    resolve = op(space, field="notes", value="c", lamport=2, pred=[a["op_id"], b["op_id"]])
    await store.append(user_id=user, device_id=device, ops=[resolve])
    assert CONFLICTS.labels(entity_type="task", field="notes")._value.get() == before + 1
    assert OPS.labels(status="applied")._value.get() == applied_before + 3


async def test_conflicts_counted_as_entity_state_counts_them(store: PostgresEventStore) -> None:
    """Random histories of sets (preds naming some of a field's heads, several pushes
    racing into shared groups): the counter moves exactly as ``crdt.EntityState`` says
    a field is left with several heads, set after set in seq order."""
    rng = random.Random(7)
    user = new_id()
    space = await store.create_space(name="c", creator_user_id=user, personal=False)
    field_names = ("notes", "title")
    heads: dict[tuple[str, str], list[str]] = {}
    lamport = 0
    pushes: list[list[dict[str, Any]]] = []
    for _ in range(12):
        push = []
        for _ in range(rng.randint(1, 12)):
            entity, name = f"t{rng.randint(1, 3)}", rng.choice(field_names)
            current = heads.setdefault((entity, name), [])
            pred = rng.sample(current, rng.randint(0, len(current)))
            lamport += 1
            raw = op(space, entity_id=entity, field=name, value=f"v{lamport}", lamport=lamport)
            raw["pred"] = pred
            push.append(raw)
            current[:] = [h for h in current if h not in pred] + [raw["op_id"]]
        pushes.append(push)
    before = {n: CONFLICTS.labels(entity_type="task", field=n)._value.get() for n in field_names}
    # One by one (heads come from stored sets), then racing (pushes of one space share
    # a group, in queue order: heads also come from the group's earlier pushes).
    outcomes = [await store.append(user_id=user, device_id=new_id(), ops=p) for p in pushes[:6]]
    outcomes += await asyncio.gather(
        *(store.append(user_id=user, device_id=new_id(), ops=p) for p in pushes[6:])
    )
    assert all(r.status == "applied" for o in outcomes for r in o.results)
    expected = dict.fromkeys(field_names, 0)
    states: dict[str, EntityState] = {}
    for event in await store.read(space, 1, 1000):
        state = states.setdefault(event.entity_id, EntityState.new("task", event.entity_id))
        if state.apply(op_from_event(event)).conflicted:
            expected[event.field or ""] += 1
    assert sum(expected.values()) > 0
    after = {n: CONFLICTS.labels(entity_type="task", field=n)._value.get() for n in field_names}
    assert {n: after[n] - before[n] for n in field_names} == expected


async def test_server_events(store: PostgresEventStore) -> None:
    user = new_id()
    space = await store.create_space(name="s", creator_user_id=user, personal=True)
    await store.append(user_id=user, device_id=new_id(), ops=[op(space, lamport=7)])
    value = {"reminder_id": new_id(), "fire_at": "2030-01-01T00:00:00Z"}
    first = await store.append_server_event(
        space_id=space,
        kind="reminder_fired",
        entity_type="task",
        entity_id="t-1",
        value=value,
        key="fired:r1",
    )
    assert not first.duplicate
    assert (first.event.seq, first.event.lamport, first.event.user_id) == (3, 7, None)
    assert first.event.device_id == SERVER_DEVICE_ID
    assert first.event.field is None
    again = await store.append_server_event(
        space_id=space,
        kind="reminder_fired",
        entity_type="task",
        entity_id="t-1",
        value=value,
        key="fired:r1",
    )
    assert again.duplicate
    assert again.event == first.event
    assert await store.head(space) == 3
    with pytest.raises(NotFound):
        await store.append_server_event(
            space_id=new_id(),
            kind="reminder_fired",
            entity_type="task",
            entity_id="t",
            value=None,
            key="k",
        )


async def test_a_batch_of_server_events_fails_whole_on_a_transient_error(
    fresh_database: Callable[..., Awaitable[str]],
) -> None:
    """A transient failure while a batch is stored (here: a serialization failure raised
    by a trigger on the last event's row) stores none of it and raises Unavailable."""
    dsn = await fresh_database()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await pool.execute(
            """
            CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.entity_id = 'poison' THEN
                    RAISE EXCEPTION 'poisoned' USING ERRCODE = '40001';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_poison BEFORE INSERT ON events
                FOR EACH ROW EXECUTE FUNCTION refuse_poison();
            """
        )
        async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
            user = new_id()
            a = await store.create_space(name="a", creator_user_id=user, personal=False)
            b = await store.create_space(name="b", creator_user_id=user, personal=False)

            def server(space: str, entity_id: str) -> ServerEvent:
                return ServerEvent(
                    space_id=space, kind="reminder_fired", entity_type="task",
                    entity_id=entity_id, value=None, key=f"k:{entity_id}",
                )  # fmt: skip

            with pytest.raises(Unavailable):
                await store.append_server_events(
                    [server(a, "t1"), server(b, "t2"), server(new_id(), "t3"), server(b, "poison")]
                )
            assert (await store.head(a), await store.head(b)) == (1, 1)
            assert await pool.fetchval("SELECT count(*) FROM outbox WHERE head > 1") == 0
            # Retried without the poison, the same keys are stored as new events.
            outcomes = await store.append_server_events([server(a, "t1"), server(b, "t2")])
            stored = [o for o in outcomes if isinstance(o, ServerAppend)]
            assert [(o.duplicate, o.event.seq) for o in stored] == [(False, 2), (False, 2)]
    finally:
        await pool.close()


async def test_reads_and_streams(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="s", creator_user_id=user, personal=True)
    ops = [op(space, entity_id=f"t-{i % 3}", lamport=i + 1, value=f"v{i}") for i in range(30)]
    await store.append(user_id=user, device_id=device, ops=ops)
    assert [e.seq for e in await store.read(space, 10, 5)] == [11, 12, 13, 14, 15]
    async with contextlib.aclosing(store.iter_events(space, 5, 20, prefetch=4)) as it:
        assert [e.seq async for e in it] == list(range(6, 21))
    history = await store.entity_events(space, "task", "t-1", 0, 100)
    assert [e.value for e in history] == [f"v{i}" for i in range(1, 30, 3)]
    assert await store.max_lamport([space]) == 30
    states, seq = await store.replay_space(space)
    assert seq == 31
    assert len(states) == 4
    assert await store.verify(space) is None


async def test_outbox_rows_follow_heads(store: PostgresEventStore, pool: asyncpg.Pool) -> None:
    user = new_id()
    space = await store.create_space(name="s", creator_user_id=user, personal=True)
    await store.append(user_id=user, device_id=new_id(), ops=[op(space), op(space)])
    heads = await pool.fetch("SELECT head FROM outbox WHERE space_id = $1 ORDER BY head", space)
    assert [r["head"] for r in heads] == [1, 3]
    assert (
        await pool.fetchval("SELECT published_seq FROM outbox_cursors WHERE space_id = $1", space)
        == 0
    )


async def test_a_push_to_no_space_shares_a_group_and_spoils_nothing(
    store: PostgresEventStore,
) -> None:
    """Pushes racing into one group, the first to a space that does not exist: it is
    refused, and the others are looked up and answered as if alone, in the same
    transaction (not retried one by one)."""
    user = new_id()
    space = await store.create_space(name="g", creator_user_id=user, personal=True)
    stored = op(space, lamport=3)
    await store.append(user_id=user, device_id=new_id(), ops=[stored])
    follow = op(space, lamport=4, value="next", pred=[stored["op_id"]])
    before = len(store.committer.groups)
    nowhere, here = await asyncio.gather(
        store.append(user_id=user, device_id=new_id(), ops=[op(new_id())]),
        store.append(user_id=user, device_id=new_id(), ops=[stored, follow]),
    )
    assert [r.error.code for r in nowhere.results if r.error] == ["not_found"]
    assert [(r.status, r.seq) for r in here.results] == [("duplicate", 2), ("applied", 3)]
    assert store.committer.groups[before:] == [2]


async def test_ops_after_an_invalid_op_are_still_looked_up(store: PostgresEventStore) -> None:
    """An invalid op in a push does not hide the ops after it from the lookup: a
    duplicate after it is a duplicate, a pred after it finds its target."""
    user, device = new_id(), new_id()
    space = await store.create_space(name="i", creator_user_id=user, personal=True)
    stored = op(space, lamport=5)
    await store.append(user_id=user, device_id=device, ops=[stored])
    follow = op(space, lamport=6, value="next", pred=[stored["op_id"]])
    out = await store.append(
        user_id=user, device_id=device, ops=[op(space, kind="frob"), stored, follow]
    )
    assert [(r.status, r.seq) for r in out.results] == [
        ("rejected", None),
        ("duplicate", 2),
        ("applied", 3),
    ]


@contextlib.asynccontextmanager
async def _counting(
    database_url: str,
) -> AsyncIterator[tuple[PostgresEventStore, list[tuple[str, tuple[Any, ...]]]]]:
    """A store on a pool of its own whose connections note every statement they send,
    with its arguments."""
    sent: list[tuple[str, tuple[Any, ...]]] = []

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda logged: sent.append((logged.query, tuple(logged.args))))

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=init)
    try:
        async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
            yield store, sent
    finally:
        await pool.close()


async def test_one_transaction_a_push_unless_an_op_id_comes_back_above_the_top(
    database_url: str,
) -> None:
    """eventstore/append.py looks up every op_id at or below the space's highest stored
    lamport (a duplicate of the highest op among them) in the one transaction; only an
    op_id reused above it is found by UNIQUE, and the push runs again, looking up all."""
    async with _counting(database_url) as (store, sent):
        user, device = new_id(), new_id()
        space = await store.create_space(name="t", creator_user_id=user, personal=True)
        low, top = op(space, lamport=2), op(space, lamport=5)
        await store.append(user_id=user, device_id=device, ops=[low, top])
        for ops, answers, transactions in (
            ([top], ["duplicate"], 1),
            ([low, op(space, lamport=5, value="new")], ["duplicate", "applied"], 1),
            ([{**low, "lamport": 9}], ["op_id_conflict"], 2),
        ):
            sent.clear()
            out = await store.append(user_id=user, device_id=device, ops=ops)
            await asyncio.sleep(0)  # the loggers are called soon, not at once
            assert [r.error.code if r.error else r.status for r in out.results] == answers
            statements = [query for query, _ in sent]
            assert statements.count("BEGIN") == transactions, (answers, statements)


async def test_a_remove_names_a_stored_add_of_its_element(store: PostgresEventStore) -> None:
    """A remove's pred must name an add of the same element (docs/protocol.md): the
    stored add is compared by its value as stored."""
    user, device = new_id(), new_id()
    space = await store.create_space(name="r", creator_user_id=user, personal=True)
    add = op(space, kind="add", field="tags", value="red", lamport=1)
    await store.append(user_id=user, device_id=device, ops=[add])
    same = op(space, kind="remove", field="tags", value="red", lamport=2, pred=[add["op_id"]])
    other = op(space, kind="remove", field="tags", value="blue", lamport=2, pred=[add["op_id"]])
    out = await store.append(user_id=user, device_id=device, ops=[other, same])
    assert [r.error.code if r.error else r.status for r in out.results] == [
        "invalid_op",
        "applied",
    ]


async def test_only_sets_make_field_heads_and_conflicts(
    store: PostgresEventStore, pool: asyncpg.Pool
) -> None:
    """Concurrent adds to a set field are no conflict (concord_conflicts_total counts
    sets), and leave no field heads; concurrent sets of a field do, and are."""
    user = new_id()
    space = await store.create_space(name="h", creator_user_id=user, personal=True)
    before = CONFLICTS.labels(entity_type="task", field="tags")._value.get()
    adds = [op(space, kind="add", field="tags", value=v, lamport=1) for v in ("a", "b", "c")]
    await store.append(user_id=user, device_id=new_id(), ops=adds)
    assert CONFLICTS.labels(entity_type="task", field="tags")._value.get() == before
    count = "SELECT count(*) FROM field_heads WHERE space_id = $1"
    assert await pool.fetchval(count, space) == 0
    sets = [op(space, field="title", value=v, lamport=1) for v in ("a", "b")]
    await store.append(user_id=user, device_id=new_id(), ops=sets)
    assert await pool.fetchval(count, space) == 1


async def test_new_ops_above_the_top_are_not_looked_up(database_url: str) -> None:
    """The lookup of a push names the op_ids at or below the space's highest stored
    lamport, not new ops above it (they cannot be stored yet), nor a pred entry naming a
    head of the op's field; a pred entry naming an older set is read afterwards, in a
    statement of its own."""
    async with _counting(database_url) as (store, sent):
        user, device = new_id(), new_id()
        space = await store.create_space(name="k", creator_user_id=user, personal=True)
        first = op(space, lamport=3)
        await store.append(user_id=user, device_id=device, ops=[first])
        sent.clear()
        low, high = op(space, lamport=2), op(space, lamport=4, pred=[first["op_id"]])
        out = await store.append(user_id=user, device_id=device, ops=[low, high])
        await asyncio.sleep(0)
        assert [r.status for r in out.results] == ["applied", "applied"]
        # The group lookup (eventstore/append.py ``_LOOKUP``) and its arguments: ``high``
        # names the field's one head, with a lamport above its 3.
        [args] = [args for query, args in sent if "CROSS JOIN LATERAL" in query]
        assert [str(o) for o in args[3]] == [low["op_id"]]
        sent.clear()
        stale = op(space, lamport=5, pred=[first["op_id"]])  # the heads are low and high
        out = await store.append(user_id=user, device_id=device, ops=[stale])
        await asyncio.sleep(0)
        assert [r.status for r in out.results] == ["applied"]
        lookups = [args for query, args in sent if "CROSS JOIN LATERAL" in query]
        assert [[str(o) for o in args[3]] for args in lookups[:1]] == [[]]
        assert [[str(o) for o in args[1]] for args in lookups[1:]] == [[first["op_id"]]]
