"""The compact state encoding: a msgpack array tagged with its format version."""

from __future__ import annotations

import pytest

from crdt import DEFAULT_SCHEMA, EntityState, Op, decode_state, encode_state
from tests.unit.test_crdt_state import op, state_of, uid

TASK = DEFAULT_SCHEMA.entity_types["task"]


def test_encoding_round_trips_every_part() -> None:
    ops = [
        op(1, "set", "title", "a", lamport=1),
        op(2, "set", "assignee", "x", lamport=2, pred=(40,)),
        op(3, "inc", "pomodoros", -2, lamport=3),
        op(4, "add", "tags", "x", lamport=4),
        op(5, "remove", "tags", "y", lamport=5, pred=(41,)),
        op(6, "delete", lamport=6, pred=(42,)),
        op(7, "set", "title", "b", lamport=7, pred=(1,)),
        Op(op_id=uid(8), entity_type="task", entity_id="t-1", kind="member_added", lamport=8),
    ]
    state = state_of(*ops)
    data = encode_state(state)
    assert data[:1] == b"\x9b"  # a msgpack array of 11: the version tag and ten parts
    assert data[1] == 1
    back = decode_state(data)
    assert back == state
    assert back.view(TASK) == state.view(TASK)
    assert all(back.holds(o.op_id) for o in ops)
    assert encode_state(EntityState.new("task", "t")) != data


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"garbage", b"\x92\x02\xa1x", b"\x9b\x01" + b"\xc0" * 10],
)
def test_decoding_garbage_or_unknown_versions_raises(data: bytes) -> None:
    with pytest.raises(ValueError, match="not an entity state of format 1"):
        decode_state(data)
