"""Crash points for fault-injection tests (``CONCORD_TEST_FAULT``).

``CONCORD_TEST_FAULT=after_fire_append`` makes the process exit at once (``os._exit(137)``,
as SIGKILL would: no cleanup, no COMMIT of the claim transaction) right after a
``reminder_fired`` event was appended and before the reminder row says ``fired``. The
crash tests prove that the restarted scheduler then stores no second event. Unset in
production; read once when the scheduler starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

FAULT_ENV = "CONCORD_TEST_FAULT"
POINTS = frozenset({"after_fire_append"})

log = logging.getLogger("concord.scheduler")


class Faults:
    """The armed crash points of this process (none in production)."""

    def __init__(self, armed: frozenset[str] = frozenset()) -> None:
        unknown = armed - POINTS
        if unknown:
            raise ValueError(f"{FAULT_ENV}: unknown fault point(s) {sorted(unknown)}")
        self.armed = armed

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Faults:
        raw = environ.get(FAULT_ENV, "")
        return cls(frozenset(p.strip() for p in raw.split(",") if p.strip()))

    def point(self, name: str) -> None:
        """Crash here if ``name`` is armed."""
        if name in self.armed:
            log.warning("fault point %s reached: exiting with 137", name)
            logging.shutdown()
            os._exit(137)
