"""Field heads (``field_heads``, migrations 0008 and 0009): an append reads one row per
field it sets, whatever the field's history, a pred entry naming a head needs no event,
and the table always holds what the log says."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from core.ops import parse_op
from crdt import Violation
from eventstore import members
from eventstore.heads import FieldKey, field_key, write_heads
from eventstore.migrations import discover, migrate
from eventstore.postgres import PostgresEventStore
from eventstore.rows import Conn
from eventstore.testing import new_id, op, stored_heads
from eventstore.writer import Batch, lock_spaces
from tests.conftest import TEST_SECRET

#: Tuples the current transaction read from a table and its indexes so far.
READS = """
SELECT t.relname,
       coalesce(t.seq_tup_read, 0) + coalesce(t.idx_tup_fetch, 0)
       + coalesce((SELECT sum(pg_stat_get_xact_tuples_returned(i.indexrelid))
                   FROM pg_index i WHERE i.indrelid = t.relid), 0) AS tuples
FROM pg_stat_xact_user_tables t WHERE t.relname = ANY($1::text[])
"""


@pytest.fixture
async def solo(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, PostgresEventStore]]:
    """A store on a pool of one connection: every statement runs on the same backend."""
    one = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with PostgresEventStore(one, secret_key=TEST_SECRET, writers=1) as store:
            yield one, store
    finally:
        await one.close()


class Chain:
    """Sets of one field, each naming the one before (one head throughout)."""

    def __init__(self, space: str, entity_id: str) -> None:
        self.space, self.entity_id = space, entity_id
        self.head: str | None = None
        self.lamport = 0

    def next(self) -> dict[str, Any]:
        self.lamport += 1
        pred = None if self.head is None else [self.head]
        raw = op(self.space, entity_id=self.entity_id, lamport=self.lamport, pred=pred)
        self.head = raw["op_id"]
        return raw


async def _reads_of_one_push(
    pool: asyncpg.Pool, store: PostgresEventStore, user: str, raw: dict[str, Any]
) -> dict[str, int]:
    """Tuples of ``events`` and ``field_heads`` read by the append transaction of a one-op
    push, up to just before COMMIT (the fault hook's place)."""
    # Counts not yet flushed to the cumulative views show in the pg_stat_xact_ views of
    # the backend's next transaction too: flush them first (the store's one connection).
    await pool.execute("SELECT pg_stat_force_next_flush()")
    seen: dict[str, int] = {}

    async def hook(conn: Conn) -> None:
        for r in await conn.fetch(READS, ["events", "field_heads"]):
            seen[r["relname"]] = int(r["tuples"])

    store.fault_hook = hook
    try:
        out = await store.append(user_id=user, device_id=new_id(), ops=[raw])
    finally:
        store.fault_hook = None
    assert [r.status for r in out.results] == ["applied"]
    return {name: seen.get(name, 0) for name in ("events", "field_heads")}


async def _not_nearly_empty(store: PostgresEventStore, user: str) -> None:
    """1,000 events in a space of their own. On the nearly empty ``events`` of a database
    made for a run of one test, the planner looks a (space, op_id) pair up in the entity
    index, filtering the space's rows by op_id (4 tuples read where 2 are meant, when the
    second test here ran alone); with a table of any size it takes the unique index, the
    plan whose counts these tests are about."""
    space = await store.create_space(name="padding", creator_user_id=user, personal=False)
    chain = Chain(space, "padding")
    await store.append(user_id=user, device_id=new_id(), ops=[chain.next() for _ in range(1000)])


async def test_the_heads_lookup_reads_the_same_rows_whatever_the_history(
    solo: tuple[asyncpg.Pool, PostgresEventStore],
) -> None:
    """A set of a field with one earlier set, 1,000 and 3,000: the append reads the same
    tuples (the field's one heads row), not the field's history."""
    pool, store = solo
    user = new_id()
    space = await store.create_space(name="h", creator_user_id=user, personal=False)
    young, old = Chain(space, "young"), Chain(space, "old")
    await store.append(user_id=user, device_id=new_id(), ops=[young.next()])
    for _ in range(3):
        await store.append(user_id=user, device_id=new_id(), ops=[old.next() for _ in range(1000)])
    reads = {"history 1": await _reads_of_one_push(pool, store, user, young.next())}
    reads["history 3000"] = await _reads_of_one_push(pool, store, user, old.next())
    for _ in range(2):
        await store.append(user_id=user, device_id=new_id(), ops=[old.next() for _ in range(1000)])
    reads["history 5001"] = await _reads_of_one_push(pool, store, user, old.next())
    # The field's heads row: one index tuple and the table row it points to. The pred
    # names the field's head, with a lower lamport than the set's: the row vouches for
    # the entry, and its event is not read.
    assert reads["history 1"] == {"events": 0, "field_heads": 2}, reads
    assert reads["history 3000"] == reads["history 1"], reads
    assert reads["history 5001"] == reads["history 1"], reads


async def test_pred_entries_the_heads_cannot_vouch_for_are_read_from_events(
    solo: tuple[asyncpg.Pool, PostgresEventStore],
) -> None:
    """An entry naming an older set (not a head), and an entry of a field whose row has no
    lamport (written before migration 0009): the event is read (its index tuple and its
    row), the op applied; after that set, the row vouches again."""
    pool, store = solo
    user = new_id()
    await _not_nearly_empty(store, user)
    space = await store.create_space(name="h", creator_user_id=user, personal=False)
    chain = Chain(space, "t")
    first = chain.next()
    await store.append(user_id=user, device_id=new_id(), ops=[first, chain.next()])
    stale = op(space, entity_id="t", lamport=chain.lamport + 1, pred=[first["op_id"]])
    chain.lamport += 1
    assert await _reads_of_one_push(pool, store, user, stale) == {"events": 2, "field_heads": 2}
    chain.head = None  # two heads now: the chain's last set and ``stale``; name both
    both = list((await stored_heads(pool, space))[field_key("task", "t", "title")])
    chain.lamport += 1
    whole = op(space, entity_id="t", lamport=chain.lamport, pred=both)
    chain.head = whole["op_id"]
    assert await _reads_of_one_push(pool, store, user, whole) == {"events": 0, "field_heads": 2}
    await pool.execute("UPDATE field_heads SET lamport = NULL WHERE space_id = $1", space)
    reads = await _reads_of_one_push(pool, store, user, chain.next())
    assert reads == {"events": 2, "field_heads": 2}
    assert await _reads_of_one_push(pool, store, user, chain.next()) == {
        "events": 0,
        "field_heads": 2,
    }


async def test_only_an_op_above_the_heads_lamport_is_vouched_for(
    solo: tuple[asyncpg.Pool, PostgresEventStore],
) -> None:
    """A field with two heads, a (lamport 10) and b (3): the row keeps 10. A set naming b
    with lamport 11 is vouched for; one naming b with lamport 5, in the same push, is
    checked against b's event (3 < 5: applied); one naming a with lamport 7 is refused
    for a's lamport, 10, as the event says."""
    _, store = solo
    user = new_id()
    space = await store.create_space(name="h", creator_user_id=user, personal=False)
    a, b = op(space, lamport=10, value="a"), op(space, lamport=3, value="b")
    await store.append(user_id=user, device_id=new_id(), ops=[a, b])
    above = op(space, lamport=11, pred=[b["op_id"]])
    below = op(space, lamport=5, pred=[b["op_id"]])
    low = op(space, lamport=7, pred=[a["op_id"]])
    out = await store.append(user_id=user, device_id=new_id(), ops=[above, below, low])
    assert [r.status for r in out.results] == ["applied", "applied", "rejected"]
    assert out.results[2].error is not None
    assert out.results[2].error.message == (
        f"pred entry {a['op_id']} names an op with lamport 10, not lower than 7"
    )
    refused = op(space, lamport=12, pred=[a["op_id"]], field="notes")
    out = await store.append(user_id=user, device_id=new_id(), ops=[refused])
    assert out.results[0].error is not None
    assert "names no set of field 'notes'" in out.results[0].error.message


Heads = dict[FieldKey, set[str]]


def heads_from_log(events: list[tuple[str, str, str, str, str | None, str, list[str]]]) -> Heads:
    """The rule, straight: in seq order, a set of a field removes the heads it names and
    becomes one. ``events``: (space, entity_type, entity_id, kind, field, op_id, pred)."""
    heads: Heads = {}
    for space, entity_type, entity_id, kind, field, op_id, pred in events:
        if kind != "set" or field is None:
            continue
        current = heads.setdefault((space, entity_type, entity_id, field), set())
        current.difference_update(pred)
        current.add(op_id)
    return heads


async def _misplaced_lamports(conn: Conn | asyncpg.Pool, space: str) -> list[Any]:
    """Rows of the space's field_heads whose lamport is not their heads' highest."""
    return list(
        await conn.fetch(
            """
            SELECT f.field_key, f.lamport, max(e.lamport) AS highest
            FROM field_heads f CROSS JOIN LATERAL unnest(f.heads) AS h(op_id)
            JOIN events e ON e.space_id = f.space_id AND e.op_id = h.op_id
            WHERE f.space_id = $1
            GROUP BY f.field_key, f.lamport
            HAVING f.lamport IS DISTINCT FROM max(e.lamport)
            """,
            space,
        )
    )


def _keyed(heads: Heads) -> dict[str, set[str]]:
    return {field_key(f[1], f[2], f[3]): h for f, h in heads.items()}


async def _log_of(conn: Conn | asyncpg.Pool, space: str) -> Heads:
    rows = await conn.fetch(
        "SELECT space_id::text, entity_type, entity_id, kind, field, op_id::text,"
        " pred::text[] FROM events WHERE space_id = $1 ORDER BY seq",
        space,
    )
    return heads_from_log([tuple(r) for r in rows])


def _random_pushes(rng: random.Random, space: str, pushes: int) -> list[list[dict[str, Any]]]:
    """Sets of a few fields, preds naming any subset of what the field had (current
    heads or older sets), some deletes, some ops refused (a pred naming nothing)."""
    seen: dict[tuple[str, str], list[str]] = {}
    lamport = 0
    out: list[list[dict[str, Any]]] = []
    for _ in range(pushes):
        push = []
        for _ in range(rng.randint(1, 8)):
            lamport += 1
            entity = f"t:{rng.randint(1, 3)}.x-y_z"
            if rng.random() < 0.1:
                push.append(op(space, entity_id=entity, kind="delete", field=None, lamport=lamport))
                continue
            name = rng.choice(("title", "notes"))
            earlier = seen.setdefault((entity, name), [])
            pred = rng.sample(earlier, rng.randint(0, min(3, len(earlier))))
            if rng.random() < 0.05:
                pred.append(new_id())  # refused: names no stored op
            raw = op(space, entity_id=entity, field=name, value=f"v{lamport}", lamport=lamport)
            raw["pred"] = pred
            earlier.append(raw["op_id"])
            push.append(raw)
        out.append(push)
    return out


@pytest.mark.parametrize("stores", [1, 2])
async def test_the_table_holds_the_heads_the_log_gives(pool: asyncpg.Pool, stores: int) -> None:
    """Random pushes (one by one, then racing into shared groups; some ops refused, some
    repeated): ``field_heads`` equals the rule applied to the log. With two stores (two
    gateway processes) each push goes through either: whatever a store knew of the
    space's heads from its own last push may be out of date."""
    rng = random.Random(18)
    user = new_id()
    async with contextlib.AsyncExitStack() as stack:
        each = [
            await stack.enter_async_context(PostgresEventStore(pool, secret_key=TEST_SECRET))
            for _ in range(stores)
        ]
        space = await each[0].create_space(name="h", creator_user_id=user, personal=False)
        pushes = _random_pushes(rng, space, 30)
        for push in pushes[:15]:
            await rng.choice(each).append(user_id=user, device_id=new_id(), ops=push)
        await asyncio.gather(
            *(rng.choice(each).append(user_id=user, device_id=new_id(), ops=p) for p in pushes[15:])
        )
        await each[-1].append(user_id=user, device_id=new_id(), ops=pushes[3])  # duplicates
    expected = await _log_of(pool, space)
    assert sum(len(h) > 1 for h in expected.values()) > 0  # some fields are conflicted
    assert await stored_heads(pool, space) == _keyed(expected)
    assert await _misplaced_lamports(pool, space) == []


async def test_migration_0008_fills_the_table_from_the_log(
    fresh_database: Callable[..., Awaitable[str]],
) -> None:
    """Events stored before the table existed: the migration computes every field's heads
    from them, and appends after it carry on from there."""
    dsn = await fresh_database(migrated=False)
    conn = await asyncpg.connect(dsn)
    try:
        migrations = discover()
        await migrate(conn, [m for m in migrations if m.version < 8])
        # Before 0008 the store wrote no heads: stand in for it with writes through the
        # writer alone (space lock, numbering, COPY), as the store then did.
        user = new_id()
        space = await members.create_space(
            conn, secret_key=TEST_SECRET, schema_version=1, name="old", creator=user,
            personal=False,
        )  # fmt: skip
        rng = random.Random(8)
        for push in _random_pushes(rng, space, 25):
            async with conn.transaction():
                cursor = (await lock_spaces(conn, [space]))[space]
                batch = Batch(datetime.now(UTC), 1)
                for raw in push:
                    parsed = parse_op(raw, space, new_id())
                    assert not isinstance(parsed, Violation)
                    batch.add(cursor, parsed.op, user, None, b'"x"', bytes(32))
                await batch.flush(conn)
        expected = await _log_of(conn, space)
        assert sum(len(h) > 1 for h in expected.values()) > 0
        assert await migrate(conn, migrations) == [m.version for m in migrations if m.version >= 8]
        assert await stored_heads(conn, space) == _keyed(expected)
        # 0009 adds the heads' lamport, unknown for every row written before it.
        assert await conn.fetchval("SELECT count(*) FROM field_heads WHERE lamport IS NULL") > 0
        assert (
            await conn.fetchval("SELECT count(*) FROM field_heads WHERE lamport IS NOT NULL") == 0
        )
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "names",
    [
        ("task", "t-1", "title"),
        ("task", "a:b.c_d-e", "notes"),
        ("ü 😀", "it's", '\\ "$$'),
        ("", "", ""),
    ],
)
async def test_field_keys_agree_with_the_database(
    pool: asyncpg.Pool, names: tuple[str, str, str]
) -> None:
    """The append computes keys in Python, the migration's backfill in SQL: the same."""
    assert await pool.fetchval("SELECT field_key($1, $2, $3)::text", *names) == field_key(*names)


def test_field_keys_tell_names_apart() -> None:
    """Length prefixes: moving characters from one name to the next changes the key."""
    keys = {
        field_key("ab", "c", "d"),
        field_key("a", "bc", "d"),
        field_key("a", "b", "cd"),
        field_key("a1:b", "c", "d"),
    }
    assert len(keys) == 4


async def test_heads_are_written_as_typed_parameters(pool: asyncpg.Pool) -> None:
    """New rows and changed rows in one statement, a field's several heads together with
    their lamport (or none), and nothing but UUIDs: a head that is not one is refused by
    the database, nothing stored."""
    space = new_id()
    one, two = field_key("task", "t-1", "title"), field_key("task", "t-2", "title")
    a, b, c = new_id(), new_id(), new_id()

    async def lamports(conn: Conn) -> dict[str, int | None]:
        rows = await conn.fetch(
            "SELECT field_key::text, lamport FROM field_heads WHERE space_id = $1", space
        )
        return {r[0]: r[1] for r in rows}

    async with pool.acquire() as conn:
        await write_heads(conn, [], [])  # nothing to write: no statement
        await write_heads(conn, [(space, one, [a], 4), (space, two, [a, b], None)], [])
        assert await stored_heads(conn, space) == {one: {a}, two: {a, b}}
        assert await lamports(conn) == {one: 4, two: None}
        await write_heads(conn, [], [(space, one, [b, c], 9), (space, two, [c], 7)])
        assert await stored_heads(conn, space) == {one: {b, c}, two: {c}}
        assert await lamports(conn) == {one: 9, two: 7}
        with pytest.raises(asyncpg.DataError):
            await write_heads(conn, [], [(space, one, ["x'); DROP TABLE events; --"], 10)])
        assert await stored_heads(conn, space) == {one: {b, c}, two: {c}}
