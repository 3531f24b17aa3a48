"""The fault schedule: a pure function of the seed and the run's length, printed before
the run so that ``--seed N`` replays the same faults at the same offsets."""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Every kind appears at least once in every run; more are drawn at random.
KINDS = (
    "kill gateway-a",
    "kill gateway-b",
    "kill projector",
    "kill scheduler",
    "stall projector",
    "pause gateway-a",
    "pause gateway-b",
    "pause scheduler",
    "restart nats",
    "restart postgres",
    "terminate backends",
    "swallow answers gateway-a",
    "swallow answers gateway-b",
    "duplicate pushes",
)


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` starts ``at`` seconds into the chaos phase and lasts
    ``seconds`` (how long a process stays down or paused, answers are swallowed)."""

    at: float
    kind: str
    seconds: float

    def describe(self) -> str:
        return f"t+{self.at:6.1f}s  {self.kind:<26} {self.seconds:4.1f}s"


def make_schedule(seed: int, chaos_seconds: float) -> list[Fault]:
    """Faults spread over ``chaos_seconds``: every kind once, then random ones, about
    one every six seconds, in time order (they run one after the other)."""
    rng = random.Random(f"chaos-faults-{seed}")
    count = max(len(KINDS), int(chaos_seconds / 6))
    kinds = list(KINDS) + [rng.choice(KINDS) for _ in range(count - len(KINDS))]
    rng.shuffle(kinds)
    step = chaos_seconds / (count + 1)
    faults = []
    for i, kind in enumerate(kinds):
        at = round(step * (i + 0.5) + rng.uniform(0, step / 2), 1)
        seconds = round(rng.uniform(0.5, min(4.0, step * 0.6)), 1)
        faults.append(Fault(at=at, kind=kind, seconds=seconds))
    return faults
