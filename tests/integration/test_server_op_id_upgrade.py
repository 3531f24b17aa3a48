"""Server op_ids across the key separation (core/keys.py): a reminder whose firing was
stored before the upgrade, and retried after it, fires once (docs/architecture.md invariant 7).

The scheduler appends ``reminder_fired`` in one transaction and marks its row fired in
another; a crash in between leaves the row scheduled, and the retry relies on the same
op_id to find the stored event. Before the separation that op_id was keyed with the
root secret, after it with the derived op-id key, so the store looks up both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest

from core.ports import ServerAppend, ServerEvent
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id
from eventstore.writer import Batch, NewEvent, legacy_server_op_id, lock_spaces, server_op_id
from tests.conftest import TEST_SECRET


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def _store_as_before_the_upgrade(
    pool: asyncpg.Pool, store: PostgresEventStore, space: str, key: str, value: object
) -> int:
    """What the previous release wrote: the same event, its op_id keyed with the root."""
    async with pool.acquire() as conn, conn.transaction():
        cursor = (await lock_spaces(conn, [space]))[space]
        batch = Batch(datetime.now(UTC), store.schema.version)
        event = batch.add_new(
            cursor,
            NewEvent(
                op_id=legacy_server_op_id(TEST_SECRET, key),
                entity_type="task",
                entity_id="t-1",
                kind="reminder_fired",
                value=value,
                lamport=cursor.max_lamport,
            ),
        )
        await batch.flush(conn)
    return event.seq


@pytest.mark.parametrize("batched", [False, True], ids=["one", "batch"])
async def test_a_firing_stored_before_the_upgrade_is_a_duplicate_after_it(
    pool: asyncpg.Pool, store: PostgresEventStore, batched: bool
) -> None:
    space = await store.create_space(name="upgrade", creator_user_id=new_id(), personal=False)
    reminder_id = new_id()
    key = f"reminder_fired:{reminder_id}"
    value = {
        "reminder_id": reminder_id,
        "fire_at": "2026-11-23T10:00:00Z",
        "fired_at": "2026-11-23T10:00:00Z",
        "lateness_ms": 0,
    }
    seq = await _store_as_before_the_upgrade(pool, store, space, key, value)
    assert legacy_server_op_id(TEST_SECRET, key) != server_op_id(TEST_SECRET, key)

    again = ServerEvent(
        space_id=space,
        kind="reminder_fired",
        entity_type="task",
        entity_id="t-1",
        value={**value, "fired_at": "2026-11-23T10:05:00Z"},
        key=key,
    )
    if batched:  # the scheduler's path
        [retried] = await store.append_server_events([again])
        assert isinstance(retried, ServerAppend)
    else:
        retried = await store.append_server_event(**msgspec.structs.asdict(again))
    assert retried.duplicate is True
    assert retried.event.seq == seq
    assert retried.event.value == value  # the stored event, not the retry's
    assert await store.head(space) == seq


async def test_new_firings_use_the_derived_op_id(store: PostgresEventStore) -> None:
    space = await store.create_space(name="fresh", creator_user_id=new_id(), personal=False)
    key = f"reminder_fired:{new_id()}"
    first = await store.append_server_event(
        space_id=space,
        kind="reminder_fired",
        entity_type="task",
        entity_id="t-2",
        value={"n": 1},
        key=key,
    )
    assert first.duplicate is False
    assert first.event.op_id == server_op_id(TEST_SECRET, key)
    again = await store.append_server_event(
        space_id=space,
        kind="reminder_fired",
        entity_type="task",
        entity_id="t-2",
        value={"n": 2},
        key=key,
    )
    assert again.duplicate is True
    assert again.event.seq == first.event.seq
