"""What a writer hands back is what reads return (eventstore/writer.py).

The events an append returns are handed to the gateway's own feeds and sent to live
subscribers (gateway/committed.py), while a device catching up reads the same events from
PostgreSQL: the two must be the same bytes on the wire, or a device would see a value
change between a live delivery and a later catch-up. Checked for pushes (a pred, a
number written ``1.0``, a delete), server events (one and a batch) and member events,
with the process's local time zone set away from UTC, so a writer that took a naive or
local time for ``recorded_at`` would be seen.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

from core.ports import ServerAppend, ServerEvent
from core.wire import Event
from crdt.schema import DEFAULT_SCHEMA, EntityTypeSpec, FieldSpec, Schema
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, new_user, op
from tests.conftest import TEST_SECRET, local_zone

#: The reference schema with a ``number`` field, whose values canonicalise (1.0 is 1).
SCHEMA = Schema(
    version=DEFAULT_SCHEMA.version,
    entity_types={
        **DEFAULT_SCHEMA.entity_types,
        "task": EntityTypeSpec(
            fields={
                **DEFAULT_SCHEMA.entity_types["task"].fields,
                "estimate": FieldSpec(type="lww", value="number"),
            }
        ),
    },
)


@pytest.fixture
def away_from_utc() -> Iterator[None]:
    """The process's local time zone at UTC+9 (no daylight saving) for the test."""
    with local_zone("Asia/Tokyo"):
        assert time.timezone == -9 * 3600
        yield


@pytest.fixture
async def store(pool: asyncpg.Pool, away_from_utc: None) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET, schema=SCHEMA) as s:
        yield s


def _wire(events: list[Event]) -> bytes:
    return msgspec.json.encode(events)


def _recorded_now(events: list[Event]) -> None:
    """Every event was recorded within the last minute, in UTC."""
    now = datetime.now(UTC)
    for event in events:
        at = datetime.fromisoformat(event.recorded_at)
        assert now - timedelta(minutes=1) < at <= now, event.recorded_at


async def test_a_push_returns_the_events_reads_return(
    pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    owner = await new_user(pool)
    space = await store.create_space(name="written", creator_user_id=owner, personal=False)
    device = new_id()
    first = op(space, value="draft", lamport=1)
    ops = [
        first,
        op(space, value="final", lamport=2, pred=[first["op_id"]]),
        op(space, field="estimate", value=1.0, lamport=3),
        op(space, field="estimate", entity_id="t-2", value=2.5, lamport=4),
        op(space, field="tags", kind="add", value="home", lamport=5),
        op(space, field="pomodoros", kind="inc", value=3, lamport=6),
        op(space, entity_id="t-3", field=None, kind="delete", lamport=7),
        op(space, field="due_at", value=None, lamport=8),
    ]
    out = await store.append(user_id=owner, device_id=device, ops=ops)
    assert [r.status for r in out.results] == ["applied"] * len(ops)
    read = await store.read(space, 1, 100)
    assert _wire(out.events) == _wire(read)
    assert out.events[1].pred == [first["op_id"]]
    assert [e.value for e in out.events[2:4]] == [1, 2.5]
    assert type(out.events[2].value) is int  # as a catch-up reads it: 1, never 1.0
    _recorded_now(out.events)
    # A null or absent value is stored as SQL NULL (docs/eventstore.md), not JSON null.
    nulls = await pool.fetch(
        "SELECT seq FROM events WHERE space_id = $1 AND value IS NULL ORDER BY seq", space
    )
    assert [r["seq"] for r in nulls] == [8, 9]


@pytest.mark.parametrize("batched", [False, True], ids=["one", "batch"])
async def test_a_server_event_is_returned_as_reads_return_it(
    pool: asyncpg.Pool, store: PostgresEventStore, batched: bool
) -> None:
    owner = await new_user(pool)
    space = await store.create_space(name="server", creator_user_id=owner, personal=False)
    event = ServerEvent(
        space_id=space,
        kind="reminder_fired",
        entity_type="task",
        entity_id="t-1",
        value={"reminder_id": new_id(), "lateness_ms": 12, "ratio": 1.0},
        key=f"reminder_fired:{new_id()}",
    )
    if batched:
        [appended] = await store.append_server_events([event])
        assert isinstance(appended, ServerAppend)
    else:
        appended = await store.append_server_event(**msgspec.structs.asdict(event))
    assert appended.duplicate is False
    assert _wire([appended.event]) == _wire(await store.read(space, 1, 10))
    assert type(appended.event.value["ratio"]) is int  # 1, as reads return it
    _recorded_now([appended.event])


async def test_a_member_event_is_returned_as_reads_return_it(
    pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    owner, other = await new_user(pool), await new_user(pool)
    space = await store.create_space(name="members", creator_user_id=owner, personal=False)
    added = await store.change_member(space_id=space, user_id=other, role="editor", by=owner)
    assert added is not None
    created, read = await store.read(space, 0, 10)
    assert _wire([added]) == _wire([read])
    _recorded_now([created, read])
