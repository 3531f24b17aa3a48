"""Fault hooks for the reliability lab and tests, and the reconnect backoff.

``FlakyLink`` reproduces what a bad mobile link does to a device: the server stores a
push, but its ``push_result`` never reaches the device (``drop_results``), or the link
dies right after a push was sent (``cut_after_send``). Either way the device cannot
know what was stored: it reconnects and resends the same op_ids, and the server's
dedup answers ``duplicate``. Counts are budgets: each fault fires that many times.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class FlakyLink:
    """Faults to inject on the device's WebSocket; all zero (a healthy link) by default."""

    #: ``push_result`` messages to drop (the link is then cut, as a lost answer would).
    drop_results: int = 0
    #: Pushes after which the link is cut at once, before any answer can arrive.
    cut_after_send: int = 0
    #: Whether the device may renew its token on ``auth_expiring`` (the lab turns this
    #: off to make tokens expire under a queue, forcing the ``auth_expired`` path).
    proactive_refresh: bool = True

    def take_drop(self) -> bool:
        if self.drop_results > 0:
            self.drop_results -= 1
            return True
        return False

    def take_cut(self) -> bool:
        if self.cut_after_send > 0:
            self.cut_after_send -= 1
            return True
        return False


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**n))``.

    Full jitter spreads the reconnects of many devices after an outage instead of
    bringing them back in waves.
    """

    def __init__(self, base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = self._rng.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return delay

    def reset(self) -> None:
        self.attempt = 0
