"""The order key and Lamport clocks, the only tie-break Concord uses (docs/protocol.md 2.8)."""

from __future__ import annotations

from crdt.ops import Op

__all__ = [
    "DEFAULT_LAMPORT_HEADROOM",
    "MAX_LAMPORT",
    "MAX_PRED",
    "MAX_SAFE_INT",
    "LamportClock",
    "order_key",
]

MAX_SAFE_INT = 2**53 - 1
"""Largest integer every JSON client can hold exactly; the bound of integer values."""

MAX_LAMPORT = MAX_SAFE_INT
"""Largest lamport an operation may carry."""

DEFAULT_LAMPORT_HEADROOM = 2**20
"""How far above a space's highest stored lamport a pushed lamport may jump (docs/protocol.md
section 2, ``limits.lamport_headroom``)."""

MAX_PRED = 64
"""Most entries a `pred` may hold."""


def order_key(op: Op) -> tuple[int, str]:
    """Return `(lamport, op_id)`: compared left to right it totally orders a space's ops."""
    return (op.lamport, op.op_id)


class LamportClock:
    """A device's Lamport clock: `observe` every lamport seen, `tick` for each new op."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def observe(self, n: int) -> None:
        """Advance to `n` if it is ahead: the clock never goes back."""
        if n > self.value:
            self.value = n

    def tick(self) -> int:
        """Advance by one and return the lamport for a new operation."""
        self.value += 1
        return self.value

    def __repr__(self) -> str:
        return f"LamportClock({self.value})"
