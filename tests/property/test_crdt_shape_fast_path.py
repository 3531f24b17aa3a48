"""``check_shape``'s fast path agrees with the full rule walk on every op, valid or not."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from crdt import MAX_SAFE_INT, Op
from crdt.order import MAX_PRED
from crdt.validate import _shape_problem, check_shape, plainly_valid

A = "0b6f3c2e-8d4a-4f1e-9c3b-2a1d5e6f7a8b"
B = "1c7a4d3f-9e5b-4a2f-8d4c-3b2e6f7a8b9c"
C = "2d8b5e4a-af6c-4b3a-9e5d-4c3f7a8b9cad"

ids = st.sampled_from([A, B, A.upper(), A[:-1], "", "not-a-uuid", 5, None])
entity_ids = st.sampled_from(["t-1", "Az09_:.-", "a" * 128, "a" * 129, "", "sp ace", 7])
kinds = st.sampled_from(
    ["set", "inc", "add", "remove", "delete", "restore", "member_added", "bogus", 1]
)
fields = st.sampled_from([None, "title", "", 3, "ti\x00tle", "tïtle", "\ud800"])
values = st.sampled_from(
    [None, "x", True, False, 0, 1, -1, MAX_SAFE_INT, -MAX_SAFE_INT, MAX_SAFE_INT + 1,
     -MAX_SAFE_INT - 1, 1.5, 2.0, float("nan"), float("inf"), [1], [2**60], {"a": 1},
     {"a": float("inf")}, (), "\x00", "a\ud800", "für", "ü\x00", ["ok", "\x00"],
     {"\udfff": 1}]
)  # fmt: skip
preds = st.one_of(
    st.lists(st.sampled_from([A, B, C, C.upper(), "x", 9]), max_size=4).map(tuple),
    st.lists(st.sampled_from([B, C]), max_size=2),  # a list, not a tuple
    st.just(tuple(f"{i:08x}-0000-4000-8000-000000000000" for i in range(MAX_PRED + 1))),
    st.just("not a sequence"),
)
lamports = st.sampled_from([0, 1, 2, 2**53 - 1, 2**53, -1, True, 1.0, "1"])


@st.composite
def ops(draw: st.DrawFn) -> Op:
    fields_: dict[str, Any] = {
        "op_id": draw(ids),
        "entity_type": draw(st.sampled_from(["task", "", 4, "ta\x00sk", "tâsk", "\udc00"])),
        "entity_id": draw(entity_ids),
        "kind": draw(kinds),
        "field": draw(fields),
        "value": draw(values),
        "pred": draw(preds),
        "lamport": draw(lamports),
    }
    return Op(**fields_)


@given(ops())
def test_fast_path_accepts_only_what_the_rules_accept(op: Op) -> None:
    if plainly_valid(op):
        assert _shape_problem(op) is None
    expected = _shape_problem(op)
    got = check_shape(op)
    assert (got is None) == (expected is None)
    if got is not None:
        assert got.code == "invalid_op"
        assert got.message == expected


def test_fast_path_takes_the_plain_ops() -> None:
    plain = Op(op_id=C, entity_type="task", entity_id="t-1", kind="set", field="title",
               value="x", pred=(A, B), lamport=3)  # fmt: skip
    assert plainly_valid(plain)
    lifecycle = Op(op_id=C, entity_type="task", entity_id="t-1", kind="delete", lamport=3)
    assert plainly_valid(lifecycle)
