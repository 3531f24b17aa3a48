"""Adversarial histories: realistic ones with some ops turned hostile, and the simulated
event store that validates them (docs/protocol.md sections 2 and 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import strategies as st

from crdt import (
    DEFAULT_LAMPORT_HEADROOM,
    MAX_SAFE_INT,
    FieldSpec,
    Op,
    PredTarget,
    Schema,
    Violation,
    canonical_op,
    validate,
)
from tests.property.strategies import History, op_id_for, realistic_histories

MUTATIONS = (
    "pred_other_field",
    "pred_other_entity",
    "pred_unknown",
    "pred_later",
    "pred_repeat",
    "pred_self",
    "pred_on_add",
    "pred_too_many",
    "lamport_jump",
    "lamport_over",
    "lamport_zero",
    "lamport_equal_pred",
    "lamport_equal_other",
    "alias",
    "too_long",
    "wrong_kind",
    "bad_op_id",
    "bad_entity_id",
    "no_field",
    "unknown_field",
    "unknown_type",
    "server_kind",
    "not_finite",
    "big_int",
    "bool_value",
    "lifecycle_value",
    "timestamp_offset",
    "over_limit",
    "nul_text",
    "lone_surrogate",
)

#: Strings no client may send (docs/protocol.md section 2): a NUL, or an unpaired surrogate.
NUL_TEXTS = ("\x00", "a\x00b", "ünï\x00")
SURROGATE_TEXTS = ("\ud800", "a\udfffb", "\udc80ünï")

Mutation = tuple[int, str, int]


def _other(ops: list[Op], i: int, param: int, keep: Any) -> Op | None:
    """Some op of the list other than ops[i] that `keep` accepts, chosen by `param`."""
    found = [op for j, op in enumerate(ops) if j != i and keep(op)]
    return found[param % len(found)] if found else None


def mutate(ops: list[Op], i: int, how: str, param: int, schema: Schema) -> Op:
    """Turn ops[i] into an adversarial variant (same op_id unless the mutation is the id)."""
    op = ops[i]
    same_entity = (op.entity_type, op.entity_id)
    unknown = op_id_for(10**7 + param)
    changes: dict[str, Any] = {}
    if how == "pred_other_field":
        o = _other(
            ops,
            i,
            param,
            lambda x: (x.entity_type, x.entity_id) == same_entity and x.field != op.field,
        )
        changes["pred"] = (*op.pred, o.op_id if o else unknown)
    elif how == "pred_other_entity":
        o = _other(ops, i, param, lambda x: (x.entity_type, x.entity_id) != same_entity)
        changes["pred"] = (*op.pred, o.op_id if o else unknown)
    elif how == "pred_unknown":
        changes["pred"] = (*op.pred, unknown)
    elif how == "pred_later":
        later = ops[i + 1 :]
        changes["pred"] = (*op.pred, later[param % len(later)].op_id if later else unknown)
    elif how == "pred_repeat":
        changes["pred"] = (*op.pred, *op.pred[:1]) if op.pred else (unknown, unknown)
    elif how == "pred_self":
        changes["pred"] = (*op.pred, op.op_id)
    elif how == "pred_on_add":
        o = _other(ops, i, param, lambda x: True)
        changes["kind"] = "add" if param % 2 else "inc"
        changes["pred"] = (o.op_id if o else unknown,)
    elif how == "pred_too_many":
        changes["pred"] = tuple(op_id_for(10**8 + k) for k in range(65))
    elif how == "lamport_jump":
        changes["lamport"] = op.lamport + DEFAULT_LAMPORT_HEADROOM + param % 3 - 1
    elif how == "lamport_over":
        changes["lamport"] = 2**53 + param % 5
    elif how == "lamport_zero":
        changes["lamport"] = -(param % 3)
    elif how == "lamport_equal_pred":
        named = [x.lamport for x in ops if x.op_id in op.pred]
        changes["lamport"] = max(named) if named else op.lamport
    elif how == "lamport_equal_other":
        o = _other(ops, i, param, lambda x: x.device_id != op.device_id)
        changes["lamport"] = o.lamport if o else op.lamport
    else:
        changes = _mutate_value_or_ids(op, how, param, schema)
    return msgspec_replace(op, changes)


def _poison_text(op: Op, how: str, param: int) -> dict[str, Any]:
    """A NUL or a lone surrogate in one of the op's strings: entity type, field, value
    (or set element), or deep inside a value, key or item."""
    texts = NUL_TEXTS if how == "nul_text" else SURROGATE_TEXTS
    text = texts[param % len(texts)]
    where = param // len(texts) % 6
    if where == 0:
        return {"entity_type": op.entity_type + text}
    if where == 1:
        return {"field": (op.field or "f0") + text}
    if where == 2:
        return {"value": text}
    if where == 3:
        return {"value": [1, {"k": ["ok", text]}]}
    if where == 4:
        return {"value": {text: True}}
    return {"value": (op.value if isinstance(op.value, str) else "") + text}


def _mutate_value_or_ids(op: Op, how: str, param: int, schema: Schema) -> dict[str, Any]:
    value = op.value
    if how in ("nul_text", "lone_surrogate"):
        return _poison_text(op, how, param)
    if how == "alias":
        is_int = isinstance(value, int) and not isinstance(value, bool)
        return {"value": float(value) if is_int else value}
    if how == "too_long":
        spec = _spec(op, schema)
        top = spec.max_length if spec is not None and spec.max_length is not None else 999
        return {"value": "y" * (top + 1)}
    if how == "over_limit":
        spec = _spec(op, schema)
        top = spec.max_abs if spec is not None and spec.max_abs is not None else MAX_SAFE_INT
        return {"value": top + 1 if param % 2 else -top - 1}
    if how == "wrong_kind":
        swap = {"set": "inc", "inc": "set", "add": "set", "remove": "inc", "delete": "set"}
        return {"kind": swap.get(op.kind, "add")}
    if how == "bad_op_id":
        return {"op_id": op.op_id.upper() if param % 2 else op.op_id[:-1]}
    if how == "bad_entity_id":
        return {"entity_id": ["", "x" * 129, "a b", "ünï"][param % 4]}
    if how == "no_field":
        return {"field": None} if op.field is not None else {"field": "f0"}
    if how == "unknown_field":
        return {"field": "zz"} if op.field is not None else {"entity_type": "nope"}
    if how == "unknown_type":
        return {"entity_type": "_member" if param % 2 else "nope"}
    if how == "server_kind":
        return {"kind": "reminder_fired" if param % 2 else "frobnicate"}
    if how == "not_finite":
        return {"value": [float("nan"), float("inf"), [1, float("-inf")]][param % 3]}
    if how == "big_int":
        return {"value": [2**53, -(2**53), {"a": 2**60}][param % 3]}
    if how == "bool_value":
        return {"value": bool(param % 2)}
    if how == "lifecycle_value":
        return {"kind": "delete", "field": None, "value": True, "pred": ()}
    return {"value": "2026-11-23T10:00:00+00:00" if param % 2 else "2026-11-23t10:00:00z"}


def _spec(op: Op, schema: Schema) -> FieldSpec | None:
    type_spec = schema.entity_types.get(op.entity_type)
    return None if type_spec is None or op.field is None else type_spec.fields.get(op.field)


def msgspec_replace(op: Op, changes: dict[str, Any]) -> Op:
    return msgspec.structs.replace(op, **changes) if changes else op


mutations = st.tuples(st.integers(0, 999), st.sampled_from(MUTATIONS), st.integers(0, 999))


@st.composite
def adversarial_histories(draw: st.DrawFn) -> History:
    """A realistic history with some ops turned adversarial; nothing is validated yet."""
    history = draw(realistic_histories())
    ops = list(history.ops)
    for idx, how, param in draw(st.lists(mutations, min_size=1, max_size=6)) if ops else []:
        i = idx % len(ops)
        ops[i] = mutate(ops, i, how, param, history.schema)
    return History(history.schema, ops)


@dataclass
class Stored:
    """What a simulated event store kept of a history, and what it rejected."""

    accepted: list[Op]
    rejected: list[tuple[Op, Violation]]


def store(history: History) -> Stored:
    """Validate ops in log order as the event store does, keeping the valid (canonical) ones."""
    held: dict[str, Op] = {}
    rejected: list[tuple[Op, Violation]] = []
    max_lamport = 0
    for op in history.ops:
        if op.op_id in held:
            continue
        targets = {p: pred_target(held[p]) for p in op.pred if p in held}
        violation = validate(op, history.schema, targets, max_lamport)
        if violation is not None:
            rejected.append((op, violation))
            continue
        op = canonical_op(op, history.schema)
        held[op.op_id] = op
        max_lamport = max(max_lamport, op.lamport)
    return Stored(list(held.values()), rejected)


def pred_target(op: Op) -> PredTarget:
    return PredTarget(
        op_id=op.op_id,
        entity_type=op.entity_type,
        entity_id=op.entity_id,
        kind=op.kind,
        field=op.field,
        value=op.value,
        lamport=op.lamport,
    )


@st.composite
def valid_histories(draw: st.DrawFn) -> History:
    """Stored ops of a realistic or an adversarial history, after validation."""
    history = draw(st.one_of(realistic_histories(), adversarial_histories()))
    return History(history.schema, store(history).accepted)
