"""Entity state: the merged result of an entity's ops, by op-based apply or state-based merge.

Both ways in give the same state. The state keeps, per field, only what the merge rules need:
heads of lww/mv fields, per-op deltas of counters, live adds of sets, the lifecycle heads,
the op_ids it holds (for idempotency) and `pending`: op_ids named by a `pred` before the op
itself arrived, so that a late superseded op never becomes a head whatever the delivery order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crdt import codec
from crdt.fields import (
    Counter,
    ORSet,
    Register,
    Scope,
    Side,
    heads_of,
    merge_counters,
    merge_heads,
    merge_orsets,
    merge_pending,
    packed,
)
from crdt.ops import FIELD_KINDS, LIFECYCLE_KINDS, Op
from crdt.order import order_key
from crdt.schema import EntityTypeSpec
from crdt.views import (
    ApplyResult,
    EntityView,
    FieldView,
    Head,
    register_view,
    set_view,
)

__all__ = [
    "ApplyResult",
    "EntityState",
    "EntityView",
    "FieldView",
    "Head",
    "decode_state",
    "encode_state",
    "fold",
]

_DUPLICATE = ApplyResult(applied=False, conflicted=False)
_APPLIED = ApplyResult(applied=True, conflicted=False)
_CONFLICTED = ApplyResult(applied=True, conflicted=True)
_LIFE: Scope = ("life", None)


class EntityState:
    """The merged state of one entity; `apply` and `merge` change it in place.

    Heads are kept as the `Op`s themselves, and a register with one head (nearly every
    one) holds that `Op` without a dict around it: no per-op allocation on the hot path,
    and a quarter less memory per state than a dict per register.
    """

    __slots__ = (
        "_counters",
        "_fl",
        "_fo",
        "_life",
        "_ol",
        "_pending",
        "_regs",
        "_seen",
        "_sets",
        "entity_id",
        "entity_type",
    )

    def __init__(self, entity_type: str, entity_id: str) -> None:
        self.entity_type = entity_type
        self.entity_id = entity_id
        self._seen: dict[str, None] = {}
        # None while no op_id is pending (nearly always): `apply` then reads no dict
        self._pending: dict[str, set[Scope]] | None = None
        # A register's heads: the head itself while it has one (nearly always), else a
        # dict op_id -> head. `heads_of` reads either form as a dict.
        self._regs: dict[str, Register] = {}
        self._counters: dict[str, Counter] = {}
        self._sets: dict[str, ORSet] = {}
        self._life: dict[str, Op] | None = None
        # Order key of the greatest inc, add or remove. The greatest `set` of a field needs
        # no tracking: a pred names lower lamports only, so it is always one of the heads.
        self._fl = 0
        self._fo = ""
        self._ol = 0  # greatest lamport of every other op (lifecycle, server, unknown)

    @classmethod
    def new(cls, entity_type: str, entity_id: str) -> EntityState:
        """An entity that has seen no op."""
        return cls(entity_type, entity_id)

    def apply(self, op: Op) -> ApplyResult:
        """Apply one op: idempotent, in place, costing O(heads of its field + its pred).

        The hot path of every consumer: containers in locals, the common kinds inline."""
        op_id = op.op_id
        seen = self._seen
        if op_id in seen:
            return _DUPLICATE
        seen[op_id] = None
        pending = self._pending
        if pending is None:
            scopes = None
        else:
            scopes = pending.pop(op_id, None)
            if not pending:
                self._pending = None
        field = op.field
        if field is None:
            return self._apply_other(op, scopes)
        kind = op.kind
        if kind == "set":
            regs = self._regs
            cur = regs.get(field)
            pred = op.pred
            if scopes is None:
                # the common cases: a new field, or a set naming the one head it replaces
                if cur is None:
                    if not pred:
                        regs[field] = op
                        return _APPLIED
                elif cur.__class__ is Op and len(pred) == 1 and pred[0] == cur.op_id:
                    regs[field] = op
                    return _APPLIED
            return self._apply_set(op, field, cur, scopes)
        if kind not in FIELD_KINDS:
            return self._apply_other(op, scopes)
        lamport = op.lamport
        # the greatest order key of the incs, adds and removes (see __init__)
        if lamport >= self._fl and (lamport > self._fl or op_id > self._fo):
            self._fl = lamport
            self._fo = op_id
        if kind == "inc":
            counter = self._counters.get(field)
            if counter is None:
                counter = self._counters[field] = Counter()
            delta = op.value
            counter.deltas[op_id] = delta
            counter.total += delta
            return _APPLIED
        orset = self._sets.get(field)
        if orset is None:
            orset = self._sets[field] = ORSet()
        if kind == "add":
            # live unless a remove named it already
            if scopes is None or ("remove", field) not in scopes:
                orset.live[op_id] = op.value
            return _APPLIED
        # a remove cancels the adds its pred names
        for p in op.pred:
            if not orset.cancel(p) and p not in seen:
                self._name_pending(p, ("remove", field))
        return _APPLIED

    def _apply_set(
        self, op: Op, field: str, cur: Register | None, scopes: set[Scope] | None
    ) -> ApplyResult:
        """A set in the general case: several heads, a pred naming others, or pending."""
        heads = heads_of(cur)
        seen = self._seen
        for p in op.pred:
            if heads.pop(p, None) is None and p not in seen:
                self._name_pending(p, ("set", field))
        if scopes is None or ("set", field) not in scopes:
            heads[op.op_id] = op
        self._regs[field] = packed(heads)
        return _CONFLICTED if len(heads) > 1 else _APPLIED

    def apply_all(self, ops: Iterable[Op]) -> ApplyResult:
        """Apply this entity's ops in order, one by one; returns the last op's result."""
        apply = self.apply
        result = _DUPLICATE
        for op in ops:
            result = apply(op)
        return result

    def _apply_other(self, op: Op, scopes: set[Scope] | None) -> ApplyResult:
        """Lifecycle ops set `_deleted`; server, unknown and malformed ops are only held."""
        if op.lamport > self._ol:
            self._ol = op.lamport
        if op.kind not in LIFECYCLE_KINDS:
            return _APPLIED
        life = self._life
        if life is None:
            life = self._life = {}
        for p in op.pred:
            if life.pop(p, None) is None and p not in self._seen:
                self._name_pending(p, _LIFE)
        if scopes is None or _LIFE not in scopes:
            life[op.op_id] = op
        return _APPLIED

    def _name_pending(self, op_id: str, scope: Scope) -> None:
        """Remember that `op_id`, not yet held, is superseded within `scope`."""
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
        scopes = pending.get(op_id)
        if scopes is None:
            pending[op_id] = {scope}
        else:
            scopes.add(scope)

    def merge(self, other: EntityState) -> None:
        """Merge another state of the same entity in place: as if the union of ops was applied."""
        if (other.entity_type, other.entity_id) != (self.entity_type, self.entity_id):
            raise ValueError("cannot merge states of different entities")
        a: Side = (self._seen, self._pending or {})
        b: Side = (other._seen, other._pending or {})
        for name in self._regs.keys() | other._regs.keys():
            merged = merge_heads(
                heads_of(self._regs.get(name)), a, heads_of(other._regs.get(name)), b, ("set", name)
            )
            self._regs[name] = packed(merged)
        for name in self._sets.keys() | other._sets.keys():
            self._sets[name] = merge_orsets(self._sets.get(name), a, other._sets.get(name), b, name)
        for name, theirs in other._counters.items():
            self._counters[name] = merge_counters(self._counters.get(name), theirs)
        if other._life is not None:
            self._life = merge_heads(self._life or {}, a, other._life, b, _LIFE)
        self._pending = merge_pending(a[1], b[1], self._seen | other._seen) or None
        self._seen = self._seen | other._seen
        if (other._fl, other._fo) > (self._fl, self._fo):
            self._fl, self._fo = other._fl, other._fo
        self._ol = max(self._ol, other._ol)

    def copy(self) -> EntityState:
        """An independent copy (ops and values are shared: they are never mutated)."""
        new = EntityState(self.entity_type, self.entity_id)
        new.merge(self)
        return new

    def holds(self, op_id: str) -> bool:
        """True once the op `op_id` was applied or merged in."""
        return op_id in self._seen

    @property
    def has_client_events(self) -> bool:
        """False while only server-kind (or unknown) events were applied: reads answer 404."""
        return bool(self._regs or self._counters or self._sets) or self._life is not None

    def _field_key(self) -> tuple[int, str]:
        """The greatest order key of the field ops (sets through their heads)."""
        best = (self._fl, self._fo)
        for heads in self._regs.values():
            for h in heads_of(heads).values():
                if (h.lamport, h.op_id) > best:
                    best = (h.lamport, h.op_id)
        return best

    @property
    def last_lamport(self) -> int:
        """The highest lamport applied (0 for none)."""
        return max(self._field_key()[0], self._ol)

    def field_heads(self, field: str) -> tuple[str, ...]:
        """The op_ids of an lww or mv field's heads: the `pred` of a new `set` of it."""
        return _ids_by_order(heads_of(self._regs.get(field)).values())

    def live_adds(self, field: str, element: Any) -> tuple[str, ...]:
        """The op_ids of the live adds of `element`: the `pred` of a `remove` of it."""
        orset = self._sets.get(field)
        live = () if orset is None else orset.live.items()
        return tuple(sorted(k for k, v in live if type(v) is type(element) and v == element))

    def lifecycle_heads(self) -> tuple[str, ...]:
        """The op_ids of the lifecycle heads: the `pred` of a new `delete` or `restore`."""
        return _ids_by_order((self._life or {}).values())

    def winning_set(self, field: str) -> Op | None:
        """The `set` a read of `field` as an lww field reports (its head with the greatest
        order key); None when the field has no head. `view` gives the same, but views every
        field to give it."""
        register = self._regs.get(field)
        if isinstance(register, dict):
            return max(register.values(), key=order_key) if register else None
        return register

    def deleted_by(self) -> Op | None:
        """The winning lifecycle op when it is a delete (the entity is deleted), else None."""
        if not self._life:
            return None
        winner = max(self._life.values(), key=order_key)
        return winner if winner.kind == "delete" else None

    def view(self, spec: EntityTypeSpec | None = None) -> EntityView:
        """What a read reports; `spec` tells lww from mv (without it, lww)."""
        fields: dict[str, FieldView] = {}
        for name in sorted(self._regs.keys() | self._counters.keys() | self._sets.keys()):
            field_spec = None if spec is None else spec.fields.get(name)
            fv = self._field_view(name, None if field_spec is None else field_spec.type)
            if fv is not None:
                fields[name] = fv
        winner = self.deleted_by()
        return EntityView(
            entity_type=self.entity_type,
            entity_id=self.entity_id,
            deleted=winner is not None,
            edited_while_deleted=winner is not None and self._field_key() > order_key(winner),
            fields=fields,
        )

    def _field_view(self, name: str, ftype: str | None) -> FieldView | None:
        """View one field by its declared type; undeclared fields by what was written."""
        if ftype in (None, "lww", "mv") and name in self._regs:
            return register_view(heads_of(self._regs[name]), ftype == "mv")
        if ftype in (None, "counter") and name in self._counters:
            return FieldView(value=self._counters[name].total)
        if ftype in (None, "set") and name in self._sets:
            return set_view(dict.fromkeys(self._sets[name].live.values()))
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntityState):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def _key(self) -> tuple[Any, ...]:
        """Everything that makes up the semantic state, comparable with `==`."""
        return (
            self.entity_type,
            self.entity_id,
            self._seen,
            self._pending or {},
            {
                k: {i: codec.head_wire(h) for i, h in heads_of(v).items()}
                for k, v in self._regs.items()
            },
            {k: v.deltas for k, v in self._counters.items()},
            {k: v.live for k, v in self._sets.items()},
            None if self._life is None else {i: codec.life_wire(h) for i, h in self._life.items()},
            (self._fl, self._fo, self._ol),
        )

    def __repr__(self) -> str:
        return f"EntityState({self.entity_type!r}, {self.entity_id!r}, ops={len(self._seen)})"


def _ids_by_order(heads: Iterable[Op]) -> tuple[str, ...]:
    """Op_ids of heads, greatest order key first."""
    return tuple(h.op_id for h in sorted(heads, key=order_key, reverse=True))


def encode_state(state: EntityState, *, settled: bool = False) -> bytes:
    """Encode a state compactly (msgpack, arrays not maps), tagged with its format version.

    ``settled`` is for a consumer that applies each event of a log once, in log order,
    where every `pred` names an op applied before (the read model): its encoding keeps
    only what such later ops need (heads, live adds, counter totals, lifecycle heads,
    order keys), so its size no longer grows with the entity's history. Decoded, it
    applies later events of that log exactly as the full state would and reads the
    same; it cannot tell an op it applied long ago from a new one, so it must not
    merge, nor apply ops out of order or twice.
    """
    return codec.encode(codec.export_state(state, settled))


def decode_state(data: bytes) -> EntityState:
    """Decode `encode_state`'s bytes; ValueError on an unknown version or garbage."""
    return codec.import_state(codec.decode(data), EntityState)


def fold(ops: Iterable[Op]) -> dict[tuple[str, str], EntityState]:
    """Apply ops in the order given, grouped by (entity_type, entity_id).

    Each entity's ops keep their relative order; entities are independent, so applying
    each entity's run with `apply_all` gives the same states as applying op by op.
    """
    by_type: dict[str, dict[str, list[Op]]] = {}
    for op in ops:
        entities = by_type.get(op.entity_type)
        if entities is None:
            entities = by_type[op.entity_type] = {}
        run = entities.get(op.entity_id)
        if run is None:
            entities[op.entity_id] = [op]
        else:
            run.append(op)
    states: dict[tuple[str, str], EntityState] = {}
    for entity_type, entities in by_type.items():
        for entity_id, run in entities.items():
            state = states[(entity_type, entity_id)] = EntityState(entity_type, entity_id)
            state.apply_all(run)
    return states
