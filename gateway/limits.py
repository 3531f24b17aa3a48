"""In-process rate limits: a sliding window (logins) and token buckets (pushes).

Both are per gateway process and keyed by strings; time is passed in (``now``, a
monotonic clock in seconds), so they are plain data structures that unit tests drive
directly. Memory is bounded: keys with nothing left to remember are swept, and past
``max_keys`` the oldest keys are forgotten (which can only make a limit more lenient).
"""

from __future__ import annotations

import math
from collections import deque

from core.errors import RateLimited


def _retry_ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class SlidingWindow:
    """At most ``limit`` hits per key within any ``window`` seconds."""

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def _live(self, key: str, now: float) -> deque[float] | None:
        hits = self._hits.get(key)
        if hits is None:
            return None
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return None
        return hits

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until ``key`` may hit again, or None when it may now."""
        hits = self._live(key, now)
        if hits is None or len(hits) < self.limit:
            return None
        return hits[-self.limit] + self.window - now

    def hit(self, key: str, now: float) -> None:
        hits = self._live(key, now)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._sweep(now)
            hits = self._hits[key] = deque()
        hits.append(now)
        while len(hits) > self.limit:
            hits.popleft()

    def reset(self, key: str) -> None:
        self._hits.pop(key, None)

    def _sweep(self, now: float) -> None:
        for key in list(self._hits):
            self._live(key, now)
        while len(self._hits) >= self.max_keys:
            del self._hits[next(iter(self._hits))]


class TokenBuckets:
    """A token bucket per key: ``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float, cost: float = 1.0) -> float | None:
        """Take ``cost`` tokens; None when granted, else seconds until they would be."""
        tokens, stamp = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens >= cost:
            if key not in self._buckets and len(self._buckets) >= self.max_keys:
                self._sweep(now)
            self._buckets[key] = (tokens - cost, now)
            return None
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.rate if self.rate > 0 else 60.0

    def _sweep(self, now: float) -> None:
        full = [k for k, (t, s) in self._buckets.items() if t + (now - s) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]


class LoginThrottle:
    """Failed logins per account and attempts per client address (docs/auth.md)."""

    def __init__(
        self,
        *,
        account_failures: int,
        account_window: float,
        address_attempts: int,
        address_window: float,
    ) -> None:
        self.accounts = SlidingWindow(account_failures, account_window)
        self.addresses = SlidingWindow(address_attempts, address_window)

    def attempt(self, *, email: str | None, address: str, now: float) -> None:
        """Count one attempt from ``address``; raise 429 when either limit is reached."""
        waits = [self.addresses.retry_after(address, now)]
        if email is not None:
            waits.append(self.accounts.retry_after(email, now))
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            raise RateLimited("too many attempts; slow down", retry_after_ms=_retry_ms(wait))
        self.addresses.hit(address, now)

    def failed(self, email: str, now: float) -> None:
        self.accounts.hit(email, now)

    def succeeded(self, email: str) -> None:
        self.accounts.reset(email)


def push_allowed(buckets: TokenBuckets, device_id: str, now: float) -> None:
    """Raise 429 ``rate_limited`` when the device's push bucket is empty."""
    wait = buckets.take(device_id, now)
    if wait is not None:
        raise RateLimited("too many pushes from this device", retry_after_ms=_retry_ms(wait))
