"""The checkpoint shares the batch's transaction (projector/apply.py), shown by breaking it.

Faults are injected with triggers scoped to one space: a failure while the states are
written must leave the checkpoint where it was, a failure while the checkpoint is written
must leave the states where they were, and two ``apply_space`` calls racing on one space
(ordered with an advisory lock, not with sleeps) apply each event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import msgspec
import pytest

from eventstore.postgres import PostgresEventStore
from eventstore.rows import Conn
from eventstore.testing import new_id, op
from projector.apply import ERROR_TEXT_MAX, Applied, _plain, apply_space
from projector.readmodel import get_entity
from tests.conftest import TEST_SECRET
from tests.integration.test_projector_support import checkpoint, eventually, head, new_space, push

#: The advisory lock key the gate trigger waits on.
GATE = 0x5EED_0C0C


@pytest.fixture(scope="module")
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def tasks(store: PostgresEventStore, count: int) -> str:
    """A fresh space with ``count`` tasks t-0..t-(count-1), one title each."""
    space, owner = await new_space(store)
    ops = [op(space, entity_id=f"t-{i}", value=f"task {i}", lamport=i + 1) for i in range(count)]
    await push(store, owner, new_id(), ops)
    return space


async def owner_of(pool: asyncpg.Pool, space: str) -> str:
    user = await pool.fetchval(
        "SELECT user_id FROM members WHERE space_id = $1 AND role = 'owner'", space
    )
    return str(user)


async def install(pool: asyncpg.Pool, name: str, table: str, space: str, body: str) -> None:
    """A BEFORE INSERT OR UPDATE row trigger running ``body`` for rows of ``space`` only."""
    await pool.execute(
        f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.space_id = '{space}'::uuid THEN {body} END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table}
            FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )


async def remove(pool: asyncpg.Pool, name: str, table: str) -> None:
    await pool.execute(
        f"DROP TRIGGER IF EXISTS {name} ON {table}; DROP FUNCTION IF EXISTS {name}()"
    )


async def states(pool: asyncpg.Pool, space: str) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT entity_id, applied_seq FROM entity_states "
        "WHERE space_id = $1 AND entity_type = 'task'",
        space,
    )
    return {r[0]: r[1] for r in rows}


async def test_a_failed_upsert_leaves_the_checkpoint_where_it_was(
    pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    """One entity's upsert fails (transiently, so nothing is quarantined): no entity of
    the batch is written and the checkpoint does not move; the retry applies it all."""
    space = await tasks(store, 5)
    body = (
        "IF NEW.entity_id = 't-3' THEN RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END IF;"
    )
    await install(pool, "fail_t3", "entity_states", space, body)
    try:
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.SerializationError):
                await apply_space(conn, space)
        assert await checkpoint(pool, space) == 0
        assert (
            await pool.fetchval("SELECT count(*) FROM entity_states WHERE space_id = $1", space)
            == 0
        )
    finally:
        await remove(pool, "fail_t3", "entity_states")
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space)
    assert applied is not None
    assert (applied.seq, applied.count) == (await head(pool, space), 6)
    assert applied.reminders == [], "a new task without a reminder changes no reminder"
    assert await checkpoint(pool, space) == applied.seq
    assert sorted(await states(pool, space)) == [f"t-{i}" for i in range(5)]


async def test_a_failed_checkpoint_write_leaves_the_states_where_they_were(
    pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    """The states are written, then moving the checkpoint fails: the states must roll
    back with it, or the retry would apply the batch a second time."""
    space = await tasks(store, 3)
    async with pool.acquire() as conn:
        first = await apply_space(conn, space)
    assert first is not None
    before = await states(pool, space)
    owner = await owner_of(pool, space)
    await push(store, owner, new_id(), [op(space, entity_id="t-9", value="late", lamport=9)])
    body = "IF NEW.seq > OLD.seq THEN RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END IF;"
    await pool.execute(
        f"""
        CREATE FUNCTION fail_move() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.space_id = '{space}'::uuid THEN {body} END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_move BEFORE UPDATE ON projector_checkpoints
            FOR EACH ROW EXECUTE FUNCTION fail_move();
        """
    )
    try:
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.SerializationError):
                await apply_space(conn, space)
        assert await checkpoint(pool, space) == first.seq
        assert await states(pool, space) == before, "states moved without their checkpoint"
    finally:
        await remove(pool, "fail_move", "projector_checkpoints")
    async with pool.acquire() as conn:
        second = await apply_space(conn, space)
    assert second is not None
    assert (second.seq, second.count) == (first.seq + 1, 1)


class HeldAfterCommit:
    """A connection whose statements after its outermost transaction commits wait for
    ``go``: the scheduler lets another session run first the moment a lock is released."""

    def __init__(self, conn: Conn, go: asyncio.Event) -> None:
        self.conn = conn
        self.go = go
        self.depth = 0
        self.committed = False

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self._turn()
        self.depth += 1
        try:
            async with self.conn.transaction():
                yield
        finally:
            self.depth -= 1
        self.committed = self.committed or self.depth == 0

    async def _turn(self) -> None:
        if self.committed:
            await self.go.wait()

    async def execute(self, *args: Any) -> Any:
        await self._turn()
        return await self.conn.execute(*args)

    async def fetch(self, *args: Any) -> Any:
        await self._turn()
        return await self.conn.fetch(*args)

    async def fetchval(self, *args: Any) -> Any:
        await self._turn()
        return await self.conn.fetchval(*args)


async def _blocked_on_a_lock(pool: asyncpg.Pool, pids: list[int]) -> bool:
    waiting = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[]) "
        "AND wait_event_type = 'Lock'",
        pids,
    )
    return int(waiting) == len(pids)


async def test_two_concurrent_applies_apply_each_event_once(
    pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    """A holds the space's checkpoint lock mid-batch (its upsert waits at a gate), B asks
        for the same space meanwhile and waits for that lock. Once A commits, B must see A's
        checkpoint and find nothing left: the events are applied once between them. Whatever A
    would do after its COMMIT waits until B is done (the worst interleaving, made certain)."""
    space = await tasks(store, 4)
    async with pool.acquire() as conn:
        first = await apply_space(conn, space)  # the checkpoint row exists: B waits on it
    assert first is not None
    owner = await owner_of(pool, space)
    await push(store, owner, new_id(), [op(space, entity_id=f"u-{i}", lamport=9) for i in range(4)])
    total = await head(pool, space) - first.seq
    gate = await pool.acquire()
    a_conn = await pool.acquire()
    b_conn = await pool.acquire()
    await install(
        pool, "gate", "entity_states", space, f"PERFORM pg_advisory_xact_lock_shared({GATE});"
    )
    try:
        await gate.execute("SELECT pg_advisory_lock($1)", GATE)
        a_pid, b_pid = a_conn.get_server_pid(), b_conn.get_server_pid()
        b_done = asyncio.Event()
        a = asyncio.create_task(apply_space(cast(Conn, HeldAfterCommit(a_conn, b_done)), space))
        await eventually(lambda: _blocked_on_a_lock(pool, [a_pid]))  # A waits at the gate
        b = asyncio.create_task(apply_space(b_conn, space))
        b.add_done_callback(lambda _: b_done.set())
        await eventually(lambda: _blocked_on_a_lock(pool, [a_pid, b_pid]))  # B waits for A
        await gate.execute("SELECT pg_advisory_unlock($1)", GATE)
        results: list[Applied | None] = list(await asyncio.gather(a, b))
    finally:
        await remove(pool, "gate", "entity_states")
        for conn in (gate, a_conn, b_conn):
            await pool.release(conn)
    done = [r for r in results if r is not None]
    assert sum(r.count for r in done) == total, results
    assert len(done) == 1, "both calls applied the same events"
    assert await checkpoint(pool, space) == first.seq + total


async def _title(pool: asyncpg.Pool, space: str, entity: str) -> Any:
    state, _ = await get_entity(pool, space, "task", entity)
    assert state is not None
    return state.view().fields["title"].value


async def test_delivered_events_that_continue_the_checkpoint_are_used_as_they_are(
    pool: asyncpg.Pool, store: PostgresEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Events from the stream, out of order, repeated, some already applied, continue
    the checkpoint: they are applied as delivered (told apart from the log here by their
    values), in seq order, once, in one transaction (nothing isolated)."""
    space = await tasks(store, 3)  # seqs 1 (member) and 2..4
    async with pool.acquire() as conn:
        first = await apply_space(conn, space, up_to=2)
    assert first is not None
    assert first.seq == 2
    logged = await store.read(space, 0, 10)
    stream = [msgspec.structs.replace(e, value=f"stream {e.seq}") for e in logged[1:]]
    delivered = [stream[2], stream[0], logged[0], stream[1], stream[0], stream[1], stream[2]]
    with caplog.at_level(logging.WARNING, logger="concord.projector"):
        async with pool.acquire() as conn:
            applied = await apply_space(conn, space, delivered=delivered)
    assert caplog.records == [], "a healthy batch is never isolated"
    assert applied is not None
    assert (applied.seq, applied.count) == (4, 2)
    assert await _title(pool, space, "t-0") == "task 0", "applied before: from the log"
    assert await _title(pool, space, "t-1") == "stream 3"
    assert await _title(pool, space, "t-2") == "stream 4"


async def test_delivered_events_after_a_gap_are_read_from_the_log(
    pool: asyncpg.Pool, store: PostgresEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    space = await tasks(store, 3)
    logged = await store.read(space, 0, 10)
    stream = [msgspec.structs.replace(e, value=f"stream {e.seq}") for e in logged]
    with caplog.at_level(logging.WARNING, logger="concord.projector"):
        async with pool.acquire() as conn:
            applied = await apply_space(conn, space, delivered=[stream[2]])
            assert applied is not None
            assert (applied.seq, applied.count) == (3, 3), "read from the log up to seq 3"
            applied = await apply_space(conn, space, delivered=[stream[3]])
    assert caplog.records == []
    assert applied is not None
    assert (applied.seq, applied.count) == (4, 1)
    assert [await _title(pool, space, f"t-{i}") for i in range(3)] == [
        "task 0",
        "task 1",
        "stream 4",
    ]
    async with pool.acquire() as conn:
        assert await apply_space(conn, space, delivered=stream) is None, "nothing new"


async def test_an_event_set_aside_is_reported_in_full(
    pool: asyncpg.Pool, store: PostgresEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A permanent failure on one entity: that event is quarantined, the others are
    applied, and the log names the space, seq, op and error, with the traceback."""
    space = await tasks(store, 4)
    body = "IF NEW.entity_id = 't-2' THEN RAISE EXCEPTION 'no t-2 here'; END IF;"
    await install(pool, "refuse_t2", "entity_states", space, body)
    try:
        with caplog.at_level(logging.WARNING, logger="concord.projector"):
            async with pool.acquire() as conn:
                applied = await apply_space(conn, space, up_to=4)
                rest = await apply_space(conn, space)
    finally:
        await remove(pool, "refuse_t2", "entity_states")
    assert applied is not None
    assert (applied.seq, applied.quarantined) == (4, 1), "no further than up_to"
    assert rest is not None
    assert (rest.seq, rest.count, rest.quarantined) == (5, 1, 0)
    assert sorted(await states(pool, space)) == ["t-0", "t-1", "t-3"]
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.getMessage().startswith(f"a batch of space {space} failed (RaiseError(")
    assert warning.getMessage().endswith("): isolating the event to blame")
    row = await pool.fetchrow(
        "SELECT seq, op_id, error_type, error FROM projector_quarantine WHERE space_id = $1",
        space,
    )
    assert row is not None
    bad = (await store.read(space, 3, 1))[0]
    assert (row["seq"], str(row["op_id"])) == (4, bad.op_id)
    assert row["error_type"] == "RaiseError (P0001)"
    assert "no t-2 here" in row["error"]
    [report] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert report.getMessage() == (
        f"event quarantined: space {space} seq 4 op {bad.op_id} (RaiseError (P0001)); "
        "the projector goes on without it"
    )
    assert report.exc_info is not None


def test_error_text_is_stored_plain_and_bounded() -> None:
    """NULs and unpaired surrogates escaped (PostgreSQL refuses both), then cut."""
    assert _plain("a\x00b\ud800c") == "a\\x00b\\ud800c"
    assert _plain("é" * (ERROR_TEXT_MAX + 5)) == "é" * ERROR_TEXT_MAX


async def test_a_batch_holds_at_most_max_events(
    pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    space = await tasks(store, 4)
    body = "IF NEW.entity_id = 't-1' THEN RAISE EXCEPTION 'no t-1 here'; END IF;"
    async with pool.acquire() as conn:
        first = await apply_space(conn, space, max_events=2)
        assert first is not None
        assert (first.seq, first.count) == (2, 2)
        await install(pool, "refuse_t1", "entity_states", space, body)
        try:
            isolated = await apply_space(conn, space, max_events=2)  # the isolating way
        finally:
            await remove(pool, "refuse_t1", "entity_states")
        assert isolated is not None
        assert (isolated.seq, isolated.count, isolated.quarantined) == (4, 1, 1)
        last = await apply_space(conn, space, max_events=2)
    assert last is not None
    assert (last.seq, last.count, last.quarantined) == (5, 1, 0)


async def test_a_reminder_set_on_a_task_is_reported_as_a_change(
    pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    space = await tasks(store, 1)
    owner = await owner_of(pool, space)
    remind = op(space, entity_id="t-0", field="remind_at", value="2030-01-01T09:00:00Z", lamport=5)
    await push(store, owner, new_id(), [remind])
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space)
    assert applied is not None
    [change] = applied.reminders
    assert (change.space_id, change.entity_type, change.entity_id) == (space, "task", "t-0")
    assert (change.reminder_id, change.remind_at) == (remind["op_id"], "2030-01-01T09:00:00Z")
