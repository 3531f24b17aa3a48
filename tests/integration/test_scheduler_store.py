"""The reminders table's SQL at its edges (scheduler/store.py): what applying task states
does with nothing to apply, a stale state or two states of one task in one batch, what
the reconciliation path makes of a cleared reminder and of a done task, the backlog at
the instant a reminder falls due, and an outcome recorded after the claim was lost.

Tasks are written through the event store and projected with the projector's apply step
(the ``world`` of the engine tests); each test has a database of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from scheduler import store
from scheduler.store import Applied, TaskState
from tests.integration.test_scheduler_engine import T0, World, iso, open_world


@pytest.fixture
async def world(fresh_database: Callable[..., Awaitable[str]]) -> AsyncIterator[World]:
    async with open_world(await fresh_database()) as opened:
        yield opened


async def _reminders(world: World) -> dict[str, tuple[str, object]]:
    """Every reminder row: reminder_id -> (status, fire_at)."""
    rows = await world.pool.fetch("SELECT reminder_id::text, status, fire_at FROM reminders")
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_applying_nothing_or_a_stale_state_changes_nothing(world: World) -> None:
    w = await world.writer()
    rid = await w.task("t1", iso(60))
    [change] = await world.project(w)
    async with world.pool.acquire() as conn:
        assert await store.apply_states(conn, [], T0) == Applied([], [], 0)
        state = TaskState.from_change(change)
        assert await store.apply_states(conn, [state], T0) == Applied(
            [(rid, T0 + timedelta(seconds=60))], [], 1
        )
        # The same state again, or an older one, is not newer than what is stored.
        assert await store.apply_states(conn, [state], T0) == Applied([], [], 0)
        older = dataclasses.replace(state, seq=state.seq - 1, active=False)
        assert await store.apply_states(conn, [older], T0) == Applied([], [], 0)
    assert await _reminders(world) == {rid: ("scheduled", T0 + timedelta(seconds=60))}


async def test_of_two_states_of_a_task_in_one_batch_the_newer_wins_in_either_order(
    world: World,
) -> None:
    w = await world.writer()
    first = await w.task("t1", iso(60))
    [old] = await world.project(w)
    second = await w.set("t1", "remind_at", iso(90))
    [new] = await world.project(w)
    states = [TaskState.from_change(new), TaskState.from_change(old)]  # newest first
    async with world.pool.acquire() as conn:
        applied = await store.apply_states(conn, states, T0)
    assert applied == Applied([(second, T0 + timedelta(seconds=90))], [], 1)
    assert await _reminders(world) == {second: ("scheduled", T0 + timedelta(seconds=90))}
    assert first not in await _reminders(world)


@pytest.mark.parametrize("path", ["changes", "reconcile"])
async def test_a_cleared_reminder_or_a_done_task_cancels_and_schedules_nothing_else(
    world: World, path: str
) -> None:
    """Both ways in (the projector's changes, or reconciliation from ``entity_states``):
    clearing ``remind_at`` cancels the reminder and makes no reminder of the op that
    cleared it; marking the task done cancels it too."""
    engine, w = world.make_engine(), await world.writer()
    cleared = await w.task("cleared", iso(60))
    done = await w.task("done", iso(60))

    async def apply() -> Applied:
        changes = await world.project(w)
        if path == "changes":
            return await engine.apply_changes(changes)
        return await engine.reconcile()

    await apply()
    await w.set("cleared", "remind_at", None)
    await w.set("done", "done", True)
    applied = await apply()
    assert sorted(applied.cancelled) == sorted([cleared, done])
    assert applied.scheduled == []
    at = T0 + timedelta(seconds=60)
    assert await _reminders(world) == {cleared: ("cancelled", at), done: ("cancelled", at)}


async def test_the_backlog_is_zero_at_the_instant_a_reminder_falls_due(world: World) -> None:
    engine, w = world.make_engine(), await world.writer()
    await w.task("t1", iso(60))
    await engine.apply_changes(await world.project(w))
    async with world.pool.acquire() as conn:
        assert await store.backlog_age(conn, T0) == 0.0  # nothing due yet
        assert await store.backlog_age(conn, T0 + timedelta(seconds=60)) == 0.0
        assert await store.backlog_age(conn, T0 + timedelta(seconds=60.5)) == 0.5


async def test_an_outcome_is_recorded_only_while_the_claim_is_ours(world: World) -> None:
    engine, w = world.make_engine(), await world.writer()
    rid = await w.task("t1", iso(10))
    await engine.apply_changes(await world.project(w))
    world.clock.set(T0 + timedelta(seconds=10))
    await engine.drain_due()
    await world.pool.execute(  # fired; its webhook delivery claimed by instance b
        "UPDATE reminders SET next_attempt_at = $2, claimed_by = 'b' WHERE reminder_id = $1",
        rid,
        T0,
    )
    async with world.pool.acquire() as conn:

        async def finish(instance: str) -> bool:
            return await store.finish_delivery(
                conn,
                rid,
                instance,
                status="fired",
                attempts=1,
                next_attempt_at=None,
                last_error=None,
                now=T0,
            )

        assert not await finish("a")
        assert (await world.row(rid))["claimed_by"] == "b"
        assert await finish("b")
    row = await world.row(rid)
    assert (row["claimed_by"], row["attempts"], row["next_attempt_at"]) == (None, 1, None)
