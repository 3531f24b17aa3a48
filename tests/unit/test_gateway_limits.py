"""The in-process rate limits: sliding windows and token buckets, driven by a fake clock."""

from __future__ import annotations

import pytest

from core.errors import RateLimited
from gateway.limits import (
    LoginThrottle,
    SlidingWindow,
    TokenBuckets,
    address_key,
    push_allowed,
)


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


def _throttle(**overrides: float) -> LoginThrottle:
    settings: dict[str, float] = {
        "address_attempts": 30,
        "address_window": 60.0,
        "pair_failures": 10,
        "pair_window": 900.0,
        "account_failures": 5,
        "account_window": 900.0,
        "delay_base": 0.25,
        "delay_max": 3.0,
    }
    settings.update(overrides)
    return LoginThrottle(**settings)  # type: ignore[arg-type]


def test_login_attempts_per_address_are_limited() -> None:
    throttle = _throttle(address_attempts=5)
    for i in range(5):
        throttle.attempt(email=f"u{i}@x.io", address="1.1.1.1", now=float(i))
    with pytest.raises(RateLimited) as caught:
        throttle.attempt(email=None, address="1.1.1.1", now=4.0)
    assert caught.value.retry_after_ms == 56_000
    throttle.attempt(email=None, address="2.2.2.2", now=4.0)


def test_ten_failures_from_ten_addresses_only_slow_the_account_down() -> None:
    """The old rule locked the account for 15 minutes here, owner included."""
    throttle = _throttle()
    waits = []
    for i in range(10):
        waits.append(throttle.attempt(email="a@x.io", address=f"10.0.0.{i}", now=float(i)))
        throttle.failed("a@x.io", f"10.0.0.{i}", float(i))
    assert waits == [0.0] * 5 + [0.25, 0.5, 1.0, 2.0, 3.0]
    # The owner, from anywhere, waits at most the cap and is then checked.
    assert throttle.attempt(email="a@x.io", address="192.0.2.1", now=10.0) == 3.0
    assert throttle.attempt(email="a@x.io", address="10.0.0.1", now=10.0) == 3.0
    # Other accounts are untouched; the slow-down ages out with the window.
    assert throttle.attempt(email="b@x.io", address="10.0.0.1", now=10.0) == 0.0
    assert throttle.attempt(email="a@x.io", address="192.0.2.1", now=905.5) == 0.0


def test_failures_per_account_and_address_are_limited_for_that_pair_only() -> None:
    throttle = _throttle(account_failures=1_000)
    for t in range(10):
        throttle.attempt(email="a@x.io", address="1.1.1.1", now=float(t))
        throttle.failed("a@x.io", "1.1.1.1", float(t))
    with pytest.raises(RateLimited) as caught:  # even with the right password: no oracle
        throttle.attempt(email="a@x.io", address="1.1.1.1", now=10.0)
    assert caught.value.retry_after_ms == 890_000
    assert throttle.attempt(email="a@x.io", address="2.2.2.2", now=10.0) == 0.0
    assert throttle.attempt(email="b@x.io", address="1.1.1.1", now=10.0) == 0.0
    assert throttle.attempt(email="a@x.io", address="1.1.1.1", now=900.5) == 0.0


def test_success_clears_its_pair_but_not_the_account_slow_down() -> None:
    throttle = _throttle(pair_failures=3, account_failures=2)
    for t in range(3):
        throttle.attempt(email="a@x.io", address="1.1.1.1", now=float(t))
        throttle.failed("a@x.io", "1.1.1.1", float(t))
    with pytest.raises(RateLimited):
        throttle.attempt(email="a@x.io", address="1.1.1.1", now=3.0)
    throttle.succeeded("a@x.io", "1.1.1.1")
    assert throttle.attempt(email="a@x.io", address="1.1.1.1", now=3.0) == 0.5  # 3 failures, 2 free


def test_the_slow_down_never_exceeds_its_cap_and_memory_stays_bounded() -> None:
    throttle = _throttle(account_failures=0, delay_base=0.5, delay_max=4.0)
    for t in range(1000):
        assert throttle.attempt(email="a@x.io", address=f"h{t}", now=t / 100) <= 4.0
        throttle.failed("a@x.io", f"h{t}", t / 100)
    assert len(throttle.accounts._hits["a@x.io"]) <= 5


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("", "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_address_keys(host: str, key: str) -> None:
    assert address_key(host) == key


def test_token_buckets_at_their_key_bound_forget_full_buckets_first() -> None:
    """A new key at ``max_keys`` first drops the buckets that have refilled (they hold
    nothing a new bucket would not), then the oldest; a known key drops nothing."""
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=3)
    for key in ("a", "b", "c"):
        assert buckets.take(key, 0.0) is None  # each has one token left
    assert buckets.take("b", 0.5) is None  # a known key: nothing dropped
    assert list(buckets._buckets) == ["a", "b", "c"]
    # at 1.0, "a" and "c" have refilled to the burst, "b" has 1.0 of 2
    assert buckets.take("d", 1.0) is None
    assert list(buckets._buckets) == ["b", "d"]
    assert buckets._buckets["b"] == (0.5, 0.5)
    # none full: the oldest goes
    for key in ("e", "f"):
        assert buckets.take(key, 1.0) is None
    assert list(buckets._buckets) == ["d", "e", "f"]


def test_a_bucket_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    buckets = TokenBuckets(rate=4.0, burst=2)
    assert buckets.take("d", 10.0, cost=2.0) is None
    assert buckets.take("d", 10.25) is None  # 0.25 s at 4/s: one token
    assert buckets.take("d", 10.25, cost=1.5) == pytest.approx(1.5 / 4)
    assert buckets.take("d", 10.25 + 1.5 / 4, cost=1.5) is None
    assert TokenBuckets(rate=0.0, burst=1).take("d", 0.0, cost=2.0) == 60.0  # never refills


def test_a_sliding_window_at_its_key_bound_forgets_expired_keys_first() -> None:
    window = SlidingWindow(2, 10.0, max_keys=3)
    window.hit("old", 0.0)
    window.hit("a", 5.0)
    window.hit("b", 6.0)
    window.hit("c", 10.0)  # "old" expired at 10: swept, nothing live dropped
    assert sorted(window._hits) == ["a", "b", "c"]
    assert window.count("a", 10.0) == 1
    assert window.count("gone", 10.0) == 0
    window.hit("d", 11.0)  # all live: the oldest key goes
    assert sorted(window._hits) == ["b", "c", "d"]
