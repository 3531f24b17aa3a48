"""The in-process rate limits: sliding windows and token buckets, driven by a fake clock."""

from __future__ import annotations

import pytest

from core.errors import RateLimited
from gateway.limits import LoginThrottle, SlidingWindow, TokenBuckets, push_allowed


def test_sliding_window_allows_limit_hits_per_window() -> None:
    window = SlidingWindow(3, 10.0)
    for t in (0.0, 1.0, 2.0):
        assert window.retry_after("k", t) is None
        window.hit("k", t)
    assert window.retry_after("k", 5.0) == pytest.approx(5.0)  # the hit at 0 frees at 10
    assert window.retry_after("other", 5.0) is None
    assert window.retry_after("k", 10.0) is None
    window.hit("k", 10.0)
    assert window.retry_after("k", 10.5) == pytest.approx(0.5)  # now the hit at 1 is oldest


def test_sliding_window_reset_and_memory_bound() -> None:
    window = SlidingWindow(1, 10.0, max_keys=3)
    for i in range(10):
        window.hit(f"k{i}", 0.0)
    assert len(window._hits) <= 3
    window.reset("k9")
    assert window.retry_after("k9", 0.0) is None


def test_token_bucket_burst_then_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("d", 0.0) for _ in range(3)] == [None, None, None]
    assert buckets.take("d", 0.0) == pytest.approx(0.5)
    assert buckets.take("d", 0.5) is None  # one token refilled
    assert buckets.take("other", 0.5) is None


def test_push_allowed_raises_rate_limited_with_retry_after() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1)
    push_allowed(buckets, "d", 0.0)
    with pytest.raises(RateLimited) as caught:
        push_allowed(buckets, "d", 0.25)
    assert caught.value.retry_after_ms == 750
    assert caught.value.body().retry_after_ms == 750


def test_login_throttle_counts_failures_per_account_and_attempts_per_address() -> None:
    throttle = LoginThrottle(
        account_failures=2, account_window=60.0, address_attempts=5, address_window=60.0
    )
    for t in (0.0, 1.0):
        throttle.attempt(email="a@x.io", address="1.1.1.1", now=t)
        throttle.failed("a@x.io", t)
    with pytest.raises(RateLimited):
        throttle.attempt(email="a@x.io", address="2.2.2.2", now=2.0)
    throttle.attempt(email="b@x.io", address="1.1.1.1", now=2.0)
    throttle.succeeded("a@x.io")
    throttle.attempt(email="a@x.io", address="1.1.1.1", now=3.0)
    throttle.attempt(email=None, address="1.1.1.1", now=3.0)
    with pytest.raises(RateLimited) as caught:
        throttle.attempt(email="c@x.io", address="1.1.1.1", now=4.0)
    assert caught.value.retry_after_ms == 56_000
