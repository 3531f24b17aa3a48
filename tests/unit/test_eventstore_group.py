"""Group formation: per-space order, one writer per space, hot spaces drained together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from core.ports import AppendOutcome
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
        outcomes = [
            AppendOutcome(space_id=p.space_id, results=[], server_lamport=0, events=[], head=0)
            for p in pushes
        ]
        return GroupResult(outcomes, [])


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


async def test_a_skipped_push_blocks_its_space() -> None:
    # a:150 does not fit beside x:100; the smaller a:50 behind it must not overtake it.
    recorder = _Recorder()
    committer = GroupCommitter(
        cast(Any, _Pool()), run=recorder, writers=1, max_group_ops=200, spread_ops=200
    )
    await _run(committer, [_push("x", 100, 0), _push("a", 150, 1), _push("a", 50, 2)])
    assert recorder.groups == [[("x", "0")], [("a", "1"), ("a", "2")]]
