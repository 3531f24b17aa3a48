"""Two ways in, one answer: op-based apply and state-based merge; merge is a semilattice join."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from crdt import EntityState, decode_state, encode_state, fold
from tests.property.adversarial import valid_histories
from tests.property.helpers import States, assert_same, merged, singletons
from tests.property.model import entity_read, view_as_read
from tests.property.strategies import History


def _subset(data: st.DataObject, history: History, label: str) -> States:
    """Fold a random subset of the history's ops, in a random order."""
    chosen = data.draw(
        st.lists(st.sampled_from(history.ops), unique_by=lambda o: o.op_id)
        if history.ops
        else st.just([]),
        label=label,
    )
    return fold(chosen)


@given(valid_histories(), st.data())
def test_apply_and_merge_agree(history: History, data: st.DataObject) -> None:
    """Merging one-op states in any order equals applying every op."""
    parts = singletons(history.ops)
    order = data.draw(st.permutations(range(len(parts))))
    assert_same(merged(parts[i] for i in order), fold(history.ops), history.schema)


@given(valid_histories(), st.data())
def test_merge_is_commutative_associative_idempotent(history: History, data: st.DataObject) -> None:
    a, b, c = (_subset(data, history, name) for name in "abc")
    schema = history.schema
    assert_same(merged([a, b]), merged([b, a]), schema)
    assert_same(merged([merged([a, b]), c]), merged([a, merged([b, c])]), schema)
    assert_same(merged([a, a]), a, schema)
    for key, state in a.items():
        alone = state.copy()
        alone.merge(alone)
        assert alone == state, key


@given(valid_histories(), st.data())
def test_merge_then_apply_equals_apply(history: History, data: st.DataObject) -> None:
    """A merged replica keeps applying ops as if it had applied everything itself."""
    ops = history.ops
    cut = data.draw(st.integers(0, len(ops)))
    left = merged([fold(ops[:cut]), fold(ops[cut // 2 : cut])])
    for op in ops[cut:]:
        key = (op.entity_type, op.entity_id)
        left.setdefault(key, EntityState.new(*key)).apply(op)
    assert_same(left, fold(ops), history.schema)


@given(valid_histories())
def test_encoding_round_trips(history: History) -> None:
    for key, state in fold(history.ops).items():
        data = encode_state(state)
        back = decode_state(data)
        assert back == state, key
        assert encode_state(back) == data
        spec = history.schema.entity_types.get(key[0])
        assert back.view(spec) == state.view(spec)


@given(valid_histories(), st.data())
def test_settled_states_apply_the_rest_of_the_log_alike(
    history: History, data: st.DataObject
) -> None:
    """The read model's way: apply in log order, store settled, decode, go on; at any
    cuts, the result is the full fold's, settled (same reads, same encoding)."""
    ops = history.ops
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ops)), max_size=4), label="cuts"))
    states: States = {}
    for start, end in itertools.pairwise([0, *cuts, len(ops)]):
        states = {k: decode_state(encode_state(v, settled=True)) for k, v in states.items()}
        for op in ops[start:end]:
            key = (op.entity_type, op.entity_id)
            states.setdefault(key, EntityState.new(*key)).apply(op)
    full = fold(ops)
    assert states.keys() == full.keys()
    for key, state in full.items():
        spec = history.schema.entity_types.get(key[0])
        assert states[key].view(spec) == state.view(spec), key
        assert encode_state(states[key], settled=True) == encode_state(state, settled=True)
        assert states[key].has_client_events == state.has_client_events
        assert states[key].last_lamport == state.last_lamport


@given(valid_histories())
def test_reads_match_the_reference_model(history: History) -> None:
    """Each read equals docs/protocol.md section 3 evaluated literally on the entity's ops."""
    for key, state in fold(history.ops).items():
        spec = history.schema.entity_types[key[0]]
        ops = [op for op in history.ops if (op.entity_type, op.entity_id) == key]
        assert view_as_read(state.view(spec)) == entity_read(ops, spec), key


@given(valid_histories())
def test_apply_reports_conflicts_as_reads_show_them(history: History) -> None:
    states: States = {}
    for op in history.ops:
        key = (op.entity_type, op.entity_id)
        state = states.setdefault(key, EntityState.new(*key))
        result = state.apply(op)
        assert result.applied
        if op.kind == "set":
            assert op.field is not None
            assert result.conflicted == (len(state.field_heads(op.field)) > 1)
            view = state.view(history.schema.entity_types[key[0]]).fields.get(op.field)
            assert view is not None
            assert view.conflicted == result.conflicted
        else:
            assert not result.conflicted


@given(valid_histories())
def test_the_winning_set_is_what_a_read_reports(history: History) -> None:
    """`winning_set` answers for one field what `view` (lww, no spec) reports for it."""
    for state in fold(history.ops).values():
        fields = state.view().fields
        names = {op.field for op in history.ops if op.field is not None} | {"never_written"}
        for name in names:
            head = state.winning_set(name)
            view = fields.get(name)
            if view is None or not view.heads:
                assert head is None, name
            else:
                assert head is not None, name
                assert (head.op_id, head.value) == (view.heads[0].op_id, view.value), name
