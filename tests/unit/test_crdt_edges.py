"""Edges of crdt/ that the mutation run (``make mutation``) found untested: exact limits,
the messages of violations, the fast path's own answers, views under a declared type,
and what a decoded state's head ops hold."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from crdt import (
    DEFAULT_SCHEMA,
    MAX_SAFE_INT,
    EntityState,
    Op,
    PredTarget,
    SchemaError,
    canonical_value,
    check_preds,
    check_shape,
    compatibility_problems,
    decode_state,
    encode_state,
    parse_schema,
    plainly_valid,
    validate,
)
from crdt.fields import heads_of
from crdt.order import MAX_LAMPORT, MAX_PRED
from crdt.validate import is_rfc3339_utc
from crdt.views import element_sort_key

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"
DEVICE = "00000000-0000-4000-8000-0000000000dd"


def op(**kw: Any) -> Op:
    base: dict[str, Any] = {
        "op_id": C,
        "entity_type": "task",
        "entity_id": "t-1",
        "kind": "set",
        "field": "title",
        "value": "x",
        "lamport": 10,
    }
    base.update(kw)
    return Op(**base)


def ids(n: int) -> tuple[str, ...]:
    return tuple(f"00000000-0000-4000-8000-{i:012d}" for i in range(1, n + 1))


def message(o: Op) -> str:
    violation = validate(o, DEFAULT_SCHEMA, {}, 100)
    assert violation is not None, o
    return violation.message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"op_id": A.upper()}, "op_id must be a lowercase canonical UUID"),
        ({"entity_type": 5}, "entity_type must be a string"),
        ({"entity_id": "a b"}, "entity_id must be 1..128 characters of [A-Za-z0-9_:.-]"),
        ({"pred": "nope"}, "pred must be a list of op_ids"),
        ({"pred": (A, A)}, "pred entries must be distinct"),
        ({"pred": (C,)}, "pred names the op itself"),
        ({"lamport": 0}, "lamport must be an integer in 1..2^53-1"),
        ({"value": [float("nan")]}, "numbers must be finite"),
        ({"value": [2**53]}, "integers must lie within ±(2^53-1)"),
        (
            {"field": "due_at", "value": "tomorrow"},
            "task.due_at: expected an RFC 3339 UTC timestamp ending in Z",
        ),
    ],
)
def test_each_violation_names_its_rule(changes: dict[str, Any], expected: str) -> None:
    assert message(op(**changes)) == expected


def test_pred_problems_name_the_entry_and_the_rule() -> None:
    other = PredTarget(
        op_id=A,
        entity_type="task",
        entity_id="t-2",
        kind="set",
        field="title",
        value="o",
        lamport=1,
    )
    life = msgspec.structs.replace(other, entity_id="t-1")
    cases = [
        (op(pred=(A,)), {}, f"pred entry {A} names no stored op"),
        (op(pred=(A,)), {A: other}, f"pred entry {A} names an op of another entity"),
        (
            op(kind="delete", field=None, value=None, pred=(A,)),
            {A: life},
            f"pred entry {A} names no delete or restore",
        ),
    ]
    for o, targets, expected in cases:
        violation = check_preds(o, targets)
        assert violation is not None
        assert violation.message == expected


def test_the_exact_limits_are_inside() -> None:
    """±(2^53-1), 64 pred entries and lamport 1 and 2^53-1 are valid, by both ways."""
    edge = [
        op(value=[MAX_SAFE_INT, -MAX_SAFE_INT]),  # the long way (a list)
        op(field="pomodoros", kind="inc", value=MAX_SAFE_INT),
        op(field="pomodoros", kind="inc", value=-MAX_SAFE_INT),
        op(pred=ids(MAX_PRED)),
        op(pred=ids(1)),
        op(lamport=1),
        op(lamport=MAX_LAMPORT),
        op(value=True),
        op(value="für Oma"),
    ]
    for o in edge:
        assert check_shape(o) is None, o
    for o in edge[1:]:
        assert plainly_valid(o), o  # the fast path says so itself
    assert not plainly_valid(op(pred=ids(MAX_PRED + 1)))
    assert not plainly_valid(op(pred=(5,)))
    assert check_shape(op(pred=ids(MAX_PRED + 1))) is not None


def test_an_integral_float_at_the_limit_is_canonicalised() -> None:
    assert type(canonical_value(float(MAX_SAFE_INT))) is int
    assert type(canonical_value(-float(MAX_SAFE_INT))) is int


def test_a_timestamp_names_a_real_minute() -> None:
    assert is_rfc3339_utc("2026-01-01T10:59:00Z")
    assert not is_rfc3339_utc("2026-01-01T10:60:00Z")


def test_set_elements_sort_integers_then_strings_then_the_rest_by_repr() -> None:
    elements: list[Any] = ["b", 2.5, 3, "a", 1.5, -1]
    assert sorted(elements, key=element_sort_key) == [-1, 3, "a", "b", 1.5, 2.5]


def test_a_duplicate_in_a_batch_skips_only_itself() -> None:
    state = EntityState.new("task", "t-1")
    first = op(op_id=A, value="one", lamport=1)
    state.apply_all([first, first, op(op_id=B, value="two", lamport=2)])
    assert state.holds(B)


def test_a_view_shows_a_field_only_as_its_declared_type() -> None:
    state = EntityState.new("task", "t-1")
    state.apply(op(op_id=A, field="tags", kind="set", value="x", lamport=1))
    state.apply(op(op_id=B, field="title", kind="add", value="y", lamport=2))
    spec = DEFAULT_SCHEMA.entity_types["task"]
    view = state.view(spec)
    assert "tags" not in view.fields, "a register where a set is declared"
    assert "title" not in view.fields, "a set where a register is declared"
    assert (view.entity_type, view.entity_id) == ("task", "t-1")


def test_states_of_different_entities_do_not_merge() -> None:
    with pytest.raises(ValueError, match=r"^cannot merge states of different entities$"):
        EntityState.new("task", "t-1").merge(EntityState.new("task", "t-2"))


def test_a_decoded_state_holds_the_same_head_ops() -> None:
    """Heads are rebuilt from the wire form with their entity, kind and field (the pred
    is spent and not kept)."""
    state = EntityState.new("task", "t-1")
    title = op(op_id=A, value="hello", lamport=1, device_id=DEVICE)
    delete = op(op_id=B, kind="delete", field=None, value=None, lamport=2, device_id=DEVICE)
    restore = op(
        op_id=C, kind="restore", field=None, value=None, lamport=3, device_id=DEVICE, pred=(B,)
    )
    state.apply_all([title, delete])
    back = decode_state(encode_state(state))
    assert heads_of(back._regs["title"])[A] == title
    assert back.deleted_by() == delete
    state.apply(restore)
    back = decode_state(encode_state(state))
    assert back._life == {C: msgspec.structs.replace(restore, pred=())}


def test_a_decoded_register_with_several_heads_holds_the_same_head_ops() -> None:
    """A register with several heads is decoded by another path than one with a single
    head (crdt/codec.py): its heads, too, come back with their kind and field."""
    first = op(op_id=A, field="notes", value="a", lamport=1, device_id=DEVICE)
    second = op(op_id=B, field="notes", value="b", lamport=1, device_id=DEVICE)
    state = EntityState.new("task", "t-1")
    state.apply_all([first, second])
    back = decode_state(encode_state(state))
    assert heads_of(back._regs["notes"]) == {A: first, B: second}
    assert back.winning_set("notes") == second


def _schema(version: int = 1, **fields: dict[str, Any]) -> str:
    return msgspec.json.encode(
        {"version": version, "entity_types": {"note": {"fields": fields}}}
    ).decode()


def test_schema_limits_at_their_edges_are_accepted() -> None:
    parse_schema(_schema(a={"type": "lww", "value": "string", "max_length": 1}), "json")
    parse_schema(_schema(a={"type": "lww", "value": "integer", "max_abs": 0}), "json")
    parse_schema(_schema(a={"type": "lww", "value": "number", "max_abs": MAX_SAFE_INT}), "json")
    with pytest.raises(SchemaError, match=r"max_abs must lie in 0\.\.2\^53-1"):
        parse_schema(_schema(a={"type": "lww", "value": "number", "max_abs": 2**53}), "json")


def test_a_schema_document_is_read_strictly_and_names_every_problem() -> None:
    with pytest.raises(SchemaError):
        parse_schema(_schema(a={"type": "lww", "value": "string", "max_length": "5"}), "json")
    bad = _schema(0, a={"type": "lww", "value": "string", "max_length": 0})
    with pytest.raises(SchemaError) as caught:
        parse_schema(bad, "json")
    assert str(caught.value) == (
        "schema: version must be at least 1; note.a: max_length must be at least 1"
    )


def test_compatibility_reports_every_dropped_thing() -> None:
    old = parse_schema(
        msgspec.json.encode(
            {
                "version": 1,
                "entity_types": {
                    "gone": {"fields": {"a": {"type": "lww", "value": "string"}}},
                    "kept": {"fields": {"b": {"type": "lww", "value": "string"}}},
                },
            }
        ),
        "json",
    )
    new = parse_schema(
        msgspec.json.encode({"version": 2, "entity_types": {"kept": {"fields": {}}}}), "json"
    )
    assert compatibility_problems(old, new) == [
        "entity type 'gone' was dropped",
        "field 'kept.b' was dropped",
    ]


def test_a_full_pred_goes_the_long_way_too() -> None:
    """64 entries with a value only the long way checks (a float)."""
    assert check_shape(op(field="pomodoros", value=1.5, pred=ids(MAX_PRED))) is None


def test_an_element_added_twice_stays_until_both_adds_are_removed_after_decode_or_merge() -> None:
    # each add of the element stays live on its own, whether applied, decoded or merged
    adds = [op(op_id=A, kind="add", field="tags", value="x", lamport=1)]
    adds.append(op(op_id=B, kind="add", field="tags", value="x", lamport=2))
    held = EntityState.new("task", "t-1")
    held.apply_all(adds)
    merged = EntityState.new("task", "t-1")
    merged.merge(held)
    for state in (decode_state(encode_state(held)), merged):
        state.apply(op(op_id=ids(3)[2], kind="remove", field="tags", value="x", pred=(A,)))
        assert state.view().fields["tags"].value == ["x"]
        state.apply(op(kind="remove", field="tags", value="x", pred=(B,), lamport=11))
        assert state.view().fields["tags"].value == []


def test_a_lifecycle_kind_with_a_field_already_superseded_never_becomes_a_head() -> None:
    # malformed (validation refuses a field on a delete), but applied by the same rules
    late = op(op_id=A, kind="delete", field="title", value=None, lamport=1)
    restore = op(op_id=B, kind="restore", field=None, value=None, pred=(A,), lamport=2)
    state = EntityState.new("task", "t-1")
    state.apply(restore)
    state.apply(late)
    assert state.deleted_by() is None
    assert state.lifecycle_heads() == (B,)


def test_a_register_left_without_a_head_reads_as_unset() -> None:
    """Two sets naming each other (which validation refuses: a pred names lower lamports
    only) supersede each other and leave their register empty: no winning set, and a read
    shows no heads, instead of an error."""
    first = op(op_id=A, value="a", lamport=1, pred=(B,))
    second = op(op_id=B, value="b", lamport=1, pred=(A,))
    state = EntityState.new("task", "t-1")
    state.apply_all([first, second])
    assert state.winning_set("title") is None
    assert "title" not in state.view().fields
