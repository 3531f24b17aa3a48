"""A circuit breaker per webhook endpoint, so a dead endpoint cannot stall the others.

closed --(``threshold`` consecutive failures)--> open --(``cooldown`` elapsed)-->
half-open: exactly one probe call is let through; its success closes the circuit, its
failure opens it again for another ``cooldown``. No call is made while open. State is
per process (each scheduler instance learns about an endpoint on its own) and takes
``now`` from the caller, like the rest of the scheduler core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

State = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    threshold: int
    cooldown: float
    state: State = "closed"
    failures: int = 0
    open_until: datetime | None = None
    probe_in_flight: bool = False
    opened: int = field(default=0)

    def budget(self, now: datetime) -> int | None:
        """How many calls may start now: None (no limit), 1 (the probe) or 0."""
        if self.state == "closed":
            return None
        if self.state == "open":
            assert self.open_until is not None
            return 1 if now >= self.open_until else 0
        return 0  # half-open: the probe is in flight

    def acquire(self, now: datetime) -> bool:
        """Take permission for one call (the probe, when the cooldown has passed)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            assert self.open_until is not None
            if now < self.open_until:
                return False
            self.state = "half_open"
        if self.probe_in_flight:
            return False
        self.probe_in_flight = True
        return True

    def record(self, ok: bool, now: datetime) -> None:
        """The outcome of a call that :meth:`acquire` allowed."""
        self.probe_in_flight = False
        if ok:
            self.state, self.failures, self.open_until = "closed", 0, None
            return
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self.state = "open"
            self.open_until = now + timedelta(seconds=self.cooldown)
            self.opened += 1

    def retry_at(self, now: datetime) -> datetime:
        """When a call refused now may be tried again."""
        if self.state == "open" and self.open_until is not None:
            return max(now, self.open_until)
        return now


def endpoint_of(url: str) -> str:
    """The endpoint a breaker guards: scheme, host and port of the URL."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


class Breakers:
    """One :class:`CircuitBreaker` per endpoint, made on first use."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._by_endpoint: dict[str, CircuitBreaker] = {}

    def for_url(self, url: str) -> CircuitBreaker:
        endpoint = endpoint_of(url)
        breaker = self._by_endpoint.get(endpoint)
        if breaker is None:
            breaker = CircuitBreaker(self.threshold, self.cooldown)
            self._by_endpoint[endpoint] = breaker
        return breaker

    def states(self) -> dict[str, State]:
        return {endpoint: b.state for endpoint, b in self._by_endpoint.items()}
