"""What a vector expects: everything a replica derives from a set of ops, as JSON.

Per entity: the read view, and the helpers a device computes `pred` from (field heads,
live adds, lifecycle heads) plus `last_lamport` and the winning delete. The same function
makes the committed vectors and checks them, so they can only drift when `crdt/` does.
"""

from __future__ import annotations

from typing import Any

import msgspec

from crdt import EntityState, Op, Schema, fold, order_key

__all__ = ["VECTOR_FORMAT", "entities_of", "op_from_json", "op_to_json", "results_of"]

VECTOR_FORMAT = 1
"""Bumped when the JSON layout of a vector changes (not when states change)."""


def op_to_json(op: Op) -> dict[str, Any]:
    """An op as vectors list it: every field spelled out (null field, empty pred)."""
    return {
        "op_id": op.op_id,
        "entity_type": op.entity_type,
        "entity_id": op.entity_id,
        "kind": op.kind,
        "field": op.field,
        "value": op.value,
        "pred": list(op.pred),
        "lamport": op.lamport,
        "device_id": op.device_id,
    }


def op_from_json(raw: dict[str, Any]) -> Op:
    return Op(
        op_id=raw["op_id"],
        entity_type=raw["entity_type"],
        entity_id=raw["entity_id"],
        kind=raw["kind"],
        field=raw["field"],
        value=raw["value"],
        pred=tuple(raw["pred"]),
        lamport=raw["lamport"],
        device_id=raw["device_id"],
    )


def _element_key(element: Any) -> tuple[str, Any]:
    """Elements as JSON values: 1 and "1" are two elements (so are 1 and true)."""
    return (type(element).__name__, element)


def _entity(state: EntityState, ops: list[Op], schema: Schema) -> dict[str, Any]:
    """One entity's expected facts. Fields and elements are those its ops name, in order of
    first appearance among the ops sorted by order key, so any delivery order lists them
    alike (and the JavaScript check walks them the same way)."""
    registers: list[str] = []
    elements: list[tuple[str, Any]] = []
    seen_elements: set[tuple[str, tuple[str, Any]]] = set()
    for op in sorted(ops, key=order_key):
        if op.field is None:
            continue
        if op.kind == "set" and op.field not in registers:
            registers.append(op.field)
        elif op.kind in ("add", "remove"):
            key = (op.field, _element_key(op.value))
            if key not in seen_elements:
                seen_elements.add(key)
                elements.append((op.field, op.value))
    winner = state.deleted_by()
    view = None
    if state.has_client_events:
        view = msgspec.to_builtins(state.view(schema.entity_types.get(state.entity_type)))
    return {
        "entity_type": state.entity_type,
        "entity_id": state.entity_id,
        "has_client_events": state.has_client_events,
        "last_lamport": state.last_lamport,
        "deleted_by": None if winner is None else winner.op_id,
        "lifecycle_heads": list(state.lifecycle_heads()),
        "field_heads": {name: list(state.field_heads(name)) for name in registers},
        "live_adds": [[f, e, list(state.live_adds(f, e))] for f, e in elements],
        "view": view,
    }


def entities_of(ops: list[Op], schema: Schema) -> list[dict[str, Any]]:
    """The expected facts of every entity the ops touch, sorted by (type, id)."""
    states = fold(ops)
    out = []
    for key in sorted(states):
        own = [op for op in ops if (op.entity_type, op.entity_id) == key]
        out.append(_entity(states[key], own, schema))
    return out


def results_of(ops: list[Op]) -> list[list[bool]]:
    """`[applied, conflicted]` of each op applied in the order listed."""
    states: dict[tuple[str, str], EntityState] = {}
    out: list[list[bool]] = []
    for op in ops:
        key = (op.entity_type, op.entity_id)
        state = states.get(key)
        if state is None:
            state = states[key] = EntityState(*key)
        result = state.apply(op)
        out.append([result.applied, result.conflicted])
    return out
