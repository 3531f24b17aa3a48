"""In-process rate limits: sliding windows (logins) and token buckets (pushes).

Both are per gateway process and keyed by strings; time is passed in (``now``, a
monotonic clock in seconds), so they are plain data structures that unit tests drive
directly. Memory is bounded: keys with nothing left to remember are swept, and past
``max_keys`` the oldest keys are forgotten (which can only make a limit more lenient).
"""

from __future__ import annotations

import ipaddress
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

    def count(self, key: str, now: float) -> int:
        """Hits of ``key`` within the window (at most ``limit``: older ones are dropped)."""
        hits = self._live(key, now)
        return 0 if hits is None else len(hits)

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


def address_key(host: str) -> str:
    """The client address as the login limits count it: an IPv4 address as such (also
    when IPv4-mapped), an IPv6 address as its /64, which one subscriber usually holds
    whole (counting single IPv6 addresses would give one client 2^64 allowances)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class LoginThrottle:
    """The login rules of docs/auth.md, "Throttling":

    * per client address, at most ``address_attempts`` login and register attempts per
      ``address_window``, then 429;
    * per (account, address), at most ``pair_failures`` failed logins per
      ``pair_window``, then 429 for that pair only (even with the right password, so
      the answer never tells a guess was right);
    * per account, from any address: the first ``account_failures`` failures within
      ``account_window`` cost nothing; then every attempt waits ``delay_base`` *
      2^(failures - ``account_failures``) seconds, at most ``delay_max``, before its
      password is checked. Never a 429: the owner's right password is checked, at
      worst ``delay_max`` later, however many addresses guess wrong.
    """

    def __init__(
        self,
        *,
        address_attempts: int,
        address_window: float,
        pair_failures: int,
        pair_window: float,
        account_failures: int,
        account_window: float,
        delay_base: float,
        delay_max: float,
    ) -> None:
        self.addresses = SlidingWindow(address_attempts, address_window)
        self.pairs = SlidingWindow(pair_failures, pair_window)
        self.free_failures = account_failures
        self.delay_base = delay_base
        self.delay_max = delay_max
        # Enough failures are remembered to reach the cap; more would change nothing.
        doublings = math.ceil(math.log2(max(delay_max / delay_base, 1.0))) if delay_base else 0
        self.accounts = SlidingWindow(account_failures + doublings + 1, account_window)

    @staticmethod
    def _pair(email: str, address: str) -> str:
        return f"{email}\x00{address}"

    def attempt(self, *, email: str | None, address: str, now: float) -> float:
        """Count one attempt from ``address``: 429 when the address or the (account,
        address) pair is over its limit; else the seconds to wait before checking."""
        waits = [self.addresses.retry_after(address, now)]
        if email is not None:
            waits.append(self.pairs.retry_after(self._pair(email, address), now))
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            raise RateLimited("too many attempts; slow down", retry_after_ms=_retry_ms(wait))
        self.addresses.hit(address, now)
        return 0.0 if email is None else self.delay(email, now)

    def delay(self, email: str, now: float) -> float:
        """The account-wide slow-down: seconds an attempt on ``email`` waits now."""
        excess = self.accounts.count(email, now) - self.free_failures
        if excess < 0 or self.delay_base <= 0:
            return 0.0
        return float(min(self.delay_max, self.delay_base * 2.0**excess))

    def failed(self, email: str, address: str, now: float) -> None:
        self.pairs.hit(self._pair(email, address), now)
        self.accounts.hit(email, now)

    def succeeded(self, email: str, address: str) -> None:
        """The right password clears its pair's failures. The account-wide count stays:
        an attack from elsewhere goes on being slowed down, and it ages out by itself."""
        self.pairs.reset(self._pair(email, address))


def push_allowed(buckets: TokenBuckets, device_id: str, now: float) -> None:
    """Raise 429 ``rate_limited`` when the device's push bucket is empty."""
    wait = buckets.take(device_id, now)
    if wait is not None:
        raise RateLimited("too many pushes from this device", retry_after_ms=_retry_ms(wait))
