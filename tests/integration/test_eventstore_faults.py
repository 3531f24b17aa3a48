"""Fault injection: a connection killed between COPY and COMMIT leaves nothing behind."""

from __future__ import annotations

import asyncio
from typing import cast

import asyncpg
import pytest

from core.errors import ConcordError, Unavailable
from crdt import DEFAULT_SCHEMA
from eventstore.append import run_group
from eventstore.postgres import PostgresEventStore
from eventstore.rows import Conn
from eventstore.testing import new_id, op
from tests.conftest import TEST_SECRET


def _killer(database_url: str, *, times: int = 1, delay: float = 0.0) -> tuple[list[int], object]:
    """A fault hook terminating the appending backend the first ``times`` transactions."""
    killed: list[int] = []

    async def hook(conn: Conn) -> None:
        if delay:
            await asyncio.sleep(delay)
        if len(killed) >= times:
            return
        pid = conn.get_server_pid()
        admin = await asyncpg.connect(database_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        killed.append(pid)

    return killed, hook


async def test_killed_append_leaves_no_partial_batch(pool: asyncpg.Pool, database_url: str) -> None:
    killed, hook = _killer(database_url)
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
        user, device = new_id(), new_id()
        space = await store.create_space(name="f", creator_user_id=user, personal=True)
        ops = [op(space, entity_id=f"t{i}", lamport=i + 1) for i in range(50)]
        store.fault_hook = hook  # type: ignore[assignment]
        with pytest.raises(Unavailable) as failure:
            await store.append(user_id=user, device_id=device, ops=ops)
        assert failure.value.retryable
        assert len(killed) == 1
        assert await store.head(space) == 1
        assert await pool.fetchval("SELECT count(*) FROM events WHERE space_id = $1", space) == 1
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE space_id = $1", space) == 1

        retried = await store.append(user_id=user, device_id=device, ops=ops)
        assert [r.status for r in retried.results] == ["applied"] * 50
        assert [r.seq for r in retried.results] == list(range(2, 52))
        again = await store.append(user_id=user, device_id=device, ops=ops)
        assert [r.status for r in again.results] == ["duplicate"] * 50
        assert [r.seq for r in again.results] == [r.seq for r in retried.results]
        assert await store.verify(space) is None


async def test_a_failed_group_answers_every_push_unavailable(
    pool: asyncpg.Pool, database_url: str
) -> None:
    # One writer: the first transaction stalls in the hook while the others queue up and
    # then share the second transaction, which is killed.
    killed, kill = _killer(database_url)
    calls = 0
    stalled = asyncio.Event()

    async def hook(conn: Conn) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            stalled.set()
            await _queued(store, len(spaces))  # hold the first until the rest wait behind it
        else:
            await kill(conn)  # type: ignore[operator]

    async with PostgresEventStore(
        pool, secret_key=TEST_SECRET, writers=1, fault_hook=hook
    ) as store:
        user = new_id()
        spaces = [
            await store.create_space(name=f"g{i}", creator_user_id=user, personal=False)
            for i in range(4)
        ]
        first = asyncio.create_task(
            store.append(user_id=user, device_id=new_id(), ops=[op(spaces[0])])
        )
        await stalled.wait()
        rest = [store.append(user_id=user, device_id=new_id(), ops=[op(s), op(s)]) for s in spaces]
        outcomes = await asyncio.gather(*rest, return_exceptions=True)
        assert (await first).results[0].status == "applied"
        assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
        assert store.committer.groups == [1]
        assert len(killed) == 1
        assert [await store.head(s) for s in spaces] == [2, 1, 1, 1]


async def _queued(store: PostgresEventStore, pushes: int, within: float = 10) -> None:
    """Return once ``pushes`` pushes wait in the store's queue (no writer has taken them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while len(store.committer._pending) < pushes:
        assert loop.time() < deadline, f"{len(store.committer._pending)} of {pushes} queued"
        await asyncio.sleep(0.005)


async def test_close_drains_then_refuses(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, secret_key=TEST_SECRET)
    user = new_id()
    space = await store.create_space(name="c", creator_user_id=user, personal=True)
    pending = [
        asyncio.create_task(store.append(user_id=user, device_id=new_id(), ops=[op(space)]))
        for _ in range(5)
    ]
    await asyncio.sleep(0)
    await store.close()
    outcomes = await asyncio.gather(*pending)
    assert sorted(o.results[0].seq or 0 for o in outcomes) == [2, 3, 4, 5, 6]
    with pytest.raises(Unavailable):
        await store.append(user_id=user, device_id=new_id(), ops=[op(space)])
    with pytest.raises(ValueError, match="device_id"):
        await PostgresEventStore(pool, secret_key=TEST_SECRET).append(
            user_id=user, device_id="phone", ops=[op(space)]
        )


async def test_the_fault_hook_runs_in_the_rerun_too(pool: asyncpg.Pool) -> None:
    """A push whose op_id comes back above the top fails its first transaction at COPY
    (UNIQUE) and runs again: the hook (tests' window before COMMIT) is in that one."""
    calls: list[int] = []

    async def hook(conn: Conn) -> None:
        calls.append(conn.get_server_pid())

    async with PostgresEventStore(pool, secret_key=TEST_SECRET, fault_hook=hook) as store:
        user, device = new_id(), new_id()
        space = await store.create_space(name="h", creator_user_id=user, personal=True)
        first = op(space, lamport=1)
        await store.append(user_id=user, device_id=device, ops=[first])
        calls.clear()
        out = await store.append(user_id=user, device_id=device, ops=[{**first, "lamport": 7}])
        assert out.results[0].error is not None
        assert out.results[0].error.code == "op_id_conflict"
        assert len(calls) == 1


class _BrokenConn:
    """A connection that reads nothing and breaks after BEGIN: every later statement
    fails, as on one the pool took back. ``sent``: what was executed."""

    def __init__(self, closed: bool) -> None:
        self.closed = closed
        self.sent: list[str] = []

    def is_closed(self) -> bool:
        return self.closed

    async def fetch(self, sql: str, *args: object) -> list[object]:
        return []

    async def execute(self, sql: str, *args: object) -> str:
        self.sent.append(sql)
        if sql != "BEGIN":
            raise asyncpg.InterfaceError(f"{sql}: cannot call Connection.execute(): released")
        return "BEGIN"


@pytest.mark.parametrize("closed", [False, True])
async def test_a_failing_rollback_leaves_the_first_error(closed: bool) -> None:
    """When the transaction fails and its ROLLBACK cannot be sent either, the caller
    sees the transaction's error; a closed connection is not even asked."""
    conn = _BrokenConn(closed)
    with pytest.raises(asyncpg.InterfaceError, match="COMMIT: cannot"):
        await run_group(cast(Conn, conn), [], schema=DEFAULT_SCHEMA, headroom=10)
    assert [s[-8:].upper() for s in conn.sent] == ["BEGIN", "COMMIT"] + (
        [] if closed else ["ROLLBACK"]
    )


async def test_a_push_that_fails_on_the_writers_connection_is_tried_once_on_another(
    pool: asyncpg.Pool,
) -> None:
    """A lone push whose transaction fails with an error no rule counts as transient (as
    a connection a fault left in a bad state can raise) is tried once more on a fresh
    connection before it is answered with a server fault: here the second try stores
    it, once. A push that fails both times is answered as before (one retry only)."""
    calls = 0

    async def once(conn: Conn) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await conn.execute("SELECT 1 / 0")  # DivisionByZeroError: not transient

    async with PostgresEventStore(
        pool, secret_key=TEST_SECRET, writers=1, fault_hook=once
    ) as store:
        user, device = new_id(), new_id()
        space = await store.create_space(name="r", creator_user_id=user, personal=True)
        ops = [op(space, entity_id="t-1", lamport=1)]
        outcome = await store.append(user_id=user, device_id=device, ops=ops)
        assert [r.status for r in outcome.results] == ["applied"]
        assert calls == 2
        again = await store.append(user_id=user, device_id=device, ops=ops)
        assert [r.status for r in again.results] == ["duplicate"]

    async def always(conn: Conn) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("SELECT 1 / 0")

    calls = 0
    async with PostgresEventStore(
        pool, secret_key=TEST_SECRET, writers=1, fault_hook=always
    ) as store:
        space = await store.create_space(name="r2", creator_user_id=user, personal=True)
        with pytest.raises(ConcordError) as failure:
            await store.append(user_id=user, device_id=device, ops=[op(space, lamport=1)])
        assert failure.value.code == "internal"
        assert calls == 2
        assert await store.head(space) == 1
