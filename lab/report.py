"""What a scenario says: its steps as they happen, the metrics that moved, the verdict."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TextIO

from lab.metrics import Meter, format_moved, label_text

Status = Literal["PASS", "FAIL", "SKIP"]


class Failed(Exception):
    """The scenario saw something wrong; the message is the reason."""


class Skipped(Exception):
    """The scenario cannot run against this server; the message says what it needs."""


@dataclass
class Outcome:
    name: str
    status: Status = "PASS"
    reason: str = ""
    lines: list[str] = field(default_factory=list)
    moved: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Report:
    """One scenario's running account, printed line by line to ``out``."""

    name: str
    out: TextIO = sys.stdout
    outcome: Outcome = field(init=False)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.name)
        self._print(f"== {self.name}")

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def say(self, line: str) -> None:
        """One thing that happened."""
        self.outcome.lines.append(line)
        self._print(f"  {line}")

    def expect(self, condition: bool, reason: str) -> None:
        """Fail the scenario with ``reason`` unless ``condition`` holds."""
        if not condition:
            raise Failed(reason)

    def metric_rose(self, meter: Meter, name: str, at_least: float = 1, **labels: str) -> float:
        """Check that a metric moved by ``at_least``; say by how much."""
        delta = meter.delta(name, **labels)
        shown = label_text((name, tuple(sorted(labels.items()))))
        self.say(f"metric {shown} moved by {delta:+g} (needed >= {at_least:+g})")
        self.expect(delta >= at_least, f"{shown} moved by {delta:+g}, expected >= {at_least:+g}")
        return delta

    def finish(self, meter: Meter | None, error: BaseException | None) -> Outcome:
        outcome = self.outcome
        if meter is not None:
            outcome.moved = meter.moved()
            self._print("  metrics that moved:")
            for line in format_moved(outcome.moved):
                self._print(line)
        if isinstance(error, Skipped):
            outcome.status, outcome.reason = "SKIP", str(error)
        elif isinstance(error, Failed):
            outcome.status, outcome.reason = "FAIL", str(error)
        elif error is not None:
            outcome.status, outcome.reason = "FAIL", f"{type(error).__name__}: {error}"
        else:
            outcome.reason = outcome.reason or "every check held"
        outcome.seconds = time.monotonic() - self.started
        self._print(f"{outcome.status} {self.name}: {outcome.reason} ({outcome.seconds:.1f}s)")
        return outcome


def summary(outcomes: list[Outcome], write: Callable[[str], None]) -> None:
    """The table printed after ``concord lab all``."""
    width = max([len(o.name) for o in outcomes] + [8])
    write("")
    write(f"{'scenario'.ljust(width)}  result  seconds  reason")
    write(f"{'-' * width}  ------  -------  ------")
    for o in outcomes:
        write(f"{o.name.ljust(width)}  {o.status:<6}  {o.seconds:7.1f}  {o.reason}")
    failed = sum(1 for o in outcomes if o.status == "FAIL")
    passed = sum(1 for o in outcomes if o.status == "PASS")
    skipped = sum(1 for o in outcomes if o.status == "SKIP")
    write(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
