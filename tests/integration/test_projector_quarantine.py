"""No one event stops the projector (issue 15): an event it cannot apply is quarantined,
the space's checkpoint moves past it in the same transaction, and the space goes on.

The poison is put in the log the way an older server did: through the event store's own
append path (group commit, COPY, chain hashes) with the op checks bypassed, as they were
for a NUL in a value before docs/protocol.md section 2 refused it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import nats
import pytest

from core.events import ReminderChange
from core.settings import Settings
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from projector.apply import apply_space
from projector.readmodel import get_entity, list_entities, quarantined
from projector.rebuild import rebuild
from projector.runner import Running, running
from projector.service import ProjectorOptions
from projector.stream import Names
from projector.verify import verify
from scheduler.clock import ManualClock
from scheduler.engine import ReminderEngine
from scheduler.options import SchedulerOptions
from tests.conftest import TEST_SECRET, sample
from tests.integration.test_projector_support import (
    append_unchecked,
    caught_up,
    checkpoint,
    delete_stream,
    eventually,
    head,
    new_space,
    push,
)


@pytest.fixture(scope="module")
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


@dataclass
class Scratch:
    """A database of its own, where no projector service runs: tests apply by hand."""

    pool: asyncpg.Pool
    store: PostgresEventStore


@pytest.fixture
async def scratch(fresh_database: Callable[..., Awaitable[str]]) -> AsyncIterator[Scratch]:
    pool = await asyncpg.create_pool(await fresh_database(), min_size=1, max_size=6)
    try:
        async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
            yield Scratch(pool, store)
    finally:
        await pool.close()


@pytest.fixture(scope="module")
async def service(settings: Settings) -> AsyncIterator[Running]:
    options = ProjectorOptions(tick_interval=0.3)
    async with running(settings, options=options, relay_interval=0.05) as parts:
        yield parts
    await delete_stream(settings.nats_url or "", Names(settings.nats_prefix))


async def _rows(pool: asyncpg.Pool, space: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT seq, op_id::text, entity_type, entity_id, error_type, error "
        "FROM projector_quarantine WHERE space_id = $1 ORDER BY seq",
        uuid.UUID(space),
    )


async def test_a_nul_value_in_the_log_is_quarantined_and_the_space_goes_on(
    pool: asyncpg.Pool, store: PostgresEventStore, service: Running, settings: Settings
) -> None:
    space, owner = await new_space(store)
    names = Names(settings.nats_prefix)
    nc = await nats.connect(settings.nats_url or "")
    changes: list[ReminderChange] = []

    async def collect(msg: Any) -> None:
        changes.append(msgspec.json.decode(msg.data, type=ReminderChange))

    await nc.subscribe(names.reminders_subject(space), cb=collect)
    await nc.flush()
    before = sample("concord_projector_quarantined_total")
    try:
        device = new_id()
        await push(store, owner, device, [op(space, entity_id="t-1", value="milk", lamport=1)])
        poison = await append_unchecked(
            store, owner, space, entity_id="t-1", value="bad\x00title", lamport=2
        )
        remind = op(
            space, entity_id="t-2", field="remind_at", value="2030-01-01T09:00:00Z", lamport=3
        )
        later = [remind, op(space, entity_id="t-1", field="done", value=True, lamport=4)]
        await push(store, owner, device, later)
        await caught_up(pool, [space])  # not stalled at the poison
        await eventually(lambda: _has_reminder(changes, remind["op_id"]))
    finally:
        await nc.close()

    [row] = await _rows(pool, space)
    assert (row[0], row[2], row[3]) == (poison, "task", "t-1")
    assert row[4] == "CharacterNotInRepertoireError (22021)"
    assert "0x00" in row[5]
    assert sample("concord_projector_quarantined_total") == before + 1
    count, latest = await quarantined(pool, limit=1000)
    assert count >= 1
    assert any(q.space_id == space and q.seq == poison for q in latest)
    assert await checkpoint(pool, space) == await head(pool, space)

    # The events after the poison are in the read model: the reminder is scheduled ...
    engine = ReminderEngine(
        pool=pool,
        events=store,
        clock=ManualClock(datetime(2029, 1, 1, tzinfo=UTC)),
        instance="q",
        max_lateness=3600,
        options=SchedulerOptions(),
    )
    applied = await engine.apply_changes(changes)
    assert remind["op_id"] in [reminder_id for reminder_id, _ in applied.scheduled]
    status = await pool.fetchval(
        "SELECT status FROM reminders WHERE reminder_id = $1", uuid.UUID(remind["op_id"])
    )
    assert status == "scheduled"
    # ... the other entity is read from the read model, the quarantined one is not: the
    # reader replays it from the log (its whole state, the poison included).
    state, seq = await get_entity(pool, space, "task", "t-2")
    assert state is not None
    assert seq == await head(pool, space)
    assert await get_entity(pool, space, "task", "t-1") == (None, 0)
    replayed, _ = await store.replay_entity(space, "task", "t-1", await head(pool, space))
    assert replayed is not None
    assert replayed.view().fields["title"].value == "bad\x00title"
    assert replayed.view().fields["done"].value is True
    _, listed_seq, _ = await list_entities(pool, space, None, False, 10, None)
    assert listed_seq == 0  # a space with a quarantined event is listed from the log
    # What the read model holds is the log without the quarantined event.
    assert [d for d in await verify(pool) if d.space_id == space] == []


async def _has_reminder(changes: list[ReminderChange], reminder_id: str) -> bool:
    return any(c.reminder_id == reminder_id for c in changes)


async def refuse_entity(pool: asyncpg.Pool, entity_id: str) -> None:
    """Make the read model refuse writes of one entity id (any database error would do)."""
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    await pool.execute(
        f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.entity_id = '{entity_id}' THEN
                RAISE EXCEPTION 'refused by the test';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON entity_states
            FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )


async def test_the_batch_is_applied_but_for_the_events_to_blame(scratch: Scratch) -> None:
    pool, store = scratch.pool, scratch.store
    space, owner = await new_space(store)
    marker = "x-refused"
    await refuse_entity(pool, marker)
    ops = [
        op(space, entity_id=marker if i in (13, 27) else f"t-{i % 7}", value=f"v{i}", lamport=i)
        for i in range(1, 41)
    ]
    await push(store, owner, new_id(), ops)
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space)
        assert applied is not None
        assert (applied.seq, applied.count, applied.quarantined) == (41, 39, 2)
        # the entities of every part that was applied, each once (not the refused one)
        expected = [("_member", owner), *(("task", f"t-{i}") for i in range(7))]
        assert sorted(applied.entities) == expected
        assert await apply_space(conn, space) is None
    assert [(r[0], r[3], r[4]) for r in await _rows(pool, space)] == [
        (14, marker, "RaiseError (P0001)"),
        (28, marker, "RaiseError (P0001)"),
    ]
    assert await checkpoint(pool, space) == 41
    assert [d for d in await verify(pool) if d.space_id == space] == []


async def test_an_event_that_cannot_be_read_is_quarantined(scratch: Scratch) -> None:
    # JSON PostgreSQL takes but no decoder of the projector does (a number out of range).
    pool, store = scratch.pool, scratch.store
    space, owner = await new_space(store)
    await push(store, owner, new_id(), [op(space, entity_id="t-1", value="a", lamport=1)])
    bad = await append_unchecked(
        store, owner, space, entity_id="t-2", value="n", value_json=b"1e999", lamport=2
    )
    await push(store, owner, new_id(), [op(space, entity_id="t-2", value="b", lamport=3)])
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space)
    assert applied is not None
    assert (applied.count, applied.quarantined) == (3, 1)
    [row] = await _rows(pool, space)
    assert (row[0], row[3], row[4]) == (bad, "t-2", "Unreadable")
    state, _ = await get_entity(pool, space, "task", "t-1")
    assert state is not None


async def test_a_rebuild_tries_again_and_quarantines_what_still_fails(scratch: Scratch) -> None:
    pool, store = scratch.pool, scratch.store
    spaces = [await new_space(store) for _ in range(3)]
    poisoned, owner = spaces[1]
    for space, user in spaces:
        await push(store, user, new_id(), [op(space, entity_id="t-1", value="ok", lamport=1)])
    poison = await append_unchecked(
        store, owner, poisoned, entity_id="t-9", value="a\x00b", lamport=2
    )
    await push(store, owner, new_id(), [op(poisoned, entity_id="t-8", value="c", lamport=3)])
    async with pool.acquire() as conn:  # the live read model first, like a projector
        for space, _ in spaces:
            await apply_space(conn, space)
    first = await pool.fetchval("SELECT quarantined_at FROM projector_quarantine")
    await rebuild(pool)
    [(seq, again)] = await pool.fetch("SELECT seq, quarantined_at FROM projector_quarantine")
    assert seq == poison
    assert again > first  # tried again, and set aside again
    for space, _ in spaces:
        assert await checkpoint(pool, space) == await head(pool, space)
    assert await verify(pool) == []
    state, _ = await get_entity(pool, spaces[0][0], "task", "t-1")
    assert state is not None
    assert await get_entity(pool, poisoned, "task", "t-9") == (None, 0)
