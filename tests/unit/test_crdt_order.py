"""Order key and Lamport clock."""

from __future__ import annotations

from crdt import MAX_LAMPORT, MAX_PRED, MAX_SAFE_INT, LamportClock, Op, order_key


def _op(op_id: str, lamport: int) -> Op:
    return Op(op_id=op_id, entity_type="task", entity_id="t", kind="set", lamport=lamport)


def test_order_key_compares_lamport_then_op_id() -> None:
    a = _op("00000000-0000-0000-0000-00000000000a", 2)
    b = _op("00000000-0000-0000-0000-00000000000b", 2)
    c = _op("00000000-0000-0000-0000-000000000001", 3)
    assert order_key(a) == (2, "00000000-0000-0000-0000-00000000000a")
    assert sorted([c, b, a], key=order_key) == [a, b, c]


def test_clock_ticks_and_never_goes_back() -> None:
    clock = LamportClock()
    assert clock.tick() == 1
    clock.observe(41)
    assert clock.tick() == 42
    clock.observe(7)
    assert clock.value == 42
    assert repr(clock) == "LamportClock(42)"
    assert LamportClock(5).tick() == 6


def test_limits() -> None:
    assert MAX_LAMPORT == MAX_SAFE_INT == 2**53 - 1
    assert MAX_PRED == 64
