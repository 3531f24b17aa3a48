"""A reference model: docs/protocol.md section 3 evaluated literally from the whole set of ops.

Slow and obvious on purpose; the incremental state must agree with it. It owns every
comparison it makes (the order key, the order of set elements) instead of importing
them from ``crdt``: a model that borrowed the code under test would agree with its bugs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from crdt import EntityTypeSpec, Op

REGISTER_TYPES = ("lww", "mv")


def order_key(op: Op) -> tuple[int, str]:
    """docs/protocol.md section 2: ``(lamport, op_id)`` compared left to right, op_ids compared
    as their canonical strings (lowercase, hyphenated)."""
    return (op.lamport, str(uuid.UUID(op.op_id)))


def element_sort_key(element: Any) -> tuple[int, int | str]:
    """How reads list a set's elements (docs/crdt.md: integers ascending, then strings
    ascending); elements that passed validation are never anything else."""
    if isinstance(element, bool) or not isinstance(element, int | str):
        raise AssertionError(f"a validated set element is an int or a str: {element!r}")
    return (0, element) if isinstance(element, int) else (1, element)


def _heads(ops: list[Op]) -> list[Op]:
    """The ops not named in any other op's pred, greatest order key first."""
    named = {p for op in ops for p in op.pred if p != op.op_id}
    return sorted((op for op in ops if op.op_id not in named), key=order_key, reverse=True)


def field_value(ops: list[Op], ftype: str, name: str) -> dict[str, Any] | None:
    """One field's read, as a dict of what the view reports; None when absent."""
    if ftype in REGISTER_TYPES:
        sets = [op for op in ops if op.kind == "set" and op.field == name]
        heads = _heads(sets)
        if not heads:
            return None
        values = [h.value for h in heads]
        return {
            "value": values if ftype == "mv" else values[0],
            "heads": [(h.op_id, h.value, h.device_id, h.lamport) for h in heads],
            "conflicted": len(heads) > 1,
        }
    if ftype == "counter":
        incs = [op for op in ops if op.kind == "inc" and op.field == name]
        return {"value": sum(op.value for op in incs)} if incs else None
    writes = [op for op in ops if op.kind in ("add", "remove") and op.field == name]
    if not writes:
        return None
    removed = {p for op in writes if op.kind == "remove" for p in op.pred}
    present = {op.value for op in writes if op.kind == "add" and op.op_id not in removed}
    return {"value": sorted(present, key=element_sort_key)}


def entity_read(ops: Iterable[Op], spec: EntityTypeSpec) -> dict[str, Any]:
    """The whole read of one entity, for ops that passed validation."""
    unique = list({op.op_id: op for op in ops}.values())
    fields = {}
    for name, fspec in spec.fields.items():
        fv = field_value(unique, fspec.type, name)
        if fv is not None:
            fields[name] = fv
    life = _heads([op for op in unique if op.kind in ("delete", "restore")])
    deleted = bool(life) and life[0].kind == "delete"
    field_keys = [order_key(op) for op in unique if op.kind in ("set", "inc", "add", "remove")]
    edited = deleted and any(k > order_key(life[0]) for k in field_keys)
    return {"deleted": deleted, "edited_while_deleted": edited, "fields": fields}


def view_as_read(view: Any) -> dict[str, Any]:
    """Bring an EntityView to `entity_read`'s shape."""
    fields = {}
    for name, fv in view.fields.items():
        d: dict[str, Any] = {"value": fv.value}
        if fv.heads is not None:
            d["heads"] = [(h.op_id, h.value, h.device_id, h.lamport) for h in fv.heads]
            d["conflicted"] = fv.conflicted
        fields[name] = d
    return {
        "deleted": view.deleted,
        "edited_while_deleted": view.edited_while_deleted,
        "fields": fields,
    }
