"""Append-only in the database itself, and tamper evidence through the hash chain."""

from __future__ import annotations

import asyncpg
import pytest

from eventstore.postgres import PostgresEventStore
from eventstore.testing import forge, new_id, op
from tests.conftest import TEST_SECRET


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET value = '\"x\"' WHERE space_id = $1",
        "DELETE FROM events WHERE space_id = $1",
        "TRUNCATE events",
    ],
)
async def test_database_refuses_changes_to_events(pool: asyncpg.Pool, statement: str) -> None:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
        user = new_id()
        space = await store.create_space(name="i", creator_user_id=user, personal=True)
        await store.append(user_id=user, device_id=new_id(), ops=[op(space)])
    args = [space] if "$1" in statement else []
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute(statement, *args)
    assert await pool.fetchval("SELECT count(*) FROM events WHERE space_id = $1", space) == 2


@pytest.mark.parametrize(
    ("sql", "broken"),
    [
        ("UPDATE events SET value = '\"evil\"' WHERE space_id = $1 AND seq = 3", 3),
        ("UPDATE events SET field = 'notes' WHERE space_id = $1 AND seq = 3", 3),
        ("UPDATE events SET kind = 'add' WHERE space_id = $1 AND seq = 2", 2),
        ("UPDATE events SET entity_type = 'list' WHERE space_id = $1 AND seq = 5", 5),
        ("UPDATE events SET pred = ARRAY[op_id] WHERE space_id = $1 AND seq = 4", 4),
        ("UPDATE events SET op_id = gen_random_uuid() WHERE space_id = $1 AND seq = 6", 6),
        ("UPDATE events SET lamport = lamport + 1 WHERE space_id = $1 AND seq = 4", 4),
        ("UPDATE events SET client_time = 'x' WHERE space_id = $1 AND seq = 2", 2),
        ("UPDATE events SET user_id = NULL WHERE space_id = $1 AND seq = 5", 5),
        ("DELETE FROM events WHERE space_id = $1 AND seq = 4", 4),
        ("DELETE FROM events WHERE space_id = $1 AND seq = 6", 6),
        ("UPDATE spaces SET head = 5 WHERE space_id = $1", 6),
        ("UPDATE events SET chain_hash = sha256(chain_hash) WHERE space_id = $1 AND seq = 1", 1),
        ("UPDATE spaces SET chain_tip = sha256(chain_tip) WHERE space_id = $1", 6),
    ],
)
async def test_verify_finds_the_first_tampered_seq(
    fresh_pool: asyncpg.Pool, sql: str, broken: int
) -> None:
    async with PostgresEventStore(fresh_pool, secret_key=TEST_SECRET) as store:
        user = new_id()
        space = await store.create_space(name="t", creator_user_id=user, personal=True)
        other = await store.create_space(name="u", creator_user_id=user, personal=True)
        for s in (space, other):
            ops = [op(s, entity_id=f"t{i}", lamport=i + 1, client_time="c") for i in range(5)]
            await store.append(user_id=user, device_id=new_id(), ops=ops)
        assert await store.verify(space) is None
        await forge(fresh_pool, sql, space)
        assert await store.verify(space) == broken
        assert await store.verify(other) is None


async def test_verify_holds_every_kind_of_event_to_its_hashes(fresh_pool: asyncpg.Pool) -> None:
    """Events without a value (a delete, a restore), a set to null and sets naming their
    pred are hashed as they were written: an intact space verifies, and a value given
    to a delete is found."""
    async with PostgresEventStore(fresh_pool, secret_key=TEST_SECRET) as store:
        user = new_id()
        space = await store.create_space(name="k", creator_user_id=user, personal=True)
        first = op(space, value="a", lamport=1)
        ops = [
            first,
            op(space, value="b", lamport=2, pred=[first["op_id"]]),
            op(space, field="due_at", value=None, lamport=3),
            delete := op(space, kind="delete", field=None, lamport=4),
            op(space, kind="restore", field=None, lamport=5, pred=[delete["op_id"]]),
        ]
        outcome = await store.append(user_id=user, device_id=new_id(), ops=ops)
        assert [r.status for r in outcome.results] == ["applied"] * 5
        assert await store.verify(space) is None
        await forge(
            fresh_pool, "UPDATE events SET value = '1' WHERE space_id = $1 AND seq = 5", space
        )
        assert await store.verify(space) == 5


async def test_verify_finds_a_forged_chain_tip_of_a_space_of_one_event(
    fresh_pool: asyncpg.Pool,
) -> None:
    async with PostgresEventStore(fresh_pool, secret_key=TEST_SECRET) as store:
        space = await store.create_space(name="o", creator_user_id=new_id(), personal=True)
        assert await store.verify(space) is None
        await forge(
            fresh_pool, "UPDATE spaces SET chain_tip = sha256(chain_tip) WHERE space_id = $1", space
        )
        assert await store.verify(space) == 1
