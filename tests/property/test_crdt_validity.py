"""Validity: realistic devices never trip it; adversarial ops are rejected or canonicalised."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from crdt import (
    MAX_SAFE_INT,
    EntityState,
    Op,
    Schema,
    canonical_value,
    fold,
    order_key,
    plain_text,
)
from tests.property.adversarial import adversarial_histories, store
from tests.property.helpers import assert_same, merged, singletons
from tests.property.strategies import History, op_id_for, realistic_histories

CODES = {"invalid_op", "unknown_entity_type", "unknown_field", "type_mismatch", "too_large"}


@given(realistic_histories())
def test_devices_that_follow_the_protocol_are_never_rejected(history: History) -> None:
    assert store(history).rejected == []


def _assert_valid_stored(op: Op, held: dict[str, Op], schema: Schema) -> None:
    """What docs/protocol.md sections 2 and 3 promise of every stored op."""
    spec = schema.entity_types[op.entity_type]
    assert op.lamport >= 1
    for p in op.pred:
        target = held[p]
        assert (target.entity_type, target.entity_id) == (op.entity_type, op.entity_id)
        assert target.lamport < op.lamport
        if op.kind == "set":
            assert (target.kind, target.field) == ("set", op.field)
        elif op.kind == "remove":
            assert (target.kind, target.field, target.value) == ("add", op.field, op.value)
        else:
            assert target.kind in ("delete", "restore")
    for text in _strings(op):
        assert plain_text(text), op  # never a NUL or an unpaired surrogate
    if op.field is None:
        assert op.kind in ("delete", "restore")
        return
    fspec = spec.fields[op.field]
    value: Any = op.value
    if fspec.value in ("integer", "number") or fspec.type == "counter":
        # numeric aliases never reach the log: integral floats were canonicalised or refused
        assert not (isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INT)
    if fspec.type == "set":
        assert isinstance(value, str | int)
        assert not isinstance(value, bool)


def _strings(op: Op) -> list[str]:
    """Every string of the op: names, ids, and those in its value (keys included)."""
    found = [op.op_id, op.entity_type, op.entity_id, op.kind, *op.pred]
    if op.field is not None:
        found.append(op.field)
    stack = [op.value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            found.append(v)
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
    return found


@given(adversarial_histories())
def test_adversarial_ops_are_rejected_with_a_protocol_code(history: History) -> None:
    stored = store(history)
    assert {v.code for _, v in stored.rejected} <= CODES
    held: dict[str, Op] = {}
    for op in stored.accepted:
        _assert_valid_stored(op, held, history.schema)
        held[op.op_id] = op
    for op, violation in stored.rejected:
        assert violation.message
        assert op.op_id not in held or held[op.op_id] is not op


@given(adversarial_histories(), st.data())
def test_unvalidated_ops_still_converge(history: History, data: st.DataObject) -> None:
    """The state is total: even ops validation would refuse merge order-independently."""
    ops = [op for op in {op.op_id: op for op in history.ops}.values() if _hashable(op)]
    ops += data.draw(st.lists(_garbage_ops(history), max_size=6))
    ops = [op for op in {op.op_id: op for op in ops}.values() if _encodable(op)]
    shuffled = data.draw(st.permutations(ops))
    expected = fold(ops)
    assert_same(fold(shuffled), expected, history.schema)
    assert_same(merged(singletons(shuffled)), expected, history.schema)


def _encodable(op: Op) -> bool:
    """Ops whose strings have a UTF-8 form: a state holding an unpaired surrogate cannot be
    encoded at all (validation refuses such ops; a NUL is fine here)."""
    return all(not _SURROGATE.search(text) for text in _strings(op))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _hashable(op: Op) -> bool:
    """Ops whose values have the JSON types the state relies on (see docs/crdt.md).

    Set elements are strings or integers and deltas integers: validation refuses the rest,
    and Python would fold 0, 0.0 and False into one dict key.
    """
    if op.kind in ("add", "remove"):
        return isinstance(op.value, str | int) and not isinstance(op.value, bool)
    return op.kind != "inc" or (isinstance(op.value, int) and not isinstance(op.value, bool))


def _garbage_ops(history: History) -> st.SearchStrategy[Op]:
    """Ops with preds forming cycles, naming themselves or other kinds, fields on lifecycle."""
    ids = [op.op_id for op in history.ops] + [op_id_for(10**9 + i) for i in range(4)]
    entities = sorted({(op.entity_type, op.entity_id) for op in history.ops}) or [("task", "t")]
    return st.builds(
        _garbage_op,
        st.integers(0, 3),
        st.sampled_from(entities),
        st.sampled_from(["set", "inc", "add", "remove", "delete", "restore", "member_added"]),
        st.sampled_from([None, "f0", "f1"]),
        st.lists(st.sampled_from(ids), max_size=3, unique=True),
        st.integers(0, 5),
    )


def _garbage_op(
    n: int, entity: tuple[str, str], kind: str, field: str | None, pred: list[str], lamport: int
) -> Op:
    op_id = op_id_for(10**9 + n)
    return Op(
        op_id=op_id,
        entity_type=entity[0],
        entity_id=entity[1],
        kind=kind,
        field=field,
        value=n,
        pred=(*pred, op_id) if n == 3 else tuple(pred),
        lamport=lamport,
    )


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT))
def test_canonical_numbers_keep_their_value(x: float) -> None:
    c = canonical_value(x)
    assert c == x
    if isinstance(x, float) and x.is_integer() and abs(x) <= MAX_SAFE_INT:
        assert type(c) is int
    assert canonical_value(c) is c or type(c) is float


@given(realistic_histories())
def test_edited_while_deleted_follows_the_order_key(history: History) -> None:
    for key, state in fold(history.ops).items():
        ops = [op for op in history.ops if (op.entity_type, op.entity_id) == key]
        view = state.view(history.schema.entity_types[key[0]])
        winner = state.deleted_by()
        assert view.deleted == (winner is not None)
        if winner is None:
            assert not view.edited_while_deleted
            continue
        later = [op for op in ops if op.field is not None and order_key(op) > order_key(winner)]
        assert view.edited_while_deleted == bool(later)
        assert isinstance(state, EntityState)
