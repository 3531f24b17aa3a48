"""Time for the scheduler core: a clock object, never ``datetime.now()`` inline.

Every decision (is it due, how late, when to retry) takes ``now`` from a :class:`Clock`,
and every SQL comparison receives that ``now`` as a parameter instead of calling
PostgreSQL's ``now()``: logic tests drive a :class:`ManualClock` and never sleep.
Times are aware datetimes in UTC; on the wire they are RFC 3339 with a ``Z``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Protocol

_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, at: datetime) -> None:
        self._now = at


def parse_time(text: str) -> datetime:
    """An RFC 3339 UTC timestamp (``Z``, up to 9 fractional digits) as an aware datetime.

    Digits past the microsecond are truncated: PostgreSQL keeps microseconds, so the
    scheduler's ``fire_at`` is the same instant the read model stores."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 UTC timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micros = int((match.group(7) or "").ljust(6, "0")[:6])
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC)


def format_time(at: datetime) -> str:
    """Normalised RFC 3339 in UTC with ``Z``: whole seconds when there is no fraction,
    else microseconds (``2026-11-23T10:00:00Z``, ``2026-11-23T10:00:00.250000Z``)."""
    utc = at.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds") + "Z"


def millis(delta: timedelta) -> int:
    """A duration in whole milliseconds (floored)."""
    return (delta.days * 86_400_000) + (delta.seconds * 1000) + (delta.microseconds // 1000)
