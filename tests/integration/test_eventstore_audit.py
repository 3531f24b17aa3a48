"""Audit tooling: export as JSON lines, verify every space, replay as of a seq or a time."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from rich.console import Console

from core.errors import NotFound
from core.wire import Event
from eventstore import audit
from eventstore.postgres import PostgresEventStore
from eventstore.testing import forge, new_id, op
from tests.conftest import TEST_SECRET


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


async def test_verify_all_names_broken_spaces(fresh_pool: asyncpg.Pool) -> None:
    async with PostgresEventStore(fresh_pool, secret_key=TEST_SECRET) as store:
        user = new_id()
        spaces = [
            await store.create_space(name=f"v{i}", creator_user_id=user, personal=False)
            for i in range(3)
        ]
        for s in spaces:
            await store.append(user_id=user, device_id=new_id(), ops=[op(s), op(s)])
    report = await audit.verify_all(fresh_pool)
    assert (report.checked, report.ok) == (3, True)
    await forge(
        fresh_pool,
        "UPDATE events SET entity_id = 'forged' WHERE space_id = $1 AND seq = 2",
        spaces[1],
    )
    report = await audit.verify_all(fresh_pool)
    assert report.broken == {spaces[1]: 2}
    assert not report.ok


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


async def test_verify_one_space(fresh_pool: asyncpg.Pool) -> None:
    async with PostgresEventStore(fresh_pool, secret_key=TEST_SECRET) as store:
        user = new_id()
        space = await store.create_space(name="v", creator_user_id=user, personal=False)
        await store.append(user_id=user, device_id=new_id(), ops=[op(space), op(space)])
    assert await audit.verify(fresh_pool, space) is None
    await forge(
        fresh_pool, "UPDATE events SET field = 'notes' WHERE space_id = $1 AND seq = 3", space
    )
    assert await audit.verify(fresh_pool, space) == 3
    unknown = new_id()
    for space_id, shown in ((unknown, unknown), ("nope", "nope")):
        with pytest.raises(NotFound, match=rf"^no such space: {shown}$"):
            await audit.verify(fresh_pool, space_id)


async def test_replay_before_the_first_event_of_an_unknown_entity_and_by_schema(
    pool: asyncpg.Pool,
) -> None:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
        user = new_id()
        space = await store.create_space(name="r", creator_user_id=user, personal=True)
        # two concurrent sets of an mv field: the schema's view keeps both values
        ops = [
            op(space, entity_id="t1", field="assignee", value=name, lamport=1)
            for name in ("ann", "bob")
        ]
        await store.append(user_id=user, device_id=new_id(), ops=ops)
    before = await audit.replay(pool, space, as_of_seq=0)
    assert (before["space_id"], before["seq"], before["entities"]) == (space, 0, [])
    nothing = await audit.replay(pool, space, entity=("task", "never"))
    assert nothing["entities"] == []
    [task] = (await audit.replay(pool, space))["entities"]
    assert sorted(task["fields"]["assignee"]["value"]) == ["ann", "bob"]


async def test_progress_is_shown_on_stderr_only_when_asked_and_worth_it(
    fresh_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = io.StringIO()
    monkeypatch.setattr(audit, "_STDERR", Console(file=shown, force_terminal=True, width=120))
    async with PostgresEventStore(fresh_pool, secret_key=TEST_SECRET) as store:
        user = new_id()
        space = await store.create_space(name="p", creator_user_id=user, personal=True)
        await store.append(user_id=user, device_id=new_id(), ops=[op(space), op(space)])
    monkeypatch.setattr(audit, "PROGRESS_THRESHOLD", 4)  # the space's 3 events: too few
    await audit.export(fresh_pool, space, io.StringIO(), progress=True)
    assert shown.getvalue() == ""
    monkeypatch.setattr(audit, "PROGRESS_THRESHOLD", 3)  # enough
    await audit.export(fresh_pool, space, io.StringIO(), progress=False)
    await audit.export(fresh_pool, space, io.StringIO())  # not asked for, by default
    assert shown.getvalue() == ""
    await audit.export(fresh_pool, space, io.StringIO(), progress=True)
    assert f"export {space}" in shown.getvalue()
    shown.truncate(0)
    shown.seek(0)
    assert (await audit.verify_all(fresh_pool)).ok
    assert shown.getvalue() == ""
    assert (await audit.verify_all(fresh_pool, progress=True)).checked == 1
    assert "verify " in shown.getvalue()  # the bar's label, then the bar
