"""Raw wire ops to crdt ops: one violation per bad op, ids lowercased, the device stamped."""

from __future__ import annotations

from typing import Any

import pytest

from core.ops import ParsedOp, parse_op, push_space, result_op_id
from crdt import Violation

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


@pytest.mark.parametrize(
    "bad",
    [
        5,
        [raw()],
        raw(op_id=...),
        raw(op_id=1),
        raw(space_id=...),
        raw(space_id="5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"),
        raw(entity_type=None),
        raw(kind=2),
        raw(field=3),
        raw(pred="x"),
        raw(pred=[1]),
        raw(lamport="3"),
        raw(lamport=3.0),
        raw(lamport=False),
        raw(lamport=...),
        raw(client_time="x" * 65),
        raw(client_time="\x00"),
        raw(client_time="\ud800"),
        raw(device_id=7),
        raw(device_id="\x00"),
        raw(device_id=f"{DEVICE}\ud800"),
    ],
)
def test_bad_ops_are_invalid(bad: Any) -> None:
    got = parse_op(bad, SPACE, DEVICE)
    assert isinstance(got, Violation)
    assert got.code == "invalid_op"


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
