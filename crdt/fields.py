"""Per-field merge structures and the state-based merge of each (docs/protocol.md section 3).

A head (or live add) survives a merge unless the other side superseded it: the other side
has seen it and no longer holds it, or holds it as `pending` in the same scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from crdt.ops import Op

__all__ = [
    "Counter",
    "ORSet",
    "Register",
    "Scope",
    "Side",
    "counter_of",
    "heads_of",
    "merge_counters",
    "merge_heads",
    "merge_orsets",
    "merge_pending",
    "packed",
]

Scope = tuple[str, str | None]
"""Who named a pending op_id: ("set", field), ("remove", field) or ("life", None)."""

Side = tuple[Mapping[str, None], dict[str, set[Scope]]]
"""One side of a merge: the op_ids it holds and its pending op_ids with their scopes."""

Register = Op | dict[str, Op]
"""An lww or mv field's heads: the head itself while it has one (nearly always, and
nothing to allocate), else a dict op_id -> head."""

V = TypeVar("V")
_MISSING: Any = object()


class Counter(msgspec.Struct, gc=False):
    """A counter field: each inc's delta by op_id (merge needs them) and their running sum.

    `gc=False`, as `Op`: it holds op_ids and numbers, nothing that can refer back to it,
    so the collector tracks neither it nor the state's dict of counters."""

    deltas: dict[str, Any] = msgspec.field(default_factory=dict)
    total: Any = 0


class ORSet(msgspec.Struct, gc=False):
    """An add-wins set field: its live adds, op_id -> element; an element is present while
    one add of it is live.

    `gc=False`, as `Counter`: elements are JSON scalars, which refer to nothing. There is no
    count per element beside: a read sorts the live elements anyway (O(live adds)), and
    each add and remove then touches one dict instead of two."""

    live: dict[str, Any] = msgspec.field(default_factory=dict)

    def cancel(self, op_id: str) -> bool:
        """Drop a live add; False when `op_id` is no live add here."""
        return self.live.pop(op_id, _MISSING) is not _MISSING


def counter_of(deltas: dict[str, Any]) -> Counter:
    """A counter holding `deltas` (taken, not copied), with their sum."""
    return Counter(deltas, sum(deltas.values()))


def _superseded(op_id: str, side: Side, scope: Scope) -> bool:
    """Did `side` supersede `op_id` (which it does not hold as a head)?"""
    seen, pending = side
    return op_id in seen or scope in pending.get(op_id, ())


def merge_heads(
    mine: Mapping[str, V], a: Side, theirs: Mapping[str, V], b: Side, scope: Scope
) -> dict[str, V]:
    """Merge two head maps (op_id -> head) of one field of one entity."""
    out = {k: v for k, v in mine.items() if k in theirs or not _superseded(k, b, scope)}
    for k, v in theirs.items():
        if k not in mine and not _superseded(k, a, scope):
            out[k] = v
    return out


def merge_orsets(mine: ORSet | None, a: Side, theirs: ORSet | None, b: Side, field: str) -> ORSet:
    """Keep each live add that neither side has cancelled."""
    live = merge_heads(
        {} if mine is None else mine.live,
        a,
        {} if theirs is None else theirs.live,
        b,
        ("remove", field),
    )
    return ORSet(live)


def merge_counters(mine: Counter | None, theirs: Counter) -> Counter:
    """Count every inc once: the union of the per-op deltas."""
    if mine is None:
        return counter_of(theirs.deltas.copy())
    merged = Counter(mine.deltas.copy(), mine.total)
    for op_id, delta in theirs.deltas.items():
        if op_id not in merged.deltas:
            merged.deltas[op_id] = delta
            merged.total += delta
    return merged


def merge_pending(
    mine: Mapping[str, set[Scope]], theirs: Mapping[str, set[Scope]], seen: Mapping[str, None]
) -> dict[str, set[Scope]]:
    """Union the pending op_ids of both sides, dropping those now held."""
    out = {k: set(v) for k, v in mine.items() if k not in seen}
    for k, v in theirs.items():
        if k not in seen:
            out.setdefault(k, set()).update(v)
    return out


def heads_of(register: Register | None) -> dict[str, Op]:
    """A register's heads as a dict op_id -> head (a new dict when it holds one head)."""
    if register is None:
        return {}
    if isinstance(register, dict):
        return register
    return {register.op_id: register}


def packed(heads: dict[str, Op]) -> Register:
    """How a register holds `heads`: the head itself when there is one."""
    if len(heads) == 1:
        (head,) = heads.values()
        return head
    return heads
