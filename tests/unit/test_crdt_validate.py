"""Operation validity: every rule of docs/protocol.md section 2 and every code, in its order."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from crdt import (
    DEFAULT_LAMPORT_HEADROOM,
    DEFAULT_SCHEMA,
    EntityTypeSpec,
    FieldSpec,
    Op,
    PredTarget,
    Schema,
    Violation,
    canonical_op,
    canonical_value,
    check_lamport_headroom,
    check_preds,
    check_schema,
    check_shape,
    plain_text,
    plainly_valid,
    validate,
)
from crdt.validate import is_canonical_uuid, is_rfc3339_utc

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"


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


def target(**kw: Any) -> PredTarget:
    base: dict[str, Any] = {
        "op_id": A,
        "entity_type": "task",
        "entity_id": "t-1",
        "kind": "set",
        "field": "title",
        "value": "old",
        "lamport": 5,
    }
    base.update(kw)
    return PredTarget(**base)


def code(v: Violation | None) -> str | None:
    return None if v is None else v.code


def test_valid_ops_of_every_kind() -> None:
    assert check_shape(op()) is None
    assert check_shape(op(kind="inc", field="pomodoros", value=-3)) is None
    assert check_shape(op(kind="add", field="tags", value="x")) is None
    assert check_shape(op(kind="remove", field="tags", value="x", pred=(A,))) is None
    assert check_shape(op(kind="delete", field=None, value=None, pred=(A, B))) is None
    assert check_shape(op(kind="restore", field=None, value=None)) is None
    assert check_shape(op(entity_id="a" * 128)) is None
    assert check_shape(op(entity_id="Az09_:.-")) is None
    assert check_shape(op(value=[1, {"k": 2.5}], lamport=2**53 - 1)) is None
    assert (
        check_shape(op(pred=tuple(f"00000000-0000-4000-8000-{i:012x}" for i in range(100, 164))))
        is None
    )


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"op_id": C.upper()}, "op_id must be a lowercase canonical UUID"),
        ({"op_id": C[:-1]}, "op_id"),
        ({"op_id": "{" + C + "}"}, "op_id"),
        ({"op_id": 7}, "op_id"),
        ({"entity_type": 3}, "entity_type must be a string"),
        ({"entity_id": ""}, "entity_id must be 1..128"),
        ({"entity_id": "a" * 129}, "entity_id"),
        ({"entity_id": "a b"}, "entity_id"),
        ({"entity_id": "t\n"}, "entity_id"),
        ({"entity_id": None}, "entity_id"),
        ({"kind": "reminder_fired"}, "unknown kind 'reminder_fired'"),
        ({"kind": "SET"}, "unknown kind"),
        ({"kind": None}, "unknown kind"),
        ({"field": None}, "set needs a field"),
        ({"kind": "inc", "field": 3, "value": 1}, "inc needs a field"),
        ({"kind": "delete", "value": None}, "delete takes no field"),
        ({"kind": "restore", "field": None, "value": False}, "restore takes no value"),
        ({"value": float("nan")}, "numbers must be finite"),
        ({"value": float("-inf")}, "numbers must be finite"),
        ({"value": [1, [float("inf")]]}, "numbers must be finite"),
        ({"value": 2**53}, "integers must lie within"),
        ({"value": -(2**53)}, "integers must lie within"),
        ({"value": {"a": [2**60]}}, "integers must lie within"),
        ({"kind": "add", "field": "tags", "pred": (A,)}, "pred must be empty for add"),
        ({"kind": "inc", "field": "pomodoros", "value": 1, "pred": (A,)}, "empty for inc"),
        ({"pred": A}, "pred must be a list"),
        ({"pred": (A, A)}, "pred entries must be distinct"),
        ({"pred": (A, "not-a-uuid")}, "pred entry 'not-a-uuid' is not a lowercase"),
        ({"pred": (A.upper(),)}, "is not a lowercase canonical UUID"),
        ({"pred": (C,)}, "pred names the op itself"),
        ({"lamport": 0}, "lamport must be an integer in 1..2^53-1"),
        ({"lamport": -5}, "lamport"),
        ({"lamport": 2**53}, "lamport"),
        ({"lamport": True}, "lamport"),
        ({"lamport": 3.0}, "lamport"),
    ],
)
def test_shape_violations_are_invalid_op(changes: dict[str, Any], needle: str) -> None:
    v = check_shape(op(**changes))
    assert v is not None
    assert v.code == "invalid_op"
    assert needle in v.message


def test_pred_of_65_entries_is_too_many() -> None:
    pred = tuple(f"00000000-0000-4000-8000-{i:012x}" for i in range(65))
    v = check_shape(op(pred=pred))
    assert v == Violation(
        code="invalid_op", message="pred holds 65 entries, at most 64 are allowed"
    )


def test_lamport_headroom() -> None:
    assert DEFAULT_LAMPORT_HEADROOM == 2**20
    assert check_lamport_headroom(2**20, 0) is None
    assert code(check_lamport_headroom(2**20 + 1, 0)) == "invalid_op"
    assert check_lamport_headroom(100 + 2**20, 100) is None
    assert check_lamport_headroom(12, 1, headroom=11) is None
    v = check_lamport_headroom(13, 1, headroom=11)
    assert v is not None
    assert "more than 11 above the space's highest stored lamport 1" in v.message


def test_a_rejected_lamport_says_how_far_it_may_go() -> None:
    v = check_lamport_headroom(5_000_000, 12)
    assert v == Violation(
        code="invalid_op",
        message="lamport 5000000 is more than 1048576 above the space's highest stored "
        "lamport 12; at most 1048588",
    )


NOT_PLAIN = ["a\x00b", "\x00", "lone \ud800 high", "lone \udfff low", "é\x00", "\udc80é"]


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_text_with_nul_or_a_lone_surrogate_is_not_plain(text: str) -> None:
    assert not plain_text(text)


@pytest.mark.parametrize("text", ["", "Buy milk", "für Oma", "😀 paired", "\U0001f600", "\t\n"])
def test_ordinary_text_is_plain(text: str) -> None:
    assert plain_text(text)


@pytest.mark.parametrize("text", NOT_PLAIN)
@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"entity_type": "{}"}, "entity_type must not contain"),
        ({"field": "{}"}, "field must not contain"),
        ({"value": "{}"}, "strings in a value must not contain"),
        ({"kind": "add", "field": "tags", "value": "{}"}, "strings in a value"),
        ({"kind": "remove", "field": "tags", "value": "{}", "pred": (A,)}, "strings in a value"),
        ({"value": ["ok", {"k": ["{}"]}]}, "strings in a value"),
        ({"value": {"{}": 1}}, "strings in a value"),
    ],
)
def test_nul_or_a_lone_surrogate_anywhere_is_invalid_op(
    text: str, changes: dict[str, Any], where: str
) -> None:
    filled = {k: _fill(v, text) for k, v in changes.items()}
    bad = op(**filled)
    assert not plainly_valid(bad)
    v = check_shape(bad)
    assert v is not None
    assert v.code == "invalid_op"
    assert where in v.message
    assert code(validate(bad, DEFAULT_SCHEMA, {A: target(kind="add", field="tags")}, 0)) == (
        "invalid_op"
    )


def _fill(value: Any, text: str) -> Any:
    """``value`` with every ``"{}"`` (string or key, however nested) replaced by ``text``."""
    if value == "{}":
        return text
    if isinstance(value, list):
        return [_fill(v, text) for v in value]
    if isinstance(value, dict):
        return {_fill(k, text): _fill(v, text) for k, v in value.items()}
    return value


def test_plain_non_ascii_names_and_values_take_the_long_way_and_pass_the_shape() -> None:
    assert plainly_valid(op(value="für Oma 😀"))
    assert not plainly_valid(op(field="tïtle"))  # not ASCII: the long way names it
    assert check_shape(op(field="tïtle")) is None
    assert code(check_schema(op(field="tïtle"), DEFAULT_SCHEMA)) == "unknown_field"
    assert not plainly_valid(op(entity_type="tâsk"))
    assert check_shape(op(entity_type="tâsk")) is None


def test_preds_that_name_fitting_ops_pass() -> None:
    assert check_preds(op(pred=(A, B)), {A: target(), B: target(op_id=B, lamport=9)}) is None
    remove = op(kind="remove", field="tags", value="x", pred=(A,))
    assert check_preds(remove, {A: target(kind="add", field="tags", value="x")}) is None
    delete = op(kind="delete", field=None, value=None, pred=(A, B))
    life = {A: target(kind="delete", field=None, value=None), B: target(kind="restore")}
    assert check_preds(delete, life) is None
    assert check_preds(op(), {}) is None


@pytest.mark.parametrize(
    ("the_op", "the_target", "needle"),
    [
        (op(pred=(A,)), None, "names no stored op"),
        (op(pred=(A,)), target(entity_id="t-2"), "another entity"),
        (op(pred=(A,)), target(entity_type="list"), "another entity"),
        (op(pred=(A,)), target(field="notes"), "names no set of field 'title'"),
        (op(pred=(A,)), target(kind="add"), "names no set of field"),
        (op(pred=(A,)), target(lamport=10), "lamport 10, not lower than 10"),
        (op(pred=(A,)), target(lamport=11), "not lower"),
        (
            op(kind="remove", field="tags", value="x", pred=(A,)),
            target(kind="add", field="tags", value="y"),
            "names no add of this element in field 'tags'",
        ),
        (
            op(kind="remove", field="tags", value=1, pred=(A,)),
            target(kind="add", field="tags", value=1.0),
            "no add of this element",
        ),
        (
            op(kind="remove", field="tags", value=1, pred=(A,)),
            target(kind="add", field="tags", value=True),
            "no add of this element",
        ),
        (
            op(kind="remove", field="tags", value="x", pred=(A,)),
            target(kind="remove", field="tags", value="x"),
            "no add",
        ),
        (
            op(kind="remove", field="tags", value="x", pred=(A,)),
            target(kind="add", field="labels", value="x"),
            "no add",
        ),
        (op(kind="delete", field=None, pred=(A,)), target(kind="set"), "names no delete"),
        (op(kind="add", field="tags", pred=(A,)), target(kind="add"), "add supersedes nothing"),
    ],
)
def test_pred_violations(the_op: Op, the_target: PredTarget | None, needle: str) -> None:
    targets = {} if the_target is None else {A: the_target}
    v = check_preds(the_op, targets)
    assert v is not None
    assert v.code == "invalid_op"
    assert v.message.startswith(f"pred entry {A} ")
    assert needle in v.message


def test_entity_type_and_field_must_be_declared() -> None:
    v = check_schema(op(entity_type="nope"), DEFAULT_SCHEMA)
    assert v == Violation(code="unknown_entity_type", message="unknown entity type 'nope'")
    assert code(check_schema(op(entity_type="_member"), DEFAULT_SCHEMA)) == "unknown_entity_type"
    v = check_schema(op(field="colour"), DEFAULT_SCHEMA)
    assert v == Violation(code="unknown_field", message="unknown field task.colour")
    assert check_schema(op(kind="delete", field=None, value=None), DEFAULT_SCHEMA) is None
    assert code(check_schema(op(entity_type="nope", kind="delete"), DEFAULT_SCHEMA)) == (
        "unknown_entity_type"
    )


def test_member_is_never_a_client_entity_type() -> None:
    spec = EntityTypeSpec(fields={"role": FieldSpec(type="lww", value="string")})
    schema = Schema(version=1, entity_types={"_member": spec})
    v = check_schema(op(entity_type="_member", field="role"), schema)
    assert code(v) == "unknown_entity_type"


def _set(field: str, value: Any, kind: str = "set") -> Op:
    return op(kind=kind, field=field, value=value)


@pytest.mark.parametrize(
    "the_op",
    [
        _set("title", "x" * 500),
        _set("title", ""),
        _set("notes", "n" * 10_000),
        _set("position", "p" * 64),
        _set("done", True),
        _set("due_at", None),
        _set("due_at", "2026-11-23T10:00:00Z"),
        _set("remind_at", "2024-02-29T23:59:59.123456789Z"),
        _set("list_id", None),
        _set("list_id", "l" * 1000),
        _set("assignee", None),
        _set("tags", "t" * 64, kind="add"),
        _set("tags", "t" * 64, kind="remove"),
        _set("pomodoros", 1_000_000, kind="inc"),
        _set("pomodoros", -1_000_000, kind="inc"),
        _set("pomodoros", 0, kind="inc"),
    ],
)
def test_values_within_the_limits_are_valid(the_op: Op) -> None:
    assert check_schema(the_op, DEFAULT_SCHEMA) is None


@pytest.mark.parametrize(
    ("the_op", "needle"),
    [
        (_set("pomodoros", 1), "task.pomodoros: set is not allowed on a counter"),
        (_set("title", 1, kind="inc"), "task.title: inc is not allowed on a lww"),
        (_set("assignee", "a", kind="add"), "add is not allowed on a mv"),
        (_set("tags", "a", kind="set"), "set is not allowed on a set"),
        (_set("pomodoros", 1, kind="remove"), "remove is not allowed on a counter"),
        (_set("title", 5), "task.title: expected string, got integer"),
        (_set("title", None), "task.title: must not be null"),
        (_set("done", 1), "expected boolean, got integer"),
        (_set("done", "true"), "expected boolean, got string"),
        (_set("due_at", "2026-11-23T10:00:00+00:00"), "RFC 3339 UTC timestamp ending in Z"),
        (_set("due_at", "2026-11-23T10:00:00z"), "ending in Z"),
        (_set("due_at", "2026-11-23 10:00:00Z"), "ending in Z"),
        (_set("due_at", "2026-02-30T10:00:00Z"), "ending in Z"),
        (_set("due_at", "2026-11-23T24:00:00Z"), "ending in Z"),
        (_set("due_at", "2026-11-23T10:00:00.Z"), "ending in Z"),
        (_set("due_at", 1700000000), "expected timestamp, got integer"),
        (_set("tags", 1.5, kind="add"), "expected string, got float"),
        (_set("tags", None, kind="add"), "must not be null"),
        (_set("tags", ["a"], kind="add"), "expected string, got array"),
        (_set("pomodoros", 1.0, kind="inc"), "expected integer, got float"),
        (_set("pomodoros", True, kind="inc"), "expected integer, got boolean"),
        (_set("pomodoros", None, kind="inc"), "must not be null"),
        (_set("title", {"a": 1}), "expected string, got dict"),
    ],
)
def test_type_mismatch(the_op: Op, needle: str) -> None:
    v = check_schema(the_op, DEFAULT_SCHEMA)
    assert v is not None
    assert v.code == "type_mismatch"
    assert needle in v.message


@pytest.mark.parametrize(
    ("the_op", "needle"),
    [
        (_set("title", "x" * 501), "task.title: longer than 500 characters"),
        (_set("notes", "n" * 10_001), "task.notes: longer than 10000"),
        (_set("position", "p" * 65), "task.position: longer than 64"),
        (_set("tags", "t" * 65, kind="add"), "task.tags: longer than 64"),
        (_set("tags", "t" * 65, kind="remove"), "task.tags: longer than 64"),
        (_set("pomodoros", 1_000_001, kind="inc"), "task.pomodoros: beyond ±1000000"),
        (_set("pomodoros", -1_000_001, kind="inc"), "beyond ±1000000"),
    ],
)
def test_too_large(the_op: Op, needle: str) -> None:
    v = check_schema(the_op, DEFAULT_SCHEMA)
    assert v is not None
    assert v.code == "too_large"
    assert needle in v.message


NUMBERS = Schema(
    version=1,
    entity_types={
        "m": EntityTypeSpec(
            fields={
                "n": FieldSpec(type="lww", value="number", max_abs=10),
                "i": FieldSpec(type="mv", value="integer", max_abs=3),
                "s": FieldSpec(type="set", value="integer"),
                "u": FieldSpec(type="lww", value="integer"),
            }
        )
    },
)


def test_number_and_integer_fields() -> None:
    def check(field: str, value: Any, kind: str = "set") -> str | None:
        return code(check_schema(op(entity_type="m", kind=kind, field=field, value=value), NUMBERS))

    assert check("n", 1) is None
    assert check("n", 1.0) is None
    assert check("n", -9.5) is None
    assert check("n", 10.5) == "too_large"
    assert check("n", True) == "type_mismatch"
    assert check("i", 3) is None
    assert check("i", -4) == "too_large"
    assert check("i", 1.0) == "type_mismatch"
    assert check("s", 7, kind="add") is None
    assert check("s", 7.0, kind="add") == "type_mismatch"
    assert check("s", "7", kind="add") == "type_mismatch"
    assert check("u", 2**53 - 1) is None


def test_validate_checks_in_protocol_order() -> None:
    args: tuple[Any, ...] = (DEFAULT_SCHEMA, {}, 0)
    # shape first: a bad op_id wins over an unknown entity type
    assert code(validate(op(op_id="x", entity_type="nope"), *args)) == "invalid_op"
    # then the headroom, then preds, both before the schema
    assert code(validate(op(entity_type="nope", lamport=2**20 + 1), *args)) == "invalid_op"
    assert code(validate(op(entity_type="nope", lamport=11), DEFAULT_SCHEMA, {}, 0, 10)) == (
        "invalid_op"
    )
    assert code(validate(op(entity_type="nope", pred=(A,)), *args)) == "invalid_op"
    assert code(validate(op(entity_type="nope"), *args)) == "unknown_entity_type"
    assert code(validate(op(value=1.5, pred=(A,)), DEFAULT_SCHEMA, {A: target()}, 0)) == (
        "type_mismatch"
    )
    assert validate(op(pred=(A,)), DEFAULT_SCHEMA, {A: target()}, 5) is None


def test_canonical_value() -> None:
    assert type(canonical_value(1.0)) is int
    assert canonical_value(-0.0) == 0
    assert canonical_value(2.5) == 2.5
    assert type(canonical_value(2.0**53)) is float
    assert canonical_value(True) is True
    assert canonical_value("1.0") == "1.0"
    assert canonical_value(None) is None


def test_canonical_op_only_touches_number_fields() -> None:
    n = op(entity_type="m", field="n", value=3.0)
    canon = canonical_op(n, NUMBERS)
    assert canon.value == 3
    assert type(canon.value) is int
    assert canon == msgspec.structs.replace(n, value=3)
    kept = op(entity_type="m", field="n", value=3.5)
    assert canonical_op(kept, NUMBERS) is kept
    integer = op(entity_type="m", field="u", value=3)
    assert canonical_op(integer, NUMBERS) is integer
    for other in (op(entity_type="nope"), op(entity_type="m", field=None), op(field="zz")):
        assert canonical_op(other, NUMBERS) is other


def test_helpers() -> None:
    assert is_canonical_uuid(A)
    assert not is_canonical_uuid(A.upper())
    assert not is_canonical_uuid(None)
    assert is_rfc3339_utc("2026-11-23T10:00:00Z")
    assert is_rfc3339_utc("2026-11-23T10:00:00.1Z")
    assert not is_rfc3339_utc("2026-11-23T10:00:60Z")
    assert not is_rfc3339_utc("2026-11-23T10:00:00.1234567890Z")
    assert not is_rfc3339_utc("\uff12\uff10\uff12\uff16-11-23T10:00:00Z")
