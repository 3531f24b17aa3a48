"""Group formation: per-space order, one writer per space, hot spaces drained together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import asyncpg
import pytest

from core.errors import ConcordError, Unavailable
from core.metrics import CONFLICTS, OPS
from core.ports import AppendOutcome
from core.wire import OpResult
from eventstore.append import GroupResult
from eventstore.group import GroupCommitter
from eventstore.push import Push


class _Conn:
    def is_closed(self) -> bool:
        return False


class _Pool:
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Conn]:
        yield _Conn()


def _push(space: str, n: int, tag: int) -> Push:
    items: list[Any] = [None] * n  # only their count matters here
    return Push(user_id="u", device_id="d", space_id=space, echo_ids=[str(tag)] * n, items=items)


def _applied(pushes: Sequence[Push]) -> list[AppendOutcome]:
    """An empty outcome per push, as a transaction that stored them answers."""
    return [
        AppendOutcome(space_id=p.space_id, results=[], server_lamport=0, events=[], head=0)
        for p in pushes
    ]


class _Recorder:
    """A fake transaction: records groups, checks no space runs in two at once."""

    def __init__(self) -> None:
        self.groups: list[list[tuple[str | None, str | None]]] = []
        self.running: set[str | None] = set()

    async def __call__(self, conn: Any, pushes: Sequence[Push]) -> GroupResult:
        spaces = {p.space_id for p in pushes}
        assert not spaces & self.running, "a space in two transactions at once"
        self.running |= spaces
        self.groups.append([(p.space_id, p.echo_ids[0] if p.echo_ids else None) for p in pushes])
        await asyncio.sleep(0.01)
        self.running -= spaces
        return GroupResult(_applied(pushes), [])


async def _run(committer: GroupCommitter, pushes: list[Push]) -> None:
    try:
        await asyncio.gather(*(committer.submit(p) for p in pushes))
    finally:
        await committer.close()


async def test_spaces_keep_their_order_and_one_writer_each() -> None:
    recorder = _Recorder()
    committer = GroupCommitter(
        cast(Any, _Pool()), run=recorder, writers=3, max_group_ops=250, spread_ops=100
    )
    pushes = [_push(space, 50, i) for i in range(12) for space in ("a", "b", "c")]
    await _run(committer, pushes)
    order: dict[str | None, list[int]] = {}
    for group in recorder.groups:
        for space, tag in group:
            order.setdefault(space, []).append(int(tag or 0))
    assert order == {s: list(range(12)) for s in ("a", "b", "c")}
    assert all(sum(1 for _ in g) <= 5 for g in recorder.groups)  # 250 ops / 50


async def test_a_hot_space_is_drained_in_big_groups() -> None:
    recorder = _Recorder()
    committer = GroupCommitter(
        cast(Any, _Pool()), run=recorder, writers=4, max_group_ops=1000, spread_ops=100
    )
    await _run(committer, [_push("hot", 100, i) for i in range(20)])
    sizes = [len(g) for g in recorder.groups]
    assert sum(sizes) == 20
    assert max(sizes) == 10  # up to max_group_ops of one space, not spread_ops


async def test_other_spaces_spread_over_writers() -> None:
    recorder = _Recorder()
    committer = GroupCommitter(
        cast(Any, _Pool()), run=recorder, writers=4, max_group_ops=1000, spread_ops=200
    )
    await _run(committer, [_push(f"s{i}", 100, i) for i in range(8)])
    assert [len(g) for g in recorder.groups] == [2, 2, 2, 2]


@pytest.mark.parametrize(
    ("pushes", "max_spread_ops", "sizes"),
    [
        # A long queue, where spread_ops alone would cut groups of 2: each writer takes the
        # queued ops over the 4 writers, at most max_spread_ops (800): 4,000 / 4 -> 800,
        # 3,200 / 4 -> 800, 2,400 / 4 -> 600, 1,800 / 4 -> 450.
        (40, 800, [8, 8, 6, 4]),
        # A shorter one: 1,200 / 4 -> 300 (3 pushes), 900 / 4 -> 225 (2); then the queue
        # over 4 is under spread_ops, which stays the floor (2 each); the last goes alone.
        (12, 1000, [3, 2, 2, 2, 2, 1]),
    ],
)
async def test_the_spread_limit_is_the_queue_over_the_writers(
    pushes: int, max_spread_ops: int, sizes: list[int]
) -> None:
    recorder = _Recorder()
    committer = GroupCommitter(
        cast(Any, _Pool()),
        run=recorder,
        writers=4,
        max_group_ops=2000,
        spread_ops=200,
        max_spread_ops=max_spread_ops,
    )
    await asyncio.gather(*(committer.submit(_push(f"s{i}", 100, i)) for i in range(pushes)))
    assert committer._queued_ops == 0  # every push counted in, and out (before close)
    await committer.close()
    got = [len(g) for g in recorder.groups]
    assert sum(got) == pushes
    assert got[: len(sizes)] == sizes


async def test_a_skipped_push_blocks_its_space() -> None:
    # a:150 does not fit beside x:100; the smaller a:50 behind it must not overtake it.
    recorder = _Recorder()
    committer = GroupCommitter(
        cast(Any, _Pool()),
        run=recorder,
        writers=1,
        max_group_ops=200,
        spread_ops=200,
        max_spread_ops=200,
    )
    await _run(committer, [_push("x", 100, 0), _push("a", 150, 1), _push("a", 50, 2)])
    assert recorder.groups == [[("x", "0")], [("a", "1"), ("a", "2")]]


class _Pool2:
    """A pool as asyncpg's: ``acquire()`` awaited or used with ``async with``; counts
    what it hands out and gets back (and keeps them), can fail the first ``broken``
    acquires, and hands out ``first`` (if given) before ``conn``."""

    def __init__(self, broken: int = 0, conn: Any = None, first: Any = None) -> None:
        self.broken = broken
        self.conn = conn or _Conn()
        self.first = first
        self.handed: list[Any] = []
        self.returned: list[Any] = []

    @property
    def acquired(self) -> int:
        return len(self.handed)

    @property
    def released(self) -> int:
        return len(self.returned)

    def acquire(self) -> _Acquire:
        return _Acquire(self)

    async def release(self, conn: Any) -> None:
        self.returned.append(conn)

    def _take(self) -> Any:
        if self.broken:
            self.broken -= 1
            raise ConnectionError("no connection")
        conn, self.first = self.first or self.conn, None
        self.handed.append(conn)
        return conn


class _Acquire:
    def __init__(self, pool: _Pool2) -> None:
        self.pool = pool
        self.conn: Any = None

    def __await__(self) -> Any:
        async def take() -> Any:
            return self.pool._take()

        return take().__await__()

    async def __aenter__(self) -> Any:
        self.conn = self.pool._take()
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.release(self.conn)


class _Concurrency(_Recorder):
    """A recorder that also notes the most groups in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.most = 0

    async def __call__(self, conn: Any, pushes: Sequence[Push]) -> GroupResult:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await super().__call__(conn, pushes)
        finally:
            self.now -= 1


def _sizes(recorder: _Recorder) -> list[list[str | None]]:
    return [[tag for _, tag in g] for g in recorder.groups]


async def test_the_defaults_four_writers_2000_ops_of_a_space_200_across() -> None:
    """GroupCommitter's defaults (PostgresEventStore passes the same): groups of one
    space take up to 2000 ops, of several up to 200 or the queued ops over the writers,
    at most 1000, and 4 run at once."""
    hot = _Recorder()
    await _run(
        GroupCommitter(cast(Any, _Pool2()), run=hot),
        [_push("a", 1000, 0), _push("a", 1000, 1), _push("a", 1, 2)],
    )
    assert _sizes(hot) == [["0", "1"], ["2"]]
    spread = _Recorder()
    await _run(
        GroupCommitter(cast(Any, _Pool2()), run=spread),
        [_push("a", 100, 0), _push("b", 100, 1), _push("c", 1, 2)],
    )
    assert _sizes(spread) == [["0", "1"], ["2"]]
    writers = _Concurrency()
    await _run(
        GroupCommitter(cast(Any, _Pool2()), run=writers),
        [_push(f"s{i}", 600, i) for i in range(8)],  # 600 + 600 > 1000: a group each
    )
    assert len(writers.groups) == 8
    assert writers.most == 4
    long_queue = _Recorder()
    await _run(
        GroupCommitter(cast(Any, _Pool2()), run=long_queue),
        [_push(f"s{i}", 100, i) for i in range(60)],  # 6,000 queued: 1,500 per writer
    )
    assert [len(g) for g in long_queue.groups][:2] == [10, 10]
    at_the_cap = _Recorder()
    await _run(  # 4,004 queued: a limit of 1000 exactly, so s1 does not join s0
        GroupCommitter(cast(Any, _Pool2()), run=at_the_cap),
        [_push("s0", 1000, 0), _push("s1", 1, 1), *(_push(f"t{i}", 1001, 2) for i in range(3))],
    )
    assert _sizes(at_the_cap)[0] == ["0"]


async def test_a_writer_keeps_its_connection_while_groups_keep_coming() -> None:
    pool = _Pool2()
    recorder = _Recorder()
    committer = GroupCommitter(
        cast(Any, pool), run=recorder, writers=1, spread_ops=1, max_spread_ops=1
    )
    await _run(committer, [_push(f"s{i}", 1, i) for i in range(3)])
    assert _sizes(recorder) == [["0"], ["1"], ["2"]]
    assert (pool.acquired, pool.released) == (1, 1)


class _BusyConn(_Conn):
    """A connection a killed backend left busy: not closed, yet every statement fails."""


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to user request"),
    ],
    ids=["busy", "transient"],
)
async def test_a_writer_gives_up_a_connection_a_group_failed_on(error: Exception) -> None:
    """A group fails on the writer's kept connection, which still says it is open: the
    push is retried on a fresh connection (or, for a transient error, answered
    retryable), and the writer gives the suspect one back to the pool (whose reset
    rolls back or drops it) instead of running the next group on it."""
    pool = _Pool2(first=_BusyConn())
    failed_on: list[Any] = []

    async def run(conn: Any, pushes: Sequence[Push]) -> GroupResult:
        if isinstance(conn, _BusyConn):
            failed_on.append(conn)
            raise error
        await asyncio.sleep(0.01)
        return GroupResult(_applied(pushes), [])

    committer = GroupCommitter(cast(Any, pool), run=run, writers=1, spread_ops=1, max_spread_ops=1)
    outcomes = await _outcomes(committer, [_push(f"s{i}", 1, i) for i in range(3)])
    assert all(isinstance(o, AppendOutcome) for o in outcomes[1:])
    assert isinstance(
        outcomes[0], AppendOutcome if error.args[0].startswith("cannot") else Unavailable
    )
    assert len(failed_on) == 1  # the next groups ran on another connection
    assert any(c is pool.handed[0] for c in pool.returned)  # given back to the pool


async def test_no_connection_for_the_writer_the_group_asks_the_pool_again() -> None:
    """The writer's acquire fails: its group takes a connection of its own, and the
    writer goes on to the next group."""
    pool = _Pool2(broken=1)
    recorder = _Recorder()
    committer = GroupCommitter(
        cast(Any, pool), run=recorder, writers=1, spread_ops=1, max_spread_ops=1
    )
    await _run(committer, [_push("a", 1, 0), _push("b", 1, 1)])
    assert _sizes(recorder) == [["0"], ["1"]]
    assert (pool.acquired, pool.released) == (2, 2)


async def test_the_writers_are_named_tasks_started_once() -> None:
    committer = GroupCommitter(cast(Any, _Pool2()), run=_Recorder(), writers=3)
    before = asyncio.all_tasks()
    committer.start()
    committer.start()
    try:
        names = sorted(t.get_name() for t in asyncio.all_tasks() - before)
        assert names == ["eventstore-writer-0", "eventstore-writer-1", "eventstore-writer-2"]
    finally:
        await committer.close()


class _Failing:
    """A transaction that raises ``error`` for any group holding a push tagged ``bad``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[list[str | None]] = []

    async def __call__(self, conn: Any, pushes: Sequence[Push]) -> GroupResult:
        tags = [p.echo_ids[0] for p in pushes]
        self.calls.append(tags)
        if "bad" in tags:
            raise self.error
        return GroupResult(_applied(pushes), [])


async def _outcomes(committer: GroupCommitter, pushes: list[Push]) -> list[Any]:
    try:
        return await asyncio.gather(*(committer.submit(p) for p in pushes), return_exceptions=True)
    finally:
        await committer.close()


def _three() -> list[Push]:
    return [_push("a", 1, 0), _push("b", 1, 0), _push("c", 1, 0)]


async def test_a_poisonous_push_fails_alone(caplog: pytest.LogCaptureFixture) -> None:
    """A group failing with an error that is not transient is retried push by push."""
    pushes = _three()
    pushes[1].echo_ids = ["bad"]
    run = _Failing(ValueError("poison"))
    committer = GroupCommitter(cast(Any, _Pool2()), run=run, writers=1)
    with caplog.at_level(logging.WARNING, logger="eventstore.group"):
        first, bad, third = await _outcomes(committer, pushes)
    assert [r.getMessage() for r in caplog.records if r.name == "eventstore.group"] == [
        "group of 3 failed (ValueError('poison')); retrying push by push"
    ]
    assert isinstance(first, AppendOutcome)
    assert isinstance(third, AppendOutcome)
    assert type(bad) is ConcordError
    assert str(bad) == "event store error: ValueError: poison"
    assert run.calls == [["0", "bad", "0"], ["0"], ["bad"], ["0"]]
    assert committer.groups == [1, 1]


async def test_a_transient_failure_answers_the_whole_group_unavailable_at_once() -> None:
    pushes = _three()
    pushes[1].echo_ids = ["bad"]
    run = _Failing(ConnectionResetError("reset"))
    committer = GroupCommitter(cast(Any, _Pool2()), run=run, writers=1)
    outcomes = await _outcomes(committer, pushes)
    assert [type(o) for o in outcomes] == [Unavailable] * 3
    assert all(o.retryable for o in outcomes)
    assert run.calls == [["0", "bad", "0"]]  # not retried: the client retries
    assert committer.groups == []


class _GoneConn:
    def __init__(self, how: str) -> None:
        self.how = how

    def is_closed(self) -> bool:
        if self.how == "released":
            raise asyncpg.InterfaceError("connection has been released back to the pool")
        return True


@pytest.mark.parametrize("how", ["closed", "released"])
async def test_an_error_on_a_lost_connection_is_unavailable(how: str) -> None:
    """The connection went away mid-transaction: whatever the driver raised, the push is
    answered Unavailable (retryable: nothing is known to be committed), and the writer
    leaves that connection to the pool and takes another for the next group."""
    pool = _Pool2(conn=_GoneConn(how))
    run = _Failing(RuntimeError("an error no retry would help"))
    committer = GroupCommitter(cast(Any, pool), run=run, writers=1, spread_ops=1, max_spread_ops=1)
    lost, then = _push("a", 1, 0), _push("b", 1, 1)
    lost.echo_ids = ["bad"]
    bad, good = await _outcomes(committer, [lost, then])
    assert type(bad) is Unavailable
    assert bad.retryable
    assert str(bad) == "event store connection lost"
    assert isinstance(good, AppendOutcome)
    assert run.calls == [["bad"], ["1"]]
    assert (pool.acquired, pool.released) == (2, 2)


class _Stuck:
    """A transaction that never ends."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def __call__(self, conn: Any, pushes: Sequence[Push]) -> GroupResult:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_close_waits_out_its_grace_then_answers_unavailable() -> None:
    run = _Stuck()
    committer = GroupCommitter(cast(Any, _Pool2()), run=run, writers=1)
    running = asyncio.ensure_future(committer.submit(_push("a", 1, 0)))
    await run.started.wait()
    queued = asyncio.ensure_future(committer.submit(_push("a", 1, 1)))  # behind "a"
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await committer.close(grace=0.2)
    assert 0.2 <= loop.time() - began < 2
    for future in (running, queued):
        with pytest.raises(Unavailable, match="event store unavailable: ConnectionError"):
            await future
    with pytest.raises(Unavailable, match=r"^the event store is closed$"):
        committer.start()
    with pytest.raises(Unavailable, match=r"^the event store is closed$"):
        await committer.submit(_push("a", 1, 2))


async def test_close_returns_once_the_work_is_done() -> None:
    recorder = _Recorder()  # 10 ms a group
    committer = GroupCommitter(cast(Any, _Pool2()), run=recorder, writers=1)
    pending = [asyncio.ensure_future(committer.submit(_push("a", 1, i))) for i in range(3)]
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await committer.close()
    assert loop.time() - began < 0.5  # the work takes 30 ms; nothing like the 5 s grace
    assert all(isinstance(p.result(), AppendOutcome) for p in pending)
    await committer.close()  # again: nothing left to do


async def test_statuses_and_conflicts_are_counted_once_committed() -> None:
    async def run(conn: Any, pushes: Sequence[Push]) -> GroupResult:
        results = [
            OpResult(op_id="x", status="applied", seq=1),
            OpResult(op_id="y", status="applied", seq=2),
            OpResult(op_id="z", status="duplicate", seq=1),
        ]
        outcome = AppendOutcome(space_id="a", results=results, server_lamport=0, events=[], head=2)
        return GroupResult([outcome], [("gtask", "gf"), ("gtask", "gf"), ("gtask", "gg")])

    def counts() -> tuple[float, ...]:
        return (
            OPS.labels(status="applied")._value.get(),
            OPS.labels(status="duplicate")._value.get(),
            CONFLICTS.labels(entity_type="gtask", field="gf")._value.get(),
            CONFLICTS.labels(entity_type="gtask", field="gg")._value.get(),
        )

    before = counts()
    await _run(GroupCommitter(cast(Any, _Pool2()), run=run), [_push("a", 3, 0)])
    assert [a - b for a, b in zip(counts(), before, strict=True)] == [2, 1, 2, 1]


class _Gated:
    """A transaction per space that ends when its space's gate opens."""

    def __init__(self, spaces: str) -> None:
        self.gates = {s: asyncio.Event() for s in spaces}
        self.started: set[str | None] = set()
        self.all_started = asyncio.Event()

    async def __call__(self, conn: Any, pushes: Sequence[Push]) -> GroupResult:
        [push] = pushes
        self.started.add(push.space_id)
        if self.started == set(self.gates):
            self.all_started.set()
        await self.gates[push.space_id or ""].wait()
        outcome = AppendOutcome(
            space_id=push.space_id, results=[], server_lamport=0, events=[], head=0
        )
        return GroupResult([outcome], [])


async def test_close_waits_for_every_running_group() -> None:
    """Two groups in flight on two writers: close returns once both are committed,
    however they end, within its grace."""
    run = _Gated("ab")
    committer = GroupCommitter(
        cast(Any, _Pool2()), run=run, writers=2, spread_ops=1, max_spread_ops=1
    )
    pushes = [asyncio.ensure_future(committer.submit(_push(s, 1, 0))) for s in "ab"]
    await run.all_started.wait()
    closing = asyncio.ensure_future(committer.close())
    run.gates["a"].set()
    await asyncio.sleep(0.05)
    assert not closing.done()  # "b" is still running
    run.gates["b"].set()
    await closing
    assert [type(p.result()) for p in pushes] == [AppendOutcome, AppendOutcome]


async def test_a_writer_survives_a_group_it_cannot_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Should answering a committed group fail (here: one outcome short), its pushes get
    the error, the failure is logged, and the writer serves the next group."""
    calls = 0

    async def run(conn: Any, pushes: Sequence[Push]) -> GroupResult:
        nonlocal calls
        calls += 1
        outcomes = _applied(pushes)
        return GroupResult(outcomes[1:] if calls == 1 else outcomes, [])

    pool = _Pool2()
    committer = GroupCommitter(cast(Any, pool), run=run, writers=1, spread_ops=2, max_spread_ops=2)
    with caplog.at_level(logging.ERROR, logger="eventstore.group"):
        first = await _outcomes(committer, [_push("a", 1, 0), _push("b", 1, 1), _push("c", 1, 2)])
    # the connection the failure happened on went back to the pool: c had another
    assert (pool.acquired, pool.released) == (2, 2)
    # The first push had its outcome when the second found none: that one gets the error.
    assert [type(o) for o in first] == [AppendOutcome, ConcordError, AppendOutcome]
    assert str(first[1]).startswith("event store error: ValueError: zip()")
    [record] = [r for r in caplog.records if r.name == "eventstore.group"]
    assert record.getMessage() == "group commit failed"
    assert record.exc_info is not None


async def test_a_transient_error_on_a_lost_connection_keeps_its_name() -> None:
    pool = _Pool2(conn=_GoneConn("closed"))
    run = _Failing(ConnectionResetError("reset"))
    committer = GroupCommitter(cast(Any, pool), run=run, writers=1)
    push = _push("a", 1, 0)
    push.echo_ids = ["bad"]
    [lost] = await _outcomes(committer, [push])
    assert type(lost) is Unavailable
    assert str(lost) == "event store unavailable: ConnectionResetError"


async def test_closing_a_committer_never_started() -> None:
    committer = GroupCommitter(cast(Any, _Pool2()), run=_Recorder())
    await committer.close()
    with pytest.raises(Unavailable):
        committer.start()
