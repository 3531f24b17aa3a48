"""The relay's log messages: runs of consecutive events of one space (``relay.runs_of``),
and the projector's decoding of them (``stream.decode_log_message``)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from core.events import Names
from core.wire import Event
from projector.relay import HEADER_ROOM, MESSAGE_BYTES, MESSAGE_EVENTS, Run, messages, runs_of
from projector.stream import decode_log_message

A, B = uuid.UUID(int=1), uuid.UUID(int=2)


def _row(space: uuid.UUID, seq: int, value: str = '"v"') -> Any:
    """A row as ``relay.read_ranges`` returns it: the space's uuid, then READ_COLUMNS."""
    return (
        space, seq, str(uuid.UUID(int=1000 + seq)), str(space), "task", "t-1", "set",
        "title", value, [], seq, None, str(uuid.UUID(int=7)), str(uuid.UUID(int=8)),
        "2026-12-05T12:00:00.000000Z", 1,
    )  # fmt: skip


def _seqs(run: Run) -> list[int]:
    return [e.seq for e in decode_log_message(run.payload)]


def test_a_run_decodes_to_the_events_of_its_rows() -> None:
    rows = [_row(A, 1, '{"x": 1.0}'), _row(A, 2, "null")]
    [run] = runs_of(rows, MESSAGE_EVENTS, MESSAGE_BYTES)
    assert (run.sid, run.space_id, run.first, run.last) == (A, str(A), 1, 2)
    events = decode_log_message(run.payload)
    assert [e.seq for e in events] == [1, 2]
    assert events[0].value == {"x": 1.0}
    assert b'"value":{"x": 1.0}' in run.payload  # the stored JSON text, embedded as it is
    assert events[1].value is None
    assert events[0].device_id == str(uuid.UUID(int=7))


def test_runs_are_cut_by_space_gap_count_and_bytes() -> None:
    rows = [_row(A, s) for s in (1, 2, 3, 5, 6)] + [_row(B, s) for s in (1, 2, 3, 4, 5)]
    runs = runs_of(rows, 3, MESSAGE_BYTES)
    assert [(r.sid, _seqs(r)) for r in runs] == [
        (A, [1, 2, 3]),
        (A, [5, 6]),  # a gap (never in a read range, but a run must be consecutive)
        (B, [1, 2, 3]),  # another space
        (B, [4, 5]),  # at most three events
    ]
    one = len(msgspec.json.encode(decode_log_message(runs[0].payload)[0]))
    by_bytes = runs_of([_row(A, s) for s in range(1, 6)], 100, 2 * (one + 1))
    assert [_seqs(r) for r in by_bytes] == [[1, 2], [3, 4], [5]]
    assert all(len(r.payload) <= 2 * (one + 1) + 1 for r in by_bytes)


def test_an_event_larger_than_a_message_travels_alone() -> None:
    big = '"' + "x" * 5000 + '"'
    rows = [_row(A, 1), _row(A, 2, big), _row(A, 3), _row(A, 4)]
    runs = runs_of(rows, 100, 1024)
    assert [_seqs(r) for r in runs] == [[1], [2], [3, 4]]
    assert len(runs[1].payload) > 5000


def test_the_same_rows_are_cut_the_same_way() -> None:
    """A range published again (after a crash before COMMIT) gets the same message ids,
    so JetStream drops the repeats; a longer range keeps the earlier runs' ids."""
    rows = [_row(A, s) for s in range(1, 8)]
    ids = [Names.msg_id(r.space_id, r.first, r.last) for r in runs_of(rows, 3, MESSAGE_BYTES)]
    assert ids == [f"{A}:1-3", f"{A}:4-6", f"{A}:7-7"]
    longer = runs_of([*rows, _row(A, 8)], 3, MESSAGE_BYTES)
    assert [Names.msg_id(r.space_id, r.first, r.last) for r in longer][:2] == ids[:2]


def test_no_rows_no_runs() -> None:
    assert runs_of([], MESSAGE_EVENTS, MESSAGE_BYTES) == []


def test_decode_takes_one_event_as_older_relays_sent_it() -> None:
    event = Event(
        seq=4, op_id=str(uuid.UUID(int=4)), space_id=str(A), entity_type="task",
        entity_id="t-1", kind="set", field="title", value="v", pred=[], lamport=4,
        client_time=None, device_id=str(uuid.UUID(int=7)), user_id=None,
        recorded_at="2026-12-05T12:00:00.000000Z", schema_version=1,
    )  # fmt: skip
    assert decode_log_message(msgspec.json.encode(event)) == [event]
    assert decode_log_message(msgspec.json.encode([event, event])) == [event, event]


@pytest.mark.parametrize("data", [b"", b"junk", b"[1, 2]", b'{"seq": 1}', b"[{}]"])
def test_decode_refuses_anything_else(data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_log_message(data)


def test_messages_fit_any_max_payload_and_only_a_lone_event_is_too_large() -> None:
    """For every ``max_payload`` around two events' size, each message fits the server
    (headers' room left), and only an event larger alone is refused: a run of several
    that fills the bound to the byte is not (its brackets once made it one byte over)."""
    rows = [_row(A, s) for s in range(1, 9)]
    one = len(runs_of(rows[:1], 1, MESSAGE_BYTES)[0].payload)
    for max_payload in range(HEADER_ROOM + one, HEADER_ROOM + 3 * one + 8):
        runs, error = messages(rows, MESSAGE_EVENTS, MESSAGE_BYTES, max_payload)
        assert error is None, max_payload
        assert [s for r in runs for s in _seqs(r)] == list(range(1, 9))
        assert all(len(r.payload) <= max_payload - HEADER_ROOM for r in runs), max_payload
    big = [_row(A, 1), _row(A, 2, '"' + "x" * 5000 + '"'), _row(A, 3), _row(B, 1)]
    runs, error = messages(big, MESSAGE_EVENTS, MESSAGE_BYTES, HEADER_ROOM + 2 * one)
    assert [(r.sid, _seqs(r)) for r in runs] == [(A, [1]), (B, [1])]  # A stops before 2
    assert error is not None
    assert str(error).startswith(f"event 2 of space {A} is ")


def test_a_run_that_fills_the_bound_to_the_byte_stays_one_message() -> None:
    """Two events whose message is exactly what the server takes (``max_payload`` less
    the headers' room) go as one message, not two: the bound is ``limit`` bytes of JSON,
    brackets included, and not a byte less."""
    rows = [_row(A, 1), _row(A, 2)]
    two = len(runs_of(rows, MESSAGE_EVENTS, MESSAGE_BYTES)[0].payload)
    runs, error = messages(rows, MESSAGE_EVENTS, MESSAGE_BYTES, HEADER_ROOM + two)
    assert error is None
    assert [_seqs(r) for r in runs] == [[1, 2]]
    runs, error = messages(rows, MESSAGE_EVENTS, MESSAGE_BYTES, HEADER_ROOM + two - 1)
    assert error is None
    assert [_seqs(r) for r in runs] == [[1], [2]]


def test_a_run_never_spans_two_spaces_nor_a_gap() -> None:
    """A space's range can start at the seq after the previous space's last one: it is a
    message of its own all the same (its subject, id and ack are its space's); and a gap
    in one space's seqs cuts a run even when no bound does."""
    rows = [_row(A, 5), _row(A, 6), _row(B, 7), _row(B, 8), _row(B, 10)]
    runs = runs_of(rows, MESSAGE_EVENTS, MESSAGE_BYTES)
    assert [(r.sid, _seqs(r)) for r in runs] == [(A, [5, 6]), (B, [7, 8]), (B, [10])]
