"""The compact wire form of an entity state: msgpack arrays, tagged with a format version.

This module reads and fills `EntityState`'s internals; `crdt.state` wraps it as
`encode_state` / `decode_state`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from crdt.fields import ORSet, Scope, counter_of, heads_of, packed
from crdt.ops import Op

if TYPE_CHECKING:
    from crdt.state import EntityState

__all__ = [
    "FORMAT_VERSION",
    "SETTLED_TOTAL",
    "StateV1",
    "decode",
    "encode",
    "export_state",
    "import_state",
]

FORMAT_VERSION = 1

HeadWire = tuple[int, str, Any, str]
"""A head on the wire: (lamport, op_id, value, device_id); lifecycle heads carry
`is_delete` as their value."""


class StateV1(msgspec.Struct, frozen=True, kw_only=True, array_like=True, tag=FORMAT_VERSION):
    """Version 1: encodes as `[1, entity_type, entity_id, ...]`.

    Op_ids that appear in heads, deltas or live adds are not repeated in `others`.
    """

    entity_type: str
    entity_id: str
    others: list[str]
    pending: list[tuple[str, list[tuple[str, str | None]]]]
    regs: dict[str, list[HeadWire]]
    counters: dict[str, list[tuple[str, Any]]]
    sets: dict[str, list[tuple[str, Any]]]
    life: list[HeadWire] | None
    field_key: tuple[int, str]
    other_lamport: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StateV1)


def encode(state: StateV1) -> bytes:
    """Encode the wire form."""
    return _encoder.encode(state)


def decode(data: bytes) -> StateV1:
    """Decode the wire form; ValueError on an unknown version or garbage."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as e:
        raise ValueError(f"not an entity state of format {FORMAT_VERSION}: {e}") from e


def head_wire(h: Op) -> HeadWire:
    """A register head as it is encoded and compared."""
    return (h.lamport, h.op_id, h.value, h.device_id)


def life_wire(h: Op) -> HeadWire:
    """A lifecycle head as it is encoded and compared."""
    return (h.lamport, h.op_id, h.kind == "delete", h.device_id)


def _scope_key(scope: Scope) -> tuple[str, str]:
    return (scope[0], scope[1] or "")


#: The one "delta" of a settled counter: its total, under an op_id no op can have.
SETTLED_TOTAL = ""


def export_state(state: EntityState, settled: bool) -> StateV1:
    """The state's wire form; every list sorted, so equal states encode to equal bytes.

    ``settled`` leaves out what only merging and out-of-order delivery need, the parts
    that grow with the entity's history: the op_ids no head, delta or live add refers
    to (``others``), the pending names, and each counter's per-op deltas (its total is
    kept, as one delta under ``SETTLED_TOTAL``). See `crdt.encode_state`.
    """
    life = state._life
    if settled:
        others: list[str] = []
        pending: list[tuple[str, list[tuple[str, str | None]]]] = []
        counters = {k: [(SETTLED_TOTAL, v.total)] for k, v in sorted(state._counters.items())}
    else:
        referenced = {i for v in state._regs.values() for i in heads_of(v)}
        referenced.update(i for v in state._counters.values() for i in v.deltas)
        referenced.update(i for v in state._sets.values() for i in v.live)
        referenced.update(life or ())
        others = sorted(state._seen.keys() - referenced)
        pending = sorted((k, sorted(v, key=_scope_key)) for k, v in (state._pending or {}).items())
        counters = {k: sorted(v.deltas.items()) for k, v in sorted(state._counters.items())}
    return StateV1(
        entity_type=state.entity_type,
        entity_id=state.entity_id,
        others=others,
        pending=pending,
        regs={
            k: sorted(map(head_wire, v.values())) if isinstance(v, dict) else [head_wire(v)]
            for k, v in sorted(state._regs.items())
        },
        counters=counters,
        sets={k: sorted(v.live.items()) for k, v in sorted(state._sets.items())},
        life=None if life is None else sorted(map(life_wire, life.values())),
        field_key=(state._fl, state._fo),
        other_lamport=state._ol,
    )


def import_state(w: StateV1, cls: type[EntityState]) -> EntityState:
    """Rebuild a state from its wire form."""
    state = cls(w.entity_type, w.entity_id)
    seen = state._seen
    seen.update(dict.fromkeys(w.others))
    state._pending = {k: set(v) for k, v in w.pending} or None
    regs = state._regs
    for name, heads in w.regs.items():
        if len(heads) == 1:  # nearly every register: its head, without a dict around it
            h = heads[0]
            regs[name] = _head(state, h, "set", name, h[2])
            seen[h[1]] = None
            continue
        held = {h[1]: _head(state, h, "set", name, h[2]) for h in heads}
        regs[name] = packed(held)
        seen.update(dict.fromkeys(held))
    for name, deltas in w.counters.items():
        state._counters[name] = counter = counter_of(dict(deltas))
        seen.update(dict.fromkeys(counter.deltas))
    for name, live in w.sets.items():
        state._sets[name] = orset = ORSet(dict(live))
        seen.update(dict.fromkeys(orset.live))
    if w.life is not None:
        kinds = ("restore", "delete")
        state._life = {h[1]: _head(state, h, kinds[bool(h[2])], None, None) for h in w.life}
        seen.update(dict.fromkeys(state._life))
    state._fl, state._fo = w.field_key
    state._ol = w.other_lamport
    return state


def _head(state: EntityState, h: HeadWire, kind: str, field: str | None, value: Any) -> Op:
    """A head op rebuilt from its wire form (its pred is spent: it is not kept)."""
    return Op(
        op_id=h[1],
        entity_type=state.entity_type,
        entity_id=state.entity_id,
        kind=kind,
        field=field,
        value=value,
        lamport=h[0],
        device_id=h[3],
    )
