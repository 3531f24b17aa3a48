"""Raw wire ops to crdt ops: one violation per bad op, ids lowercased, the device stamped."""

from __future__ import annotations

from typing import Any

import pytest

from core.ops import (
    ParsedOp,
    op_from_event,
    op_from_row,
    parse_op,
    push_space,
    result_op_id,
    uuid_of,
)
from core.wire import Event, Operation
from crdt import Op, Violation

SPACE = "0d8c5a56-3b5e-4a47-a4a4-7f3f3e0a9c11"
OP_ID = "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"
DEVICE = "9e1b5f4a-2c3d-4e5f-8a9b-0c1d2e3f4a5b"


def raw(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "op_id": OP_ID,
        "space_id": SPACE,
        "entity_type": "task",
        "entity_id": "t-1",
        "kind": "set",
        "field": "title",
        "value": "x",
        "lamport": 3,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def test_parses_and_normalises() -> None:
    parsed = parse_op(
        raw(
            op_id=OP_ID.upper(),
            space_id=SPACE.upper(),
            pred=[OP_ID.upper()],
            device_id=DEVICE.upper(),
            client_time="now",
        ),
        SPACE,
        DEVICE,
    )
    assert isinstance(parsed, ParsedOp)
    assert parsed.op.op_id == OP_ID
    assert parsed.op.pred == (OP_ID,)
    assert parsed.op.device_id == DEVICE
    assert parsed.device_id == DEVICE
    assert (parsed.space_id, parsed.client_time) == (SPACE, "now")


def test_defaults() -> None:
    parsed = parse_op(raw(field=..., value=..., kind="delete"), SPACE, DEVICE)
    assert isinstance(parsed, ParsedOp)
    assert (parsed.op.field, parsed.op.value, parsed.op.pred) == (None, None, ())
    assert parsed.device_id is None
    assert parsed.client_time is None


_TEXT = "must not contain NUL or an unpaired surrogate"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (5, "an operation must be a JSON object"),
        ([raw()], "an operation must be a JSON object"),
        (raw(op_id=...), "op_id is required"),
        (raw(op_id=1), "op_id must be a string"),
        (raw(space_id=...), "space_id is required"),
        (
            raw(space_id="5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"),
            "every op of a push must name the push's space (the first op's)",
        ),
        (raw(entity_type=None), "entity_type is required"),
        (raw(kind=2), "kind must be a string"),
        (raw(field=3), "field must be a string"),
        (raw(pred="x"), "pred must be a list of op_id strings"),
        (raw(pred=[1]), "pred must be a list of op_id strings"),
        (raw(lamport="3"), "lamport must be an integer"),
        (raw(lamport=3.0), "lamport must be an integer"),
        (raw(lamport=False), "lamport must be an integer"),
        (raw(lamport=...), "lamport must be an integer"),
        (raw(client_time="x" * 65), "client_time must be text of at most 64 characters"),
        (raw(client_time=5), "client_time must be text of at most 64 characters"),
        (raw(client_time="\x00"), f"client_time {_TEXT}"),
        (raw(client_time="\x00" * 64), f"client_time {_TEXT}"),
        (raw(client_time="\ud800"), f"client_time {_TEXT}"),
        (raw(device_id=7), "device_id must be a string"),
        (raw(device_id="\x00"), f"device_id {_TEXT}"),
        (raw(device_id=f"{DEVICE}\ud800"), f"device_id {_TEXT}"),
    ],
)
def test_bad_ops_are_invalid_and_the_message_names_the_problem(bad: Any, message: str) -> None:
    assert parse_op(bad, SPACE, DEVICE) == Violation(code="invalid_op", message=message)


def test_a_good_client_time_does_not_hide_another_fields_problem() -> None:
    got = parse_op(raw(client_time="now", lamport="3"), SPACE, DEVICE)
    assert got == Violation(code="invalid_op", message="lamport must be an integer")


def test_the_longest_client_time_and_a_null_pred_are_taken() -> None:
    parsed = parse_op(raw(client_time="x" * 64, pred=None), SPACE, DEVICE)
    assert isinstance(parsed, ParsedOp)
    assert parsed.client_time == "x" * 64
    assert parsed.op.pred == ()


def test_a_push_without_a_space_names_it() -> None:
    assert parse_op(raw(), None, DEVICE) == Violation(
        code="invalid_op", message="the push has no space: the first op needs a valid space_id"
    )


def test_ids_in_any_uuid_spelling_become_canonical() -> None:
    canonical = "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"
    for spelling in (
        canonical.upper(),
        "{" + canonical + "}",
        "urn:uuid:" + canonical,
        canonical.replace("-", ""),
    ):
        assert uuid_of(spelling) == canonical, spelling
    for other in ("t-1", "ZZZZZZZZ-ZZZZ", ""):
        assert uuid_of(other) == other


def test_stored_events_and_rows_become_ops() -> None:
    event = Event(
        seq=7, op_id=OP_ID, space_id=SPACE, entity_type="task", entity_id="t-1", kind="set",
        field="title", value={"a": 1}, pred=[DEVICE], lamport=9, device_id=DEVICE,
        user_id=None, recorded_at="2026-01-01T00:00:00.000000Z", schema_version=1,
    )  # fmt: skip
    expected = Op(
        op_id=OP_ID, entity_type="task", entity_id="t-1", kind="set", field="title",
        value={"a": 1}, pred=(DEVICE,), lamport=9, device_id=DEVICE,
    )  # fmt: skip
    assert op_from_event(event) == expected
    pending = Operation(
        op_id=OP_ID, space_id=SPACE, entity_type="task", entity_id="t-1", kind="set",
        field="title", value={"a": 1}, pred=[DEVICE], lamport=9,
    )  # fmt: skip
    assert op_from_event(pending, DEVICE) == expected  # the pushing device, named by none
    assert op_from_event(pending).device_id == ""
    row = (7, OP_ID, "task", "t-1", "set", "title", '{"a":1}', [DEVICE], 9, DEVICE, "later")
    assert op_from_row(row) == expected
    deleted: tuple[Any, ...] = (8, OP_ID, "task", "t-1", "delete", None, None, [], 10, DEVICE)
    assert op_from_row(deleted) == Op(
        op_id=OP_ID, entity_type="task", entity_id="t-1", kind="delete", field=None,
        value=None, pred=(), lamport=10, device_id=DEVICE,
    )  # fmt: skip


def test_text_problems_are_named() -> None:
    for field in ("client_time", "device_id"):
        for text in ("a\x00", "\udc00"):
            got = parse_op(raw(**{field: text}), SPACE, DEVICE)
            assert got == Violation(
                code="invalid_op", message=f"{field} must not contain NUL or an unpaired surrogate"
            )


def test_push_space_and_echo() -> None:
    assert push_space([raw(space_id=SPACE.upper())]) == SPACE
    assert push_space([]) is None
    assert push_space([5, raw()]) is None
    assert push_space([raw(space_id="nope")]) is None
    assert isinstance(parse_op(raw(), None, DEVICE), Violation)
    assert result_op_id(raw(op_id="ABC")) == "ABC"
    assert result_op_id(raw(op_id=5)) is None
    assert result_op_id("x") is None
