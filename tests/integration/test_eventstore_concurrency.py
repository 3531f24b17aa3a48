"""Concurrent appenders, membership races and tailing readers (docs/architecture.md
invariants 1-3, 8)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import asyncpg
import pytest

from core.ports import AppendOutcome
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from tests.conftest import TEST_SECRET

Raw = dict[str, Any]


@pytest.fixture
async def stores(pool: asyncpg.Pool) -> AsyncIterator[list[PostgresEventStore]]:
    """Two stores on one database: two "gateways" whose groups contend for the locks."""
    async with (
        PostgresEventStore(pool, secret_key=TEST_SECRET) as a,
        PostgresEventStore(pool, secret_key=TEST_SECRET) as b,
    ):
        yield [a, b]


async def _assert_space_consistent(
    pool: asyncpg.Pool, space: str, pushed: set[str]
) -> dict[str, int]:
    rows = await pool.fetch("SELECT seq, op_id FROM events WHERE space_id = $1 ORDER BY seq", space)
    head = await pool.fetchval("SELECT head FROM spaces WHERE space_id = $1", space)
    assert [r["seq"] for r in rows] == list(range(1, head + 1)), "seqs are exactly 1..head"
    seq_of = {str(r["op_id"]): r["seq"] for r in rows}
    assert len(seq_of) == len(rows), "every op_id once"
    assert pushed <= set(seq_of), "every pushed op stored"
    return seq_of


async def test_concurrent_appenders_with_replays(
    stores: list[PostgresEventStore], pool: asyncpg.Pool
) -> None:
    rng = random.Random(7)
    owner = new_id()
    store = stores[0]
    shared = await store.create_space(name="shared", creator_user_id=owner, personal=False)
    own = [
        await store.create_space(name=f"own{i}", creator_user_id=owner, personal=True)
        for i in range(8)
    ]
    # Appenders 0-7 push to the shared space, 8-15 each to their own space.
    targets = [shared] * 8 + own
    generated: list[Raw] = []  # every op made so far, replayed by others
    outcomes: list[tuple[str, list[Raw], AppendOutcome]] = []

    async def appender(k: int) -> None:
        space = targets[k]
        for round_no in range(12):
            batch = [
                op(
                    space,
                    entity_id=f"t{k}-{i % 4}",
                    lamport=round_no + 1,
                    value=f"{k}/{round_no}/{i}",
                )
                for i in range(rng.randint(5, 25))
            ]
            replays = [
                {**r, "space_id": space} for r in rng.sample(generated, min(10, len(generated)))
            ]
            ops = batch + replays
            rng.shuffle(ops)
            generated.extend(batch)
            out = await stores[k % 2].append(user_id=owner, device_id=new_id(), ops=ops)
            outcomes.append((space, ops, out))
            await asyncio.sleep(0)

    await asyncio.gather(*(appender(k) for k in range(16)))

    pushed: dict[str, set[str]] = defaultdict(set)
    applied: dict[tuple[str, str], int] = defaultdict(int)
    for space, ops, out in outcomes:
        assert out.space_id == space
        for raw, result in zip(ops, out.results, strict=True):
            assert result.status in ("applied", "duplicate"), result
            pushed[space].add(raw["op_id"])
            applied[(space, raw["op_id"])] += result.status == "applied"
    for space in {shared, *own}:
        seq_of = await _assert_space_consistent(pool, space, pushed[space])
        for s, ops, out in outcomes:
            if s == space:
                for raw, result in zip(ops, out.results, strict=True):
                    assert result.seq == seq_of[raw["op_id"]], "results match what is stored"
        assert await store.verify(space) is None
    assert set(applied.values()) == {1}, "each (space, op_id) applied exactly once"
    # Replays crossed spaces: some op_ids live in several spaces as unrelated events.
    spaces_of_op: dict[str, int] = defaultdict(int)
    for _space, op_id in applied:
        spaces_of_op[op_id] += 1
    assert max(spaces_of_op.values()) > 1
    assert max(sum(c.groups) / len(c.groups) for c in (s.committer for s in stores)) > 1


async def test_same_op_id_in_two_spaces_is_unrelated(stores: list[PostgresEventStore]) -> None:
    store = stores[0]
    alice, bob = new_id(), new_id()
    a = await store.create_space(name="a", creator_user_id=alice, personal=True)
    b = await store.create_space(name="b", creator_user_id=bob, personal=True)
    # Each space first stores an op of a higher lamport: the shared op's lamport is then at
    # or below its space's highest, so the store must look its op_id up (an op above the
    # highest skips that lookup: no stored event can have its payload).
    for space, user in ((a, alice), (b, bob)):
        out = await store.append(user_id=user, device_id=new_id(), ops=[op(space, lamport=9)])
        assert out.results[0].status == "applied"
    shared_id = new_id()
    out_a = await store.append(
        user_id=alice, device_id=new_id(), ops=[op(a, op_id=shared_id, value="same", lamport=3)]
    )
    # Bob's op differs from Alice's in its space alone: a lookup that ignored the space
    # would call it a duplicate (or a conflict) of hers.
    out_b = await store.append(
        user_id=bob, device_id=new_id(), ops=[op(b, op_id=shared_id, value="same", lamport=3)]
    )
    assert [(r.status, r.seq) for r in out_a.results + out_b.results] == [
        ("applied", 3),
        ("applied", 3),
    ]
    # Another payload under that op_id in Bob's space conflicts with Bob's op, not Alice's.
    reused = await store.append(
        user_id=bob, device_id=new_id(), ops=[op(b, op_id=shared_id, value="other", lamport=3)]
    )
    assert reused.results[0].error is not None
    assert reused.results[0].error.code == "op_id_conflict"
    # Bob pushing Alice's payload into Alice's space learns nothing: he is not a member.
    probe = await store.append(
        user_id=bob, device_id=new_id(), ops=[op(a, op_id=shared_id, value="same", lamport=3)]
    )
    assert probe.results[0].error is not None
    assert probe.results[0].error.code == "not_found"
    for space, user in ((a, alice), (b, bob)):
        [event] = [e for e in await store.read(space, 0, 10) if e.op_id == shared_id]
        assert (event.seq, event.value, event.user_id) == (3, "same", user)


async def _push_until(
    store: PostgresEventStore,
    user: str,
    space: str,
    stop: asyncio.Event,
    removed: asyncio.Event,
    results: list[tuple[AppendOutcome, bool]],
) -> None:
    """Push two ops at a time until ``stop``; note whether each push began after the
    removal had returned."""
    while not stop.is_set():
        after_removal = removed.is_set()
        out = await store.append(user_id=user, device_id=new_id(), ops=[op(space), op(space)])
        results.append((out, after_removal))


async def _until(condition: Callable[[], bool], within: float = 10) -> None:
    """Let the other tasks run until ``condition`` holds (AssertionError after ``within``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def _some_applied(results: list[tuple[AppendOutcome, bool]]) -> bool:
    return any(out.results[0].status == "applied" for out, _ in results)


def _some_after_removal(results: list[tuple[AppendOutcome, bool]]) -> bool:
    return any(after for _, after in results)


async def test_revocation_orders_pushes(stores: list[PostgresEventStore]) -> None:
    owner, editor = new_id(), new_id()
    store = stores[0]
    space = await store.create_space(name="race", creator_user_id=owner, personal=False)
    for _round in range(6):
        await store.change_member(space_id=space, user_id=editor, role="editor", by=owner)
        stop, removed = asyncio.Event(), asyncio.Event()
        results: list[tuple[AppendOutcome, bool]] = []
        tasks = [
            asyncio.create_task(_push_until(s, editor, space, stop, removed, results))
            for s in stores
            for _ in range(2)
        ]
        # The removal races pushes in flight: some applied before it, some begun after.
        await _until(partial(_some_applied, results))
        removal = await store.change_member(space_id=space, user_id=editor, role=None, by=owner)
        assert removal is not None
        removed.set()
        await _until(partial(_some_after_removal, results))
        stop.set()
        await asyncio.gather(*tasks)
        for out, after in results:
            for r in out.results:
                if r.status == "applied":
                    assert r.seq is not None
                    assert r.seq < removal.seq, "never after the removal"
                else:
                    assert r.error is not None
                    assert r.error.code in ("forbidden", "not_found")
            if after:
                assert all(r.status == "rejected" for r in out.results)


async def test_tailing_reader_never_sees_a_gap(
    stores: list[PostgresEventStore], pool: asyncpg.Pool
) -> None:
    owner = new_id()
    space = await stores[0].create_space(name="tail", creator_user_id=owner, personal=False)
    done = asyncio.Event()
    rng = random.Random(11)

    async def appender(k: int) -> None:
        for i in range(25):
            ops = [op(space, entity_id=f"e{k}", lamport=i + 1) for _ in range(rng.randint(1, 8))]
            await stores[k % 2].append(user_id=owner, device_id=new_id(), ops=ops)

    async def reader() -> int:
        last, reads = 0, 0
        while not done.is_set() or last < await stores[1].head(space):
            events = await stores[1].read(space, last, 50)
            reads += 1
            for event in events:
                assert event.seq == last + 1, f"saw seq {event.seq} after {last}"
                last = event.seq
            await asyncio.sleep(0)
        return reads

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    await asyncio.gather(*(appender(k) for k in range(8)))
    done.set()
    assert all(n > 1 for n in await asyncio.gather(*readers))
