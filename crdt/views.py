"""What a read returns: merged field values with their heads (docs/protocol.md section 6 reads)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import msgspec

from crdt.ops import Op
from crdt.order import order_key

__all__ = ["ApplyResult", "EntityView", "FieldView", "Head", "element_sort_key"]


class ApplyResult(NamedTuple):
    """What one `apply` did: `applied` False for an op_id already held (a no-op);
    `conflicted` True when a `set` left its field with more than one head."""

    applied: bool
    conflicted: bool


class Head(msgspec.Struct, frozen=True, kw_only=True):
    """One head of an lww or mv field: a `set` no other `set` of the field supersedes."""

    op_id: str
    value: Any
    device_id: str
    lamport: int


class FieldView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A field's merged value; `heads` (greatest order key first) and `conflicted` are
    given for lww and mv fields only."""

    value: Any
    heads: list[Head] | None = None
    conflicted: bool | None = None


class EntityView(msgspec.Struct, frozen=True, kw_only=True):
    """An entity's merged state as reads report it; a field never written is absent."""

    entity_type: str
    entity_id: str
    deleted: bool
    edited_while_deleted: bool
    fields: dict[str, FieldView]


def register_view(heads: Mapping[str, Op], mv: bool) -> FieldView | None:
    """View an lww or mv field from its head ops; None when it has none (see docs/crdt.md)."""
    if not heads:
        return None
    ordered = sorted(heads.values(), key=order_key, reverse=True)
    listed = [
        Head(op_id=h.op_id, value=h.value, device_id=h.device_id, lamport=h.lamport)
        for h in ordered
    ]
    value = [h.value for h in ordered] if mv else ordered[0].value
    return FieldView(value=value, heads=listed, conflicted=len(listed) > 1)


def element_sort_key(element: Any) -> tuple[int, Any]:
    """Order set elements in views: integers first, then strings, each ascending.

    Anything else (only ops that skipped validation hold it) sorts last by its repr, so
    even a NaN element has one place whatever the order of arrival.
    """
    if isinstance(element, int) and not isinstance(element, bool):
        return (0, element)
    if isinstance(element, str):
        return (1, element)
    return (2, repr(element))


def set_view(elements: Iterable[Any]) -> FieldView:
    """View a set field: its present elements, in `element_sort_key` order."""
    return FieldView(value=sorted(elements, key=element_sort_key))
