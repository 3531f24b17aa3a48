"""Shrunk failures found by the property tests, kept as explicit cases.

Each names the property that found it and what was wrong.
"""

from __future__ import annotations

import itertools

import pytest

from crdt import EntityTypeSpec, FieldSpec, Op, Schema, check_schema, fold

NAN_IDS = ("9e3779b9-7f4a-7c15-f39c-c0605cedda69", "fa8cfc37-711c-2dcc-fbdb-c7e79f817e8d")


def _add(op_id: str, value: object, lamport: int) -> Op:
    return Op(
        op_id=op_id,
        entity_type="list",
        entity_id="list-0",
        kind="add",
        field="f0",
        value=value,
        lamport=lamport,
    )


def test_a_nan_element_sorts_the_same_whatever_the_arrival_order() -> None:
    """test_unvalidated_ops_still_converge: a NaN set element (refused by validation, but the
    state is total) made the sorted view depend on arrival order, since NaN compares false
    with everything. Elements other than integers and strings now sort last, by repr."""
    ops = [_add(NAN_IDS[0], float("nan"), 1), _add(NAN_IDS[1], 0, 21)]
    reads = [
        repr(fold(p)[("list", "list-0")].view().fields["f0"].value)
        for p in itertools.permutations(ops)
    ]
    assert reads == ["[0, nan]", "[0, nan]"]


SETS = Schema(
    version=1,
    entity_types={"list": EntityTypeSpec(fields={"f0": FieldSpec(type="set", value="integer")})},
)


@pytest.mark.parametrize("alias", [False, True, 0.0, 1.0])
def test_elements_python_would_fold_into_0_or_1_never_reach_a_state(alias: object) -> None:
    """test_unvalidated_ops_still_converge: adds of False and 0 to one set field kept whichever
    element came first (Python's dict treats 0, 0.0 and False as one key). Such aliases are
    JSON-distinct, so validation refuses them (type_mismatch) before any state sees them."""
    violation = check_schema(_add(NAN_IDS[0], alias, 1), SETS)
    assert violation is not None
    assert violation.code == "type_mismatch"
    assert check_schema(_add(NAN_IDS[0], 0, 1), SETS) is None
