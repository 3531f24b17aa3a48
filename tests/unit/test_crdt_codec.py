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


def _long_history(n: int) -> list[Op]:
    """A title set ``n`` times (each naming the last), ``n`` incs, tags added and removed."""
    ops = [op(1, "set", "title", "v1", lamport=1)]
    for i in range(2, n + 1):
        ops.append(op(i, "set", "title", f"v{i}", lamport=i, pred=(i - 1,)))
    for i in range(n):
        ops.append(op(1000 + i, "inc", "pomodoros", 1 if i % 3 else -1, lamport=1000 + i))
    ops.append(op(3000, "add", "tags", "x", lamport=3000))
    ops.append(op(3001, "remove", "tags", "x", lamport=3001, pred=(3000,)))
    ops.append(op(3002, "add", "tags", "y", lamport=3002))
    return ops


def test_a_settled_state_keeps_what_later_ops_need_and_not_the_history() -> None:
    short, long = state_of(*_long_history(2)), state_of(*_long_history(500))
    settled = decode_state(encode_state(long, settled=True))
    # the same parts; only the values, lamports and the total are longer numbers
    assert len(encode_state(long, settled=True)) <= len(encode_state(short, settled=True)) + 8
    assert len(encode_state(long)) > 500 * 2 * 36  # the full state holds every op_id
    assert settled.view(TASK) == long.view(TASK)
    assert settled.view(TASK).fields["pomodoros"].value == 500 - 167 * 2
    assert settled.field_heads("title") == (uid(500),)
    assert settled.live_adds("tags", "y") == (uid(3002),)
    assert settled.last_lamport == long.last_lamport
    assert not settled.holds(uid(499))  # superseded: left out
    # later log ops apply as on the full state, counters included
    later = [
        op(501, "set", "title", "w", lamport=4000, pred=(500,)),
        op(502, "set", "title", "z", lamport=4001, pred=(499,)),  # a stale, superseded pred
        op(503, "inc", "pomodoros", 5, lamport=4002),
        op(504, "remove", "tags", "x", lamport=4003, pred=(3000,)),  # already removed
    ]
    for o in later:
        assert settled.apply(o) == long.apply(o)
    assert encode_state(settled, settled=True) == encode_state(long, settled=True)
    assert settled.view(TASK) == long.view(TASK)


def test_a_settled_state_leaves_out_pending_names() -> None:
    early = op(2, "set", "title", "b", lamport=2, pred=(1,))  # names an op not applied
    state = state_of(early)
    assert b"title" in encode_state(state, settled=True)
    assert uid(1).encode() in encode_state(state)
    assert uid(1).encode() not in encode_state(state, settled=True)
    assert decode_state(encode_state(state, settled=True)).view(TASK) == state.view(TASK)


def test_an_op_id_held_in_the_state_is_encoded_once() -> None:
    # heads, deltas and live adds carry their op_ids; only the others are listed apart
    state = state_of(
        op(1, "set", "title", "a", lamport=1),
        op(2, "set", "title", "b", lamport=2, pred=(1,)),
        op(3, "set", "assignee", "x", lamport=3),
        op(4, "set", "assignee", "y", lamport=3, device=uid(99)),
        op(5, "inc", "pomodoros", 1, lamport=4),
        op(6, "add", "tags", "x", lamport=5),
    )
    data = encode_state(state)
    for n in (2, 3, 4, 5):
        assert data.count(uid(n).encode()) == 1
    assert data.count(uid(6).encode()) == 2  # its live add, and the order key of the field ops
    assert data.count(uid(1).encode()) == 1  # superseded: among the others
    assert decode_state(data) == state
