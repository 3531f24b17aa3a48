"""Shared checks for the property tests: fold, merge, and compare states and their reads."""

from __future__ import annotations

from collections.abc import Iterable

from crdt import EntityState, Op, Schema, encode_state, fold

States = dict[tuple[str, str], EntityState]


def merged(states: Iterable[States]) -> States:
    """Merge replicas entity by entity into fresh states."""
    out: States = {}
    for replica in states:
        for key, state in replica.items():
            if key in out:
                out[key].merge(state)
            else:
                out[key] = state.copy()
    return out


def apply_each(ops: Iterable[Op]) -> States:
    """Apply op by op with `EntityState.apply`, in the order given (fold batches per entity)."""
    out: States = {}
    for op in ops:
        key = (op.entity_type, op.entity_id)
        out.setdefault(key, EntityState.new(*key)).apply(op)
    return out


def singletons(ops: Iterable[Op]) -> list[States]:
    """One replica per op, each having applied only that op."""
    return [fold([op]) for op in ops]


def assert_same(actual: States, expected: States, schema: Schema) -> None:
    """Same semantic state, same reads (values, heads, conflicted) and same encoding."""
    assert actual.keys() == expected.keys()
    for key, state in expected.items():
        other = actual[key]
        assert other == state, key
        spec = schema.entity_types.get(key[0])
        assert other.view(spec) == state.view(spec), key
        assert encode_state(other) == encode_state(state), key
        assert other.has_client_events == state.has_client_events
        assert other.last_lamport == state.last_lamport
