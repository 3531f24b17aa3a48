"""Convergence: any delivery order, duplication or partition gives the same state."""

from __future__ import annotations

from random import Random

from hypothesis import given
from hypothesis import strategies as st

from crdt import fold
from tests.property.adversarial import valid_histories
from tests.property.helpers import States, apply_each, assert_same, merged
from tests.property.strategies import History


@given(valid_histories(), st.randoms(use_true_random=False))
def test_any_delivery_order_gives_the_same_state(history: History, rnd: Random) -> None:
    ops = list(history.ops)
    rnd.shuffle(ops)
    expected = fold(history.ops)
    assert_same(fold(ops), expected, history.schema)
    assert_same(apply_each(ops), expected, history.schema)


@given(valid_histories(), st.data())
def test_duplicated_delivery_changes_nothing(history: History, data: st.DataObject) -> None:
    ops = history.ops
    extra = data.draw(st.lists(st.integers(0, max(len(ops) - 1, 0)), max_size=len(ops) * 2))
    expected = fold(ops)
    states = fold(ops)
    for i in extra:
        op = ops[i]
        result = states[(op.entity_type, op.entity_id)].apply(op)
        assert result.applied is False
        assert result.conflicted is False
    assert_same(states, expected, history.schema)
    again = fold([*ops, *(ops[i] for i in extra), *ops])
    assert_same(again, expected, history.schema)


@given(valid_histories(), st.data())
def test_partitioned_replicas_converge(history: History, data: st.DataObject) -> None:
    """Replicas see subsets, merge within random partitions, then all together."""
    ops = history.ops
    n = data.draw(st.integers(2, 4), label="replicas")
    seen_by = data.draw(
        st.lists(st.sets(st.integers(0, n - 1), min_size=1), min_size=len(ops), max_size=len(ops))
    )
    held: list[set[int]] = [set() for _ in range(n)]
    for i, receivers in enumerate(seen_by):
        for r in receivers:
            held[r].add(i)
    replicas: list[States] = [fold(ops[i] for i in sorted(held[r])) for r in range(n)]
    rounds = data.draw(
        st.lists(st.lists(st.integers(0, n - 1), min_size=n, max_size=n), max_size=3)
    )
    for groups in rounds:
        for g in set(groups):
            members = [r for r in range(n) if groups[r] == g]
            union: set[int] = set().union(*(held[r] for r in members))
            together = merged(replicas[r] for r in members)
            for r in members:
                held[r] = set(union)
                replicas[r] = merged([together])
                assert_same(replicas[r], fold(ops[i] for i in sorted(union)), history.schema)
    order = data.draw(st.permutations(range(n)))
    everything = merged(replicas[r] for r in order)
    assert_same(everything, fold(ops), history.schema)
