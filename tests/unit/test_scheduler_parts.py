"""Pure parts of the scheduler: time formats, backoff, the circuit breaker, cursors,
options, the fault hook and the reading of ReminderChange."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import BadMessage
from core.events import ReminderChange
from core.settings import SettingsError
from scheduler.breaker import Breakers, CircuitBreaker, endpoint_of
from scheduler.clock import ManualClock, format_time, millis, parse_time
from scheduler.faults import Faults
from scheduler.options import SchedulerOptions, options_from_env
from scheduler.queries import decode_cursor, encode_cursor
from scheduler.store import TaskState
from scheduler.webhook import backoff_seconds, sign, verify_signature

T = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("2030-01-01T10:00:00Z", "2030-01-01T10:00:00Z"),
        ("2030-01-01T10:00:00.000Z", "2030-01-01T10:00:00Z"),
        ("2030-01-01T10:00:00.25Z", "2030-01-01T10:00:00.250000Z"),
        ("2030-01-01T10:00:00.123456789Z", "2030-01-01T10:00:00.123456Z"),
        ("0999-12-31T23:59:59Z", "0999-12-31T23:59:59Z"),
    ],
)
def test_times_normalise_to_rfc3339_utc_with_z(text: str, normal: str) -> None:
    assert format_time(parse_time(text)) == normal


@pytest.mark.parametrize(
    "bad", ["2030-01-01T10:00:00", "2030-01-01T10:00:00+00:00", "2030-02-30T10:00:00Z", "x"]
)
def test_parse_time_refuses_what_is_not_a_utc_instant(bad: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse_time(bad)


def test_millis_floors_and_manual_clock_moves_only_when_told() -> None:
    assert millis(timedelta(seconds=1, microseconds=999)) == 1000
    assert millis(timedelta(days=1, milliseconds=5)) == 86_400_005
    clock = ManualClock(T)
    assert clock.now() == T
    assert clock.advance(1.5) == T + timedelta(seconds=1.5)


def test_backoff_doubles_caps_and_jitters_within_bounds() -> None:
    flat = SchedulerOptions(backoff_base_seconds=1, backoff_max_seconds=10, backoff_jitter=0)
    rng = random.Random(1)
    assert [backoff_seconds(n, flat, rng) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    jittered = SchedulerOptions(backoff_base_seconds=1, backoff_jitter=0.5)
    delays = [backoff_seconds(3, jittered, rng) for _ in range(200)]
    assert all(4 <= d <= 6 for d in delays)
    assert len(set(delays)) > 100  # actually random
    assert backoff_seconds(10_000, flat, rng) == 10  # no overflow


def state(breaker: CircuitBreaker) -> str:
    return breaker.state  # (a call: mypy would keep the attribute narrowed)


def test_breaker_opens_after_threshold_and_probes_once() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=60)
    for _ in range(2):
        assert breaker.acquire(T)
        breaker.record(False, T)
    assert state(breaker) == "closed"
    assert breaker.acquire(T)
    breaker.record(False, T)
    assert state(breaker) == "open"
    assert breaker.budget(T) == 0
    assert not breaker.acquire(T + timedelta(seconds=59))
    assert breaker.retry_at(T) == T + timedelta(seconds=60)

    later = T + timedelta(seconds=60)
    assert breaker.budget(later) == 1
    assert breaker.acquire(later)  # the probe
    assert state(breaker) == "half_open"
    assert not breaker.acquire(later)  # only one at a time
    breaker.record(False, later)
    assert state(breaker) == "open"
    assert breaker.open_until == later + timedelta(seconds=60)

    again = later + timedelta(seconds=60)
    assert breaker.acquire(again)
    breaker.record(True, again)
    assert (state(breaker), breaker.failures, breaker.budget(again)) == ("closed", 0, None)


def test_the_budget_follows_the_probe_and_each_opening_is_counted() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=10)
    assert (breaker.budget(T), breaker.opened) == (None, 0)
    breaker.record(False, T)
    assert (breaker.budget(T), breaker.opened) == (0, 1)
    later = T + timedelta(seconds=10)
    assert breaker.retry_at(T) == later
    assert breaker.retry_at(later + timedelta(seconds=5)) == later + timedelta(seconds=5)
    assert breaker.acquire(later)  # the probe: half-open, and no budget left while it runs
    assert (state(breaker), breaker.budget(later)) == ("half_open", 0)
    assert breaker.retry_at(later) == later  # not open: a refused call may retry at once
    breaker.record(False, later)  # a failed probe opens it again, and is counted
    assert (state(breaker), breaker.opened, breaker.failures) == ("open", 2, 2)
    assert breaker.acquire(later + timedelta(seconds=10))
    breaker.record(True, later + timedelta(seconds=10))
    assert (breaker.opened, breaker.probe_in_flight, breaker.open_until) == (2, False, None)


def test_a_closed_breaker_lets_any_number_of_calls_through_at_once() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=10)
    assert all(breaker.acquire(T) for _ in range(5))
    breaker.record(False, T)
    assert (state(breaker), breaker.acquire(T)) == ("closed", True)


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=1)
    breaker.record(False, T)
    breaker.record(True, T)
    breaker.record(False, T)
    assert state(breaker) == "closed"


def test_breakers_are_per_endpoint() -> None:
    assert endpoint_of("https://example.com/a?b") == "https://example.com:443"
    assert endpoint_of("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080"
    breakers = Breakers(threshold=1, cooldown=10)
    breakers.for_url("http://a.test/one").record(False, T)
    assert breakers.for_url("http://a.test/two").state == "open"
    assert breakers.for_url("http://b.test/one").state == "closed"
    assert breakers.states() == {"http://a.test:80": "open", "http://b.test:80": "closed"}


def test_signature_is_hmac_of_timestamp_dot_body() -> None:
    body = b'{"x":1}'
    signature = sign("s3cret", 1700000000, body)
    assert signature.startswith("v1=")
    assert len(signature) == 3 + 64
    assert verify_signature("s3cret", "1700000000", body, signature, now=1700000100)
    assert not verify_signature("s3cret", "1700000001", body, signature, now=1700000100)
    assert not verify_signature("s3cret", "soon", body, signature, now=1700000100)
    # a request is accepted up to 300 s either side of the receiver's clock, not after
    for skew, ok in [(300, True), (-300, True), (300.5, False), (-301, False)]:
        assert (
            verify_signature("s3cret", "1700000000", body, signature, now=1700000000 + skew) is ok
        )


def test_cursor_round_trips_and_refuses_garbage() -> None:
    rid = "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"
    at = datetime(2030, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, rid)) == (at, rid)
    for bad in ["", "!!!", encode_cursor(at, rid)[:-4], "MTIzOm5vdC1hLXV1aWQ"]:
        with pytest.raises(BadMessage):
            decode_cursor(bad)


def test_options_come_from_one_json_variable() -> None:
    assert options_from_env({}) == SchedulerOptions()
    opts = options_from_env({"CONCORD_SCHEDULER_OPTIONS": '{"webhook_max_attempts": 4}'})
    assert opts.webhook_max_attempts == 4
    for bad in ['{"nope": 1}', "{", '{"lease_seconds": 0}', '{"claim_batch": "x"}']:
        with pytest.raises(SettingsError, match="CONCORD_SCHEDULER_OPTIONS"):
            options_from_env({"CONCORD_SCHEDULER_OPTIONS": bad})


def test_fault_points_are_named_and_checked() -> None:
    assert Faults.from_env({}).armed == frozenset()
    assert Faults.from_env({"CONCORD_TEST_FAULT": "after_fire_append"}).armed == {
        "after_fire_append"
    }
    Faults().point("after_fire_append")  # not armed: returns
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.from_env({"CONCORD_TEST_FAULT": "typo"})


def _change(**kw: object) -> ReminderChange:
    base: dict[str, object] = {
        "space_id": "0d8c7a3e-0000-4000-8000-000000000001",
        "entity_type": "task",
        "entity_id": "t1",
        "seq": 5,
        "reminder_id": "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01",
        "remind_at": "2030-01-01T10:00:00Z",
        "done": False,
        "deleted": False,
    }
    return ReminderChange(**(base | kw))  # type: ignore[arg-type]


def test_a_task_state_is_active_only_with_a_reminder_not_done_not_deleted() -> None:
    state = TaskState.from_change(_change())
    assert (state.active, state.fire_at) == (True, T)
    assert not TaskState.from_change(_change(done=True)).active
    assert not TaskState.from_change(_change(deleted=True)).active
    cleared = TaskState.from_change(_change(reminder_id=None, remind_at=None))
    assert (cleared.active, cleared.reminder_id, cleared.fire_at) == (False, None, None)
    with pytest.raises(ValueError, match="RFC 3339"):
        TaskState.from_change(_change(remind_at="tomorrow"))
