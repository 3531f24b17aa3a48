"""Validity: realistic devices never trip it; adversarial ops are rejected or canonicalised."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from crdt import (
    MAX_SAFE_INT,
    EntityState,
    FieldSpec,
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


# The limits of docs/protocol.md section 2, written out here rather than imported from the
# code under test: a check that reads the limit from crdt/ cannot notice it drifting.
SAFE = 2**53 - 1
MAX_PRED_ENTRIES = 64
HEADROOM = 2**20
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ENTITY_ID = re.compile(r"[A-Za-z0-9_:.\-]{1,128}")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z", re.ASCII)
KINDS_OF = {"lww": {"set"}, "mv": {"set"}, "counter": {"inc"}, "set": {"add", "remove"}}


def _assert_valid_stored(op: Op, held: dict[str, Op], schema: Schema, max_lamport: int) -> None:
    """Every rule the store enforces (docs/protocol.md sections 2 and 3), checked on every
    stored op: ids, kind and field, the schema's types and limits, text, numbers, pred and
    lamport. ``max_lamport`` is the highest lamport stored before ``op``."""
    assert UUID.fullmatch(op.op_id), op
    assert ENTITY_ID.fullmatch(op.entity_id), op
    assert op.entity_type in schema.entity_types, op
    assert not op.entity_type.startswith("_"), op
    spec = schema.entity_types[op.entity_type]
    assert type(op.lamport) is int, op
    assert 1 <= op.lamport <= SAFE, op
    assert op.lamport <= max_lamport + HEADROOM, op
    _assert_valid_pred(op, held)
    for text in _strings(op):
        assert plain_text(text), op  # never a NUL or an unpaired surrogate
    _assert_valid_numbers(op.value)
    if op.field is None:
        assert op.kind in ("delete", "restore"), op
        assert op.value is None, op
        return
    assert op.field in spec.fields, op
    fspec = spec.fields[op.field]
    assert op.kind in KINDS_OF[fspec.type], op
    _assert_valid_value(op.value, fspec)


def _assert_valid_pred(op: Op, held: dict[str, Op]) -> None:
    assert len(op.pred) <= MAX_PRED_ENTRIES, op
    assert len(set(op.pred)) == len(op.pred), op
    assert op.op_id not in op.pred, op
    if op.kind in ("add", "inc"):
        assert op.pred == (), op
    for p in op.pred:
        target = held[p]
        assert (target.entity_type, target.entity_id) == (op.entity_type, op.entity_id)
        assert target.lamport < op.lamport
        if op.kind == "set":
            assert (target.kind, target.field) == ("set", op.field)
        elif op.kind == "remove":
            assert (target.kind, target.field) == ("add", op.field)
            assert type(target.value) is type(op.value)
            assert target.value == op.value
        else:
            assert target.kind in ("delete", "restore")


def _assert_valid_numbers(value: Any) -> None:
    """Finite floats and safe integers only, however deep."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float):
            assert math.isfinite(v), value
        elif isinstance(v, int) and not isinstance(v, bool):
            assert -SAFE <= v <= SAFE, value
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())


def _assert_valid_value(value: Any, fspec: FieldSpec) -> None:
    """The field's value kind, nullability and limits; numeric aliases never stored."""
    if value is None:
        assert fspec.nullable, fspec
        return
    if fspec.type == "set":
        assert isinstance(value, str | int), value
        assert not isinstance(value, bool), value
    kind = fspec.value
    if kind == "string":
        assert isinstance(value, str), value
    elif kind == "boolean":
        assert isinstance(value, bool), value
    elif kind == "timestamp":
        assert isinstance(value, str), value
        assert TIMESTAMP.fullmatch(value), value
        datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")  # a real instant
    else:
        assert isinstance(value, int | float), value
        assert not isinstance(value, bool), value
        if kind == "integer":
            assert isinstance(value, int), value
        # numeric aliases never reach the log: integral floats were canonicalised or refused
        assert not (isinstance(value, float) and value.is_integer() and abs(value) <= SAFE)
        if fspec.max_abs is not None:
            assert abs(value) <= fspec.max_abs, (value, fspec)
    if isinstance(value, str) and fspec.max_length is not None:
        assert len(value) <= fspec.max_length, (len(value), fspec)


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
    max_lamport = 0
    for op in stored.accepted:
        _assert_valid_stored(op, held, history.schema, max_lamport)
        held[op.op_id] = op
        max_lamport = max(max_lamport, op.lamport)
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
