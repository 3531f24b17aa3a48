"""The lab's scenarios, one module each; ``SCENARIOS`` maps the CLI names to them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from lab.context import Lab
from lab.metrics import Meter
from lab.report import Report
from lab.scenarios import conflict, expiry, reminders, replay

Scenario = Callable[[Lab, Report, Meter], Awaitable[None]]

SCENARIOS: dict[str, Scenario] = {
    "offline-replay": replay.run,
    "multi-device-conflict": conflict.run,
    "auth-expiry-mid-queue": expiry.run,
    "missed-reminder": reminders.run,
}
