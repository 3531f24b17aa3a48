"""Rebuild while live (20,000 events, a writer appending and readers reading throughout),
verify, and the split of spaces between projector instances."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from core.settings import Settings, with_overrides
from crdt import encode_state
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from projector.membership import Membership, space_hash
from projector.readmodel import get_entity, list_entities
from projector.rebuild import REBUILD_LOCK, RebuildError, rebuild
from projector.runner import running
from projector.service import ProjectorOptions
from projector.stream import Names
from projector.verify import verify
from tests.conftest import TEST_SECRET
from tests.integration.test_projector_support import (
    assert_matches_replay,
    caught_up,
    delete_stream,
    eventually,
    increments,
    new_space,
    push,
)

OPTIONS = ProjectorOptions(tick_interval=0.3)


@dataclass
class Scratch:
    settings: Settings
    pool: asyncpg.Pool
    store: PostgresEventStore


@pytest.fixture
async def scratch(
    settings: Settings, fresh_database: Callable[..., Awaitable[str]]
) -> AsyncIterator[Scratch]:
    """A database of its own: the rebuild swaps its tables, the counts are this test's."""
    dsn = await fresh_database()
    own = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    try:
        async with PostgresEventStore(own, secret_key=TEST_SECRET) as store:
            yield Scratch(with_overrides(settings, database_url=dsn), own, store)
    finally:
        await own.close()
        await delete_stream(settings.nats_url or "", Names(settings.nats_prefix))


async def _fill(
    store: PostgresEventStore,
    spaces: int,
    per_space: int,
    made: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """``spaces`` new spaces (or the given ``made`` ones), each with ``per_space`` events."""
    made = made if made is not None else [await new_space(store) for _ in range(spaces)]
    for space, owner in made:
        device = new_id()
        titles = [
            op(space, entity_id=f"t-{i}", field="title", value=f"task {i}", lamport=i + 1)
            for i in range(50)
        ]
        await push(store, owner, device, titles)
        await increments(store, space, owner, per_space - 50, entities=50)
    return made


async def _index_names(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT indexname FROM pg_indexes WHERE tablename IN "
        "('entity_states', 'projector_checkpoints')"
    )
    return {r[0] for r in rows}


async def test_rebuild_while_writing_and_reading(scratch: Scratch) -> None:
    pool, store = scratch.pool, scratch.store
    spaces = await _fill(store, 4, 5000)
    indexes = await _index_names(pool)
    stop = asyncio.Event()
    reads = {"ok": 0, "failed": 0}

    async def write() -> None:
        space, owner = spaces[0]
        while not stop.is_set():
            await increments(store, space, owner, 20, entities=5)
            await asyncio.sleep(0.02)

    async def read() -> None:
        while not stop.is_set():
            for space, _ in spaces:
                try:
                    state, seq = await get_entity(pool, space, "task", "t-1")
                    page, seq2, _ = await list_entities(pool, space, "task", False, 20, None)
                    assert state is not None
                    assert seq > 0
                    assert len(page) == 20
                    assert seq2 >= seq
                    reads["ok"] += 1
                except Exception:
                    reads["failed"] += 1
            await asyncio.sleep(0.01)

    async with running(scratch.settings, options=OPTIONS, relay=False):
        await caught_up(pool, [s for s, _ in spaces], within=60)
        tasks = [asyncio.create_task(write()), asyncio.create_task(read())]
        try:
            report = await rebuild(pool)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        await caught_up(pool, [s for s, _ in spaces], within=30)
    assert report.events >= 20_000
    assert report.events + report.catch_up_events >= 20_004
    assert reads["failed"] == 0
    assert reads["ok"] > 0
    assert await _index_names(pool) == indexes
    await assert_matches_replay(pool, store, [s for s, _ in spaces])
    # A second rebuild (on the swapped-in tables), in three processes, works the same way.
    dsn = scratch.settings.database_url
    again = await rebuild(pool, dsn=dsn, workers=3)
    assert again.events >= report.events
    assert again.spaces == 4
    assert await verify(pool) == []
    await assert_matches_replay(pool, store, [s for s, _ in spaces])


async def test_only_one_rebuild_at_a_time(scratch: Scratch) -> None:
    membership = Membership(scratch.settings.database_url or "")
    async with scratch.pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1, $2)", *REBUILD_LOCK)
        try:
            with pytest.raises(RebuildError, match="another rebuild"):
                await rebuild(scratch.pool)
            # A running rebuild is not mistaken for a projector instance.
            assert await membership.refresh() == (0, 1)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", *REBUILD_LOCK)
            await membership.close()


async def test_swap_keeps_grants_and_index_names(scratch: Scratch) -> None:
    pool = scratch.pool
    role = f"concord_proj_test_{new_id()[:8]}"
    await pool.execute(f"CREATE ROLE {role}")
    try:
        await pool.execute(f"GRANT SELECT, INSERT, UPDATE ON entity_states TO {role}")
        indexes = await _index_names(pool)
        await rebuild(pool)
        assert await _index_names(pool) == indexes
        for privilege in ("SELECT", "INSERT", "UPDATE"):
            assert await pool.fetchval(
                "SELECT has_table_privilege($1, 'entity_states', $2)", role, privilege
            )
        assert not await pool.fetchval(
            "SELECT has_table_privilege($1, 'entity_states', 'DELETE')", role
        )
    finally:
        await pool.execute(f"REVOKE ALL ON entity_states FROM {role}")
        await pool.execute(f"DROP ROLE {role}")


async def test_verify_lists_what_differs(scratch: Scratch) -> None:
    pool, store = scratch.pool, scratch.store
    [(space, _)] = await _fill(store, 1, 100)
    async with running(scratch.settings, options=OPTIONS, relay=False):
        await caught_up(pool, [space])
    assert await verify(pool) == []
    await pool.execute(
        "UPDATE entity_states SET state = (SELECT state FROM entity_states "
        "WHERE space_id = $1 AND entity_id = 't-2') WHERE space_id = $1 AND entity_id = 't-1'",
        space,
    )
    await pool.execute("UPDATE entity_states SET title = 'forged' WHERE entity_id = 't-3'")
    await pool.execute("DELETE FROM entity_states WHERE entity_id = 't-4'")
    # t-5 as a version before settled states stored it (history kept): not a difference
    replayed, _ = await store.replay_space(space)
    full = encode_state(replayed[("task", "t-5")])
    settled = await pool.fetchval("SELECT state FROM entity_states WHERE entity_id = 't-5'")
    assert full != settled
    await pool.execute("UPDATE entity_states SET state = $1 WHERE entity_id = 't-5'", full)
    found = {(d.entity_id, d.problem) for d in await verify(pool)}
    assert found == {("t-1", "state"), ("t-3", "columns"), ("t-4", "missing")}
    await rebuild(pool)
    assert await verify(pool) == []


async def test_instances_split_spaces_and_take_over(scratch: Scratch) -> None:
    """Two instances share the spaces by hash; when one stops, the other takes its
    spaces over. Every event is applied exactly once overall."""
    pool, store = scratch.pool, scratch.store
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(running(scratch.settings, options=OPTIONS))
        second_stack = contextlib.AsyncExitStack()
        stack.push_async_callback(second_stack.aclose)  # closed early below; on failure too
        second = await second_stack.enter_async_context(
            running(scratch.settings, options=OPTIONS, relay=False)
        )

        async def both_ticked() -> bool:  # each knows it is one of two
            counts = {first.projector.membership.instances, second.projector.membership.instances}
            return counts == {2}

        await eventually(both_ticked, within=10.0)
        # Space ids are random: make spaces until each of the two slots owns four, else
        # one instance may own all eight (one run in 128) and have nothing to apply.
        slots: dict[int, list[tuple[str, str]]] = {0: [], 1: []}
        for _ in range(64):
            if min(len(chosen) for chosen in slots.values()) >= 4:
                break
            space, owner = await new_space(store)
            slots[space_hash(space) % 2].append((space, owner))
        spaces = await _fill(store, 0, 120, made=slots[0] + slots[1])
        assert all(len(chosen) >= 4 for chosen in slots.values())
        await caught_up(pool, [s for s, _ in spaces])
        assert first.projector.applied_events > 0
        assert second.projector.applied_events > 0
        await second_stack.aclose()
        for space, owner in spaces:
            await increments(store, space, owner, 30)
        await caught_up(pool, [s for s, _ in spaces])
        total = first.projector.applied_events + second.projector.applied_events
        assert total == sum([await pool.fetchval("SELECT sum(head) FROM spaces")])
    await assert_matches_replay(pool, store, [s for s, _ in spaces])


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_rebuild_reports_its_progress_and_its_figures(
    scratch: Scratch, workers: int
) -> None:
    """What ``concord projector rebuild`` shows: the bulk phase's progress from 0 to every
    event of the log, then the catch-up's, and the report's figures, the same whether the
    log is folded here or in worker processes."""
    pool, store = scratch.pool, scratch.store
    await _fill(store, 2, 60)  # 50 tasks each, and the member_added that made the space
    seen: list[tuple[str, int, int]] = []
    report = await rebuild(
        pool,
        progress=lambda phase, done, total: seen.append((phase, done, total)),
        dsn=scratch.settings.database_url,
        workers=workers,
    )
    bulk = [s for s in seen if s[0] == "rebuild"]
    assert bulk[0] == ("rebuild", 0, 122)
    assert bulk[-1] == ("rebuild", 122, 122)
    assert [d for _, d, _ in bulk] == sorted(d for _, d, _ in bulk)
    assert seen[len(bulk) :] == [("catch-up", 0, 0)]  # nothing was written meanwhile
    assert (report.events, report.spaces, report.entities) == (122, 2, 102)
    assert report.catch_up_events == 0
    assert 0 < report.bulk_seconds <= report.total_seconds
    assert report.rate == report.events / report.bulk_seconds
    assert report.swap_wait_seconds >= 0
    assert 0 < report.swap_seconds < report.total_seconds
    assert await verify(pool) == []
