"""Two stores on one database, as two gateway processes: what one store wrote or learned
of a space may be out of date when it next writes there. Another store's set, a removal
or role change through either store, fields set elsewhere before a store's first push,
and a group rolled back: each push is judged by what is stored under the space's lock.
(Guards for any cache of roles or heads a store might keep between groups; one was
measured and not taken, docs/benchmarks.md.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from core.errors import ConcordError
from eventstore.heads import field_key
from eventstore.postgres import PostgresEventStore
from eventstore.rows import Conn
from eventstore.testing import new_id, op, stored_heads
from tests.conftest import TEST_SECRET

Raw = dict[str, Any]


@pytest.fixture
async def two(pool: asyncpg.Pool) -> AsyncIterator[tuple[PostgresEventStore, PostgresEventStore]]:
    """Two stores on one database (two gateway processes)."""
    async with (
        PostgresEventStore(pool, secret_key=TEST_SECRET) as a,
        PostgresEventStore(pool, secret_key=TEST_SECRET) as b,
    ):
        yield a, b


async def _push(store: PostgresEventStore, user: str, *ops: Raw) -> list[str]:
    out = await store.append(user_id=user, device_id=new_id(), ops=list(ops))
    return [r.status if r.error is None else r.error.code for r in out.results]


def _key(entity_id: str) -> str:
    return field_key("task", entity_id, "title")


async def test_a_set_through_another_store_is_seen(
    two: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    """Store a knows the field's head as x1; store b sets x2 over it. a's set x3, also
    naming x1, is concurrent with x2: both stay heads. (From what a knew, x1 would still
    be the head, and x2 would be lost from the table.)"""
    a, b = two
    user = new_id()
    space = await a.create_space(name="m", creator_user_id=user, personal=False)
    x1 = op(space, entity_id="t", lamport=1)
    assert await _push(a, user, x1) == ["applied"]
    x2 = op(space, entity_id="t", lamport=2, pred=[x1["op_id"]])
    assert await _push(b, user, x2) == ["applied"]
    x3 = op(space, entity_id="t", lamport=3, pred=[x1["op_id"]])
    assert await _push(a, user, x3) == ["applied"]
    assert await stored_heads(a.pool, space) == {_key("t"): {x2["op_id"], x3["op_id"]}}


@pytest.mark.parametrize("remover", ["the same store", "another store"])
async def test_a_removal_through_either_store_ends_the_pushes(
    two: tuple[PostgresEventStore, PostgresEventStore], remover: str
) -> None:
    """An editor pushes through store a; the editor is removed (through a itself, or
    through b): the next push through a is refused."""
    a, b = two
    owner, editor = new_id(), new_id()
    space = await a.create_space(name="m", creator_user_id=owner, personal=False)
    await a.change_member(space_id=space, user_id=editor, role="editor", by=owner)
    assert await _push(a, editor, op(space, lamport=1)) == ["applied"]
    store = a if remover == "the same store" else b
    await store.change_member(space_id=space, user_id=editor, role=None, by=owner)
    assert await _push(a, editor, op(space, entity_id="u", lamport=2)) == ["not_found"]


async def test_a_role_change_elsewhere_is_seen(
    two: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    """An editor made a reader through store b may no longer push through store a."""
    a, b = two
    owner, editor = new_id(), new_id()
    space = await a.create_space(name="m", creator_user_id=owner, personal=False)
    await a.change_member(space_id=space, user_id=editor, role="editor", by=owner)
    assert await _push(a, editor, op(space, lamport=1)) == ["applied"]
    await b.change_member(space_id=space, user_id=editor, role="reader", by=owner)
    assert await _push(a, editor, op(space, entity_id="u", lamport=2)) == ["forbidden"]


async def test_a_group_rolled_back_leaves_the_heads_as_they_were(pool: asyncpg.Pool) -> None:
    """A set that fails before COMMIT changes nothing stored: a later set naming the same
    head is the field's one head."""
    failing = False

    async def hook(conn: Conn) -> None:
        if failing:
            raise RuntimeError("fails before COMMIT")

    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
        user = new_id()
        space = await store.create_space(name="m", creator_user_id=user, personal=False)
        y1 = op(space, entity_id="t", lamport=1)
        assert await _push(store, user, y1) == ["applied"]
        store.fault_hook = hook
        failing = True
        with pytest.raises(ConcordError, match="fails before COMMIT"):
            await _push(store, user, op(space, entity_id="t", lamport=2, pred=[y1["op_id"]]))
        failing = False
        y3 = op(space, entity_id="t", lamport=3, pred=[y1["op_id"]])
        assert await _push(store, user, y3) == ["applied"]
    assert await stored_heads(pool, space) == {_key("t"): {y3["op_id"]}}


async def test_fields_set_through_another_store_are_found(
    two: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    """Store b set field t before store a first wrote to the space: a's set of t finds
    b's row and names its head (a store taking the fields it has not seen for new would
    insert a second row and fail)."""
    a, b = two
    user = new_id()
    space = await b.create_space(name="m", creator_user_id=user, personal=False)
    z1 = op(space, entity_id="t", lamport=1)
    assert await _push(b, user, z1) == ["applied"]
    assert await _push(a, user, op(space, entity_id="other", lamport=2)) == ["applied"]
    z2 = op(space, entity_id="t", lamport=3, pred=[z1["op_id"]])
    assert await _push(a, user, z2) == ["applied"]
    assert (await stored_heads(a.pool, space))[_key("t")] == {z2["op_id"]}
