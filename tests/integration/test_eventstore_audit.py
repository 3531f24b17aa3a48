"""Audit tooling: export as JSON lines, verify every space, replay as of a seq or a time."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest

from core.errors import NotFound
from core.wire import Event
from eventstore import audit
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from tests.conftest import TEST_SECRET

Factory = Callable[..., Awaitable[str]]


async def test_export_writes_every_event_in_order(pool: asyncpg.Pool) -> None:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
        user = new_id()
        space = await store.create_space(name="a", creator_user_id=user, personal=True)
        await store.append(
            user_id=user, device_id=new_id(), ops=[op(space, lamport=i + 1) for i in range(25)]
        )
        out = io.StringIO()
        assert await audit.export(pool, space, out, progress=True) == 26
        lines = out.getvalue().splitlines()
        exported = [msgspec.json.decode(line, type=Event) for line in lines]
        assert exported == await store.read(space, 0, 100)
    with pytest.raises(NotFound):
        await audit.export(pool, new_id(), io.StringIO())


async def test_verify_all_names_broken_spaces(fresh_database: Factory) -> None:
    dsn = await fresh_database()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
            user = new_id()
            spaces = [
                await store.create_space(name=f"v{i}", creator_user_id=user, personal=False)
                for i in range(3)
            ]
            for s in spaces:
                await store.append(user_id=user, device_id=new_id(), ops=[op(s), op(s)])
        report = await audit.verify_all(pool)
        assert (report.checked, report.ok) == (3, True)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
            await conn.execute(
                "UPDATE events SET entity_id = 'forged' WHERE space_id = $1 AND seq = 2",
                spaces[1],
            )
            await conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
        report = await audit.verify_all(pool)
        assert report.broken == {spaces[1]: 2}
        assert not report.ok
    finally:
        await pool.close()


async def test_replay_as_of_seq_time_and_entity(pool: asyncpg.Pool) -> None:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
        user, device = new_id(), new_id()
        space = await store.create_space(name="r", creator_user_id=user, personal=True)
        first = op(space, entity_id="t1", value="one", lamport=1)
        await store.append(user_id=user, device_id=device, ops=[first])
        between = datetime.now(UTC)
        second = op(space, entity_id="t1", value="two", lamport=2, pred=[first["op_id"]])
        other = op(space, entity_id="t2", value="other", lamport=3)
        await store.append(user_id=user, device_id=device, ops=[second, other])

    now = await audit.replay(pool, space)
    assert now["seq"] == 4
    titles = {e["entity_id"]: e["fields"]["title"]["value"] for e in now["entities"]}
    assert titles == {"t1": "two", "t2": "other"}
    at_two = await audit.replay(pool, space, as_of_seq=2)
    assert [e["fields"]["title"]["value"] for e in at_two["entities"]] == ["one"]
    at_time = await audit.replay(pool, space, as_of=between)
    assert at_time["seq"] == 2
    assert at_time["entities"] == at_two["entities"]
    only = await audit.replay(pool, space, entity=("task", "t2"))
    assert [e["entity_id"] for e in only["entities"]] == ["t2"]
    assert (await audit.replay(pool, space, as_of_seq=1))["entities"] == []
