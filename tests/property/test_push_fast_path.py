"""``prepare``'s short way for the common op gives exactly the long way's answer.

``eventstore.push._check_plain`` either declines (None: the op goes the long way) or
returns the very ``Checked`` that ``parse_op`` + ``_check`` build: same lowercased ids,
stamped device, client_time, schema verdict, canonical value and payload hash.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from core.ids import canonical_id
from core.ops import MAX_CLIENT_TIME, parse_op
from core.wire import DEFAULT_LIMITS
from crdt import DEFAULT_SCHEMA, MAX_SAFE_INT
from eventstore.push import Checked, _check, _check_plain, prepare

SPACE = "0d8c5a56-3b5e-4a47-a4a4-7f3f3e0a9c11"
DEVICE = "9e1b5f4a-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
MAX_VALUE = DEFAULT_LIMITS.max_value_bytes
A = "0b6f3c2e-8d4a-4f1e-9c3b-2a1d5e6f7a8b"
B = "1c7a4d3f-9e5b-4a2f-8d4c-3b2e6f7a8b9c"

_ABSENT = object()

choices: dict[str, list[Any]] = {
    "op_id": [A, B, A.upper(), A[:-1], 5, None],
    "space_id": [SPACE, SPACE.upper(), B, 3, None],
    "entity_type": ["task", "list", "_member", "nope", 1, "task\x00", "tâsk", "t\udc00"],
    "entity_id": ["t-1", "a" * 129, "sp ace", 7],
    "kind": ["set", "inc", "add", "remove", "delete", "restore", "bogus"],
    "field": [
        "title",
        "done",
        "pomodoros",
        "tags",
        "due_at",
        "nope",
        None,
        3,
        "ti\x00tle",
        "\ud800",
    ],
    "value": [
        "x",
        "a" * 600,
        "a\ud800b",
        "a\x00b",
        "für Oma",
        "ü\x00",
        ["x\x00"],
        {"\x00": 1},
        "2030-01-01T00:00:00Z",
        True,
        False,
        0,
        7,
        MAX_SAFE_INT,
        MAX_SAFE_INT + 1,
        1.5,
        2.0,
        float("nan"),
        [1],
        {"a": 1},
        None,
    ],
    "pred": [[], [B], [B.upper()], [A], [B, B], ["x"], [3], None, "x"],
    "lamport": [1, 5, 0, -1, 2**53, True, 1.0, "1"],
    "client_time": [
        "2026-11-23T10:00:00Z",
        "x" * (MAX_CLIENT_TIME + 1),
        "a\x00b",
        "\udfff",
        5,
        None,
    ],
    "device_id": [DEVICE, DEVICE.upper(), B, None, 4, "\x00"],
}


@st.composite
def raw_ops(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([None, "op", 3, ["op"]]))
    raw: dict[str, Any] = {}
    for key, options in choices.items():
        # Mostly a plain valid op, so the short way is taken often.
        plain = options[0] if key != "device_id" else _ABSENT
        value = draw(st.sampled_from([*[plain] * 24, _ABSENT, *options]))
        if value is not _ABSENT:
            raw[key] = value
    if draw(st.booleans()):
        raw["extra"] = "ignored"
    return raw


@given(raw_ops())
def test_the_short_way_agrees_with_the_long_way(raw: Any) -> None:
    short = _check_plain(raw, SPACE, DEVICE, DEFAULT_SCHEMA, MAX_VALUE)
    long = _check(parse_op(raw, SPACE, DEVICE), DEVICE, DEFAULT_SCHEMA, MAX_VALUE)
    if short is not None:
        assert short == long


@given(raw_ops())
def test_prepare_answers_as_the_long_way_alone(raw: Any) -> None:
    push = prepare(DEVICE, DEVICE, [raw], DEFAULT_SCHEMA)
    space = push.space_id
    assert push.items == [_check(parse_op(raw, space, DEVICE), DEVICE, DEFAULT_SCHEMA, MAX_VALUE)]
    sent = raw.get("op_id") if isinstance(raw, dict) else None
    expected_echo = (canonical_id(sent) or sent) if isinstance(sent, str) else None
    assert push.echo_ids == [expected_echo]


def test_a_plain_op_takes_the_short_way() -> None:
    raw = {
        "op_id": A,
        "space_id": SPACE,
        "entity_type": "task",
        "entity_id": "t-1",
        "kind": "set",
        "field": "title",
        "value": "Buy milk",
        "pred": [B],
        "lamport": 4,
        "client_time": "2026-11-23T10:00:00Z",
    }
    short = _check_plain(raw, SPACE, DEVICE, DEFAULT_SCHEMA, MAX_VALUE)
    assert isinstance(short, Checked)
    assert short.op.device_id == DEVICE
    assert short.op.pred == (B,)
    assert short.value_json == b'"Buy milk"'
    assert short.late is None
    # Declined: a device named, a float value, an uppercase id.
    for change in ({"device_id": DEVICE}, {"value": 1.0}, {"op_id": A.upper()}):
        assert _check_plain({**raw, **change}, SPACE, DEVICE, DEFAULT_SCHEMA, MAX_VALUE) is None


def test_prepare_takes_the_short_way_for_plain_ops(monkeypatch: Any) -> None:
    """The common op never reaches the long way (``parse_op``), whatever the case of the
    ids naming the caller; the push carries them lowercased."""

    def long_way(*args: Any) -> Any:
        raise AssertionError("a plain op went the long way")

    monkeypatch.setattr("eventstore.push.parse_op", long_way)
    raw = {
        "op_id": A,
        "space_id": SPACE,
        "entity_type": "task",
        "entity_id": "t-1",
        "kind": "set",
        "field": "title",
        "value": "Buy milk",
        "lamport": 4,
    }
    push = prepare(B.upper(), DEVICE.upper(), [raw, {**raw, "op_id": B}], DEFAULT_SCHEMA)
    assert (push.user_id, push.device_id, push.space_id) == (B, DEVICE, SPACE)
    assert push.echo_ids == [A, B]
    assert all(isinstance(i, Checked) and i.op.device_id == DEVICE for i in push.items)
