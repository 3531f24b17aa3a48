"""The read model's reads at their edges (``projector.readmodel``) and the projector's
several-spaces batch (``projector.batch``) where the other tests leave them open: tests
written against the survivors of the ``readmodel`` mutation target (docs/development.md,
Mutation testing).

Each test works on a database of its own, where no projector runs: the test alone
decides what is projected (``apply_space``, ``apply_spaces``), so every seq is known.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

import projector.readmodel
from eventstore.postgres import PostgresEventStore
from eventstore.rows import Conn
from eventstore.testing import forge, new_id, op
from projector.apply import apply_space
from projector.batch import apply_spaces
from projector.readmodel import (
    InvalidCursor,
    SpaceLag,
    decode_cursor,
    get_entity,
    lag_by_space,
    lag_of_spaces,
    list_entities,
    quarantine_count,
    quarantined,
)
from tests.conftest import TEST_SECRET, FreshStore
from tests.integration.test_projector_support import checkpoint, head, new_space, push, titled_state


async def _project(pool: asyncpg.Pool, space: str) -> int:
    """Apply every event of ``space`` to the read model; the checkpoint reached."""
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space)
    assert applied is not None
    return applied.seq


async def _ids(
    pool: asyncpg.Pool,
    space: str,
    entity_type: str | None = None,
    include_deleted: bool = False,
    limit: int = 100,
    after: str | None = None,
) -> tuple[list[tuple[str, str]], int, str | None]:
    states, seq, cursor = await list_entities(
        pool, space, entity_type, include_deleted, limit, after
    )
    return [(s.entity_type, s.entity_id) for s in states], seq, cursor


async def _skip_a_ghost(store: PostgresEventStore, space: str) -> None:
    """A server event (a skipped reminder) on a task no client ever wrote."""
    await store.append_server_event(
        space_id=space,
        kind="reminder_skipped",
        entity_type="task",
        entity_id="ghost",
        value={"reminder_id": new_id(), "fire_at": "2030-01-01T09:00:00Z"},
        key=f"skip:{new_id()}",
    )


# --------------------------------------------------------------------------- get_entity


async def test_an_entity_read_names_nothing_it_cannot_look_up(fresh_store: FreshStore) -> None:
    """An id that is no space, text PostgreSQL cannot hold (a NUL, a lone surrogate) and
    a space the projector has not reached yet all read as unknown at seq 0, without a
    query that fails; any spelling of the space's UUID reads the same entity."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-1", value="a", lamport=1)])
    # Events in the log, none projected: the read model knows nothing of the space yet.
    assert await get_entity(pool, space, "task", "t-1") == (None, 0)
    assert await _project(pool, space) == 2
    state, seq = await get_entity(pool, space.upper(), "task", "t-1")
    assert state is not None
    assert (state.entity_id, state.view().fields["title"].value, seq) == ("t-1", "a", 2)
    assert await get_entity(pool, "not-a-space", "task", "t-1") == (None, 0)
    assert await get_entity(pool, new_id(), "task", "t-1") == (None, 0)
    for entity_type, entity_id in (("ta\x00sk", "t-1"), ("task", "t\x00-1"), ("task", "t\ud800")):
        assert await get_entity(pool, space, entity_type, entity_id) == (None, 0)


async def test_an_entity_of_server_events_only_or_of_a_hidden_type_reads_as_absent(
    fresh_store: FreshStore,
) -> None:
    """A task only a server event touched (a reminder event for a task never written)
    and any ``_``-type row, even one that claims client events, answer None at the
    checkpoint's seq: the gateway's 404, not a fold from the log."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-1", value="a", lamport=1)])
    await _skip_a_ghost(store, space)
    checkpoint = await _project(pool, space)
    assert checkpoint == 3
    client_events = await pool.fetchval(
        "SELECT has_client_events FROM entity_states WHERE space_id = $1 AND entity_id = $2",
        uuid.UUID(space),
        "ghost",
    )
    assert client_events is False
    assert await get_entity(pool, space, "task", "ghost") == (None, checkpoint)
    await pool.execute(
        "INSERT INTO entity_states (space_id, entity_type, entity_id, state, applied_seq,"
        " has_client_events) VALUES ($1, '_hidden', 'h-1', $2, 1, true)",
        uuid.UUID(space),
        titled_state("_hidden", "h-1"),
    )
    assert await get_entity(pool, space, "_hidden", "h-1") == (None, checkpoint)
    assert await get_entity(pool, space, "_member", owner) == (None, checkpoint)


# --------------------------------------------------------------------------- list_entities


async def test_a_listing_refuses_what_is_not_one_of_its_cursors(fresh_store: FreshStore) -> None:
    for after in ("garbage", ":t-1", "task:t\x00-1", "task:t\ud800"):
        with pytest.raises(InvalidCursor, match=r"^not a cursor of this listing: "):
            await list_entities(fresh_store.pool, new_id(), None, False, 10, after)
    # A type and an id that holds the separator itself: the id is the rest.
    assert decode_cursor("task:a:b") == ("task", "a:b")
    assert decode_cursor("task:") == ("task", "")


async def test_a_listing_of_nothing_answers_no_page_and_no_cursor(fresh_store: FreshStore) -> None:
    """No space, no page asked for (limit 0 or below): an empty answer at seq 0."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-1", value="a", lamport=1)])
    await _project(pool, space)
    for limit in (0, -1):
        assert await _ids(pool, space, limit=limit) == ([], 0, None)
    assert await _ids(pool, "not-a-space") == ([], 0, None)
    assert await _ids(pool, space.upper()) == ([("task", "t-1")], 2, None)


async def test_a_page_that_holds_the_last_entity_has_no_cursor(fresh_store: FreshStore) -> None:
    """Exactly ``limit`` entities left: the page is the last one (no cursor to an empty
    page), whether the states come from the table or are folded from the tail."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    device = new_id()
    ops = [op(space, entity_id=f"t-{i}", value="a", lamport=i + 1) for i in range(4)]
    await push(store, owner, device, ops)
    await _project(pool, space)
    assert await _ids(pool, space, limit=4) == ([("task", f"t-{i}") for i in range(4)], 5, None)
    page, _, cursor = await _ids(pool, space, limit=2)
    assert (page, cursor) == ([("task", "t-0"), ("task", "t-1")], "task:t-1")
    assert await _ids(pool, space, limit=2, after=cursor) == (
        [("task", "t-2"), ("task", "t-3")],
        5,
        None,
    )
    await push(store, owner, device, [op(space, entity_id="t-4", value="b", lamport=9)])
    assert await _ids(pool, space, limit=5) == ([("task", f"t-{i}") for i in range(5)], 6, None)


async def test_a_type_that_sorts_before_every_other_is_listed_from_the_start(
    fresh_store: FreshStore,
) -> None:
    """A schema's type names may start with a capital (``crdt.schema.NAME_RE``), which
    sorts before lower case in code-point order: the first page starts at the very
    first key, not after some other one, on both ways of the listing (table, tail)."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-1", value="a", lamport=1)])
    await _project(pool, space)
    await pool.executemany(
        "INSERT INTO entity_states (space_id, entity_type, entity_id, state, applied_seq,"
        " has_client_events) VALUES ($1, $2, $3, $4, 1, true)",
        [(uuid.UUID(space), t, i, titled_state(t, i)) for t, i in (("A", "a-1"), ("Note", "n-1"))],
    )
    want = [("A", "a-1"), ("Note", "n-1"), ("task", "t-1")]
    assert await _ids(pool, space) == (want, 2, None)
    await push(store, owner, new_id(), [op(space, entity_id="t-0", value="b", lamport=5)])
    assert await _ids(pool, space) == ([*want[:2], ("task", "t-0"), ("task", "t-1")], 3, None)


async def test_a_space_never_projected_lists_nothing_at_seq_0(fresh_store: FreshStore) -> None:
    """Before a space's first batch there is no checkpoint to fold a tail onto: the
    listing answers at seq 0 (the caller folds the log), even with the log at hand; from
    the first projected event on, it folds the rest."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-1", value="a", lamport=1)])
    assert await _ids(pool, space) == ([], 0, None)
    await pool.execute(
        "INSERT INTO projector_checkpoints (space_id, seq) VALUES ($1, 0)", uuid.UUID(space)
    )
    assert await _ids(pool, space) == ([], 0, None)
    # Once the first event (the owner's member_added) is projected, the rest is a tail.
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space, up_to=1)
    assert applied is not None
    assert applied.seq == 1
    assert await _ids(pool, space) == ([("task", "t-1")], 2, None)


async def test_a_tail_of_exactly_list_tail_max_events_is_folded_in(
    fresh_store: FreshStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-0", value="a", lamport=1)])
    assert await _project(pool, space) == 2
    tail = [op(space, entity_id=f"t-{i}", value="b", lamport=i + 1) for i in range(1, 4)]
    await push(store, owner, new_id(), tail)  # seqs 3..5
    every = [("task", f"t-{i}") for i in range(4)]
    monkeypatch.setattr(projector.readmodel, "LIST_TAIL_MAX", 3)
    assert await _ids(pool, space) == (every, 5, None)
    monkeypatch.setattr(projector.readmodel, "LIST_TAIL_MAX", 2)
    assert await _ids(pool, space) == ([("task", "t-0")], 2, None)


async def test_a_tail_lists_no_entity_of_server_events_only(fresh_store: FreshStore) -> None:
    """Events after the checkpoint that make no listed entity: a member added (the
    hidden ``_member`` type) and a server event on a task never written."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-1", value="a", lamport=1)])
    assert await _project(pool, space) == 2
    await store.change_member(space_id=space, user_id=new_id(), role="editor", by=owner)
    await _skip_a_ghost(store, space)
    assert await head(pool, space) == 4
    for entity_type in (None, "task", "_member"):
        for deleted in (False, True):
            want = [("task", "t-1")] if entity_type in (None, "task") else []
            assert await _ids(pool, space, entity_type, deleted) == (want, 4, None)


# --------------------------------------------------------------------------- quarantine


async def test_the_quarantine_is_listed_latest_first_by_ids_and_error_type(
    fresh_pool: asyncpg.Pool,
) -> None:
    pool = fresh_pool
    watched = _Watched(pool)
    assert await quarantined(cast(asyncpg.Pool, watched)) == (0, [])
    assert len(watched.read) == 1  # the count, and no list of nothing
    assert await quarantine_count(pool) == 0
    space = new_id()
    first = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    rows = [
        (uuid.UUID(space), seq, uuid.UUID(new_id()), "task", f"t-{seq}", "Boom", "secret", at)
        for seq, at in ((n, first + timedelta(seconds=n)) for n in range(1, 23))
    ]
    await pool.executemany(
        "INSERT INTO projector_quarantine (space_id, seq, op_id, entity_type, entity_id,"
        " error_type, error, quarantined_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        rows,
    )
    assert await quarantine_count(pool) == 22
    count, latest = await quarantined(pool)
    assert count == 22
    assert [q.seq for q in latest] == list(range(22, 2, -1))  # 20 by default
    count, [one] = await quarantined(pool, limit=1)
    assert count == 22
    assert (one.space_id, one.seq, one.op_id, one.entity_type, one.entity_id) == (
        space,
        22,
        str(rows[-1][2]),
        "task",
        "t-22",
    )
    assert (one.error_type, one.quarantined_at) == ("Boom", "2030-01-02T03:04:27.678000Z")


# --------------------------------------------------------------------------- lag


async def test_the_lag_lists_at_most_100_spaces_by_default(fresh_pool: asyncpg.Pool) -> None:
    async with PostgresEventStore(fresh_pool, secret_key=TEST_SECRET) as store:
        for _ in range(101):
            await new_space(store)
    assert len(await lag_by_space(fresh_pool, 1000)) == 101
    assert len(await lag_by_space(fresh_pool)) == 100


# --------------------------------------------------------------------------- batch


async def test_a_batch_of_no_spaces_sends_no_statement(fresh_store: FreshStore) -> None:
    calls: list[str] = []
    async with fresh_store.pool.acquire() as conn:
        conn.add_query_logger(lambda q: calls.append(q.query))
        done = await apply_spaces(conn, {})
        assert (done.applied, done.busy, calls) == ([], [], [])


async def test_a_batch_reports_a_reminder_change_only_when_there_is_one(
    fresh_store: FreshStore,
) -> None:
    """``apply_spaces`` loads each touched task's stored reminder key with its state: a
    later title-only edit of a task with a reminder changes nothing for the scheduler."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    device = new_id()
    when = "2030-01-01T09:00:00Z"
    remind = op(space, entity_id="t-9", field="remind_at", value=when, lamport=1)
    await push(store, owner, device, [remind])
    async with pool.acquire() as conn:
        first = await apply_spaces(conn, {space: await store.read(space, 0, 100)})
        [applied] = first.applied
        assert [(r.entity_id, r.reminder_id, r.remind_at) for r in applied.reminders] == [
            ("t-9", remind["op_id"], when)
        ]
        await push(store, owner, device, [op(space, entity_id="t-9", value="x", lamport=2)])
        second = await apply_spaces(conn, {space: await store.read(space, 2, 100)})
        [applied] = second.applied
        assert (applied.seq, applied.count, applied.reminders) == (3, 1, [])


class _Watched:
    """A pool that records each statement a read sends and the rows it got back, and
    runs ``then`` (once) right after the first row read on a connection it lends: another
    session's batch commits between a listing's first statement and the rest."""

    def __init__(
        self, pool: asyncpg.Pool, then: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        self.pool = pool
        self.then = then
        self.read: list[tuple[str, int]] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[object]:
        async with self.pool.acquire() as conn:
            yield _WatchedConn(conn, self)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(query, *args)
        self.read.append((query, len(rows)))
        return rows

    async def fetchval(self, query: str, *args: object) -> Any:
        self.read.append((query, 1))
        return await self.pool.fetchval(query, *args)

    def rows_from(self, table: str) -> list[int]:
        """The rows each statement reading ``table`` got back, in order."""
        return [n for query, n in self.read if f"FROM {table}" in query]


class _WatchedConn:
    def __init__(self, conn: Conn, owner: _Watched) -> None:
        self.conn = conn
        self.owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        rows = await self.conn.fetch(query, *args)
        self.owner.read.append((query, len(rows)))
        return rows

    async def fetchrow(self, query: str, *args: object) -> Any:
        row = await self.conn.fetchrow(query, *args)
        self.owner.read.append((query, 1))
        then, self.owner.then = self.owner.then, None
        if then is not None:
            await then()
        return row


async def test_a_listing_reads_the_checkpoint_and_the_states_in_one_snapshot(
    fresh_store: FreshStore,
) -> None:
    """A batch that commits while a listing runs, after it read the checkpoint: the
    listing still folds its tail onto the states of that checkpoint, never onto states
    that hold the tail already (a counter would count it twice)."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    device = new_id()

    def inc(value: int) -> dict[str, Any]:
        return op(space, entity_id="t-1", kind="inc", field="pomodoros", value=value, lamport=value)

    await push(store, owner, device, [inc(1)])
    assert await _project(pool, space) == 2
    await push(store, owner, device, [inc(2)])
    racing = _Watched(pool, then=lambda: _project(pool, space))
    states, seq, _ = await list_entities(cast(asyncpg.Pool, racing), space, None, False, 10, None)
    assert racing.then is None  # the batch did commit meanwhile
    assert [(s.entity_id, s.view().fields["pomodoros"].value) for s in states] == [("t-1", 3)]
    assert seq == 3
    assert await _ids(pool, space) == ([("task", "t-1")], 3, None)


async def test_a_tail_never_lists_a_hidden_type_whatever_its_row_holds(
    fresh_store: FreshStore,
) -> None:
    """The two ways of a listing agree on ``_`` types: the table's query never lists
    them, and neither does the fold of the tail, even for a ``_member`` row that holds
    a client's field (written here behind the projector's back) touched by a member
    added after the checkpoint."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-1", value="a", lamport=1)])
    assert await _project(pool, space) == 2
    member = new_id()
    await pool.execute(
        "INSERT INTO entity_states (space_id, entity_type, entity_id, state, applied_seq,"
        " has_client_events) VALUES ($1, '_member', $2, $3, 1, true)",
        uuid.UUID(space),
        member,
        titled_state("_member", member),
    )
    assert await _ids(pool, space) == ([("task", "t-1")], 2, None)  # the table's way
    await store.change_member(space_id=space, user_id=member, role="editor", by=owner)
    assert await _ids(pool, space) == ([("task", "t-1")], 3, None)  # the tail's way


async def test_the_lag_of_a_space_names_each_of_its_figures(fresh_pool: asyncpg.Pool) -> None:
    """Head, checkpoint and relay cursor all differ: each field of ``SpaceLag`` is read
    from its own column."""
    async with PostgresEventStore(fresh_pool, secret_key=TEST_SECRET) as store:
        space, owner = await new_space(store)
        ops = [op(space, entity_id=f"t-{i}", lamport=i + 1) for i in range(6)]
        await push(store, owner, new_id(), ops)  # head 7
    await fresh_pool.execute(
        "INSERT INTO projector_checkpoints (space_id, seq) VALUES ($1, 2)", uuid.UUID(space)
    )
    await fresh_pool.execute(
        "UPDATE outbox_cursors SET published_seq = 5 WHERE space_id = $1", uuid.UUID(space)
    )
    want = SpaceLag(
        space_id=space, head=7, projected_seq=2, published_seq=5, projector_lag=5, outbox_lag=2
    )
    assert await lag_by_space(fresh_pool) == [want]
    assert await lag_of_spaces(fresh_pool, [space]) == [want]


async def test_a_hole_in_one_space_log_stops_that_space_and_no_other(
    fresh_store: FreshStore,
) -> None:
    """Both spaces' delivered events leave a gap, so both are read from the log in one
    query; the first one's log lacks seq 4 (removed behind the store's back, what
    ``verify`` finds): it stops at seq 3, the space read after it still reaches its head."""
    pool, store = fresh_store.pool, fresh_store.store
    spaces = []
    for _ in range(2):
        space, owner = await new_space(store)
        ops = [op(space, entity_id=f"t-{i}", lamport=i + 1) for i in range(5)]
        await push(store, owner, new_id(), ops)  # seqs 1..6
        spaces.append(space)
    holed, whole = sorted(spaces)  # read in space_id order
    delivered = {s: (await store.read(s, 0, 100))[-1:] for s in spaces}  # seq 6 alone
    await forge(pool, "DELETE FROM events WHERE space_id = $1 AND seq = 4", holed)
    async with pool.acquire() as conn:
        done = await apply_spaces(conn, delivered)
    assert [(a.space_id, a.seq, a.count) for a in done.applied] == [(holed, 3, 3), (whole, 6, 6)]
    assert await checkpoint(pool, holed) == 3
    assert await checkpoint(pool, whole) == 6


async def test_a_listing_reads_a_page_of_rows_not_the_whole_space(fresh_store: FreshStore) -> None:
    """Keyset pagination: the table's query reads the page, one more row (is there a
    next page?) and one per entity the tail touches (set aside, folded instead)."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    ops = [op(space, entity_id=f"t-{i}", value="a", lamport=i + 1) for i in range(10)]
    await push(store, owner, new_id(), ops)
    await _project(pool, space)
    for entity_type in (None, "task"):
        watched = _Watched(pool)
        page, seq, after = await list_entities(
            cast(asyncpg.Pool, watched), space, entity_type, False, 2, None
        )
        assert ([s.entity_id for s in page], seq, after) == (["t-0", "t-1"], 11, "task:t-1")
        assert watched.rows_from("entity_states") == [3]
    await push(store, owner, new_id(), [op(space, entity_id="t-5", value="b", lamport=20)])
    for entity_type in (None, "task"):
        watched = _Watched(pool)
        page, seq, _ = await list_entities(
            cast(asyncpg.Pool, watched), space, entity_type, False, 2, "task:t-3"
        )
        assert ([s.entity_id for s in page], seq) == (["t-4", "t-5"], 12)
        assert page[1].view().fields["title"].value == "b"
        assert watched.rows_from("entity_states") == [4, 1]  # the page's rows, then t-5's


async def test_a_listing_far_behind_reads_no_more_of_the_log_than_it_may_fold(
    fresh_store: FreshStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Further behind than ``LIST_TAIL_MAX``, the listing reads one event more than it
    may fold (enough to know), never the whole lag."""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-0", value="a", lamport=1)])
    assert await _project(pool, space) == 2
    ops = [op(space, entity_id=f"t-{i}", value="b", lamport=i + 1) for i in range(1, 7)]
    await push(store, owner, new_id(), ops)  # seqs 3..8
    monkeypatch.setattr(projector.readmodel, "LIST_TAIL_MAX", 3)
    watched = _Watched(pool)
    page, seq, _ = await list_entities(cast(asyncpg.Pool, watched), space, None, False, 10, None)
    assert ([s.entity_id for s in page], seq) == (["t-0"], 2)
    assert watched.rows_from("events") == [4]
