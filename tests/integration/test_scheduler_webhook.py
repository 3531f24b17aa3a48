"""Webhook deliveries on an injected clock, against a real local HTTP receiver.

Backoff delays come from the manual clock (jitter off, so each next attempt time is
exact); only the HTTP exchanges and the timeout test take real time. Tasks are written
through the event store and projected with the projector's apply step; the scheduler is
fed the resulting ReminderChanges directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import pytest

from core.wire import Notification
from scheduler.delivery import Deliveries
from scheduler.engine import ReminderEngine
from scheduler.options import SchedulerOptions
from scheduler.queries import (
    dead_reminders,
    list_reminders,
    reminder_counts,
    scheduler_diagnostics,
)
from scheduler.testing import WebhookReceiver
from scheduler.webhook import WebhookSender, verify_signature
from tests.conftest import sample
from tests.integration.test_scheduler_engine import T0, World, iso, open_world


@pytest.fixture
async def world(fresh_database: Callable[..., Awaitable[str]]) -> AsyncIterator[World]:
    async with open_world(await fresh_database()) as opened:
        yield opened


SECRET = "whsec-test-0123456789"


def options(**kw: object) -> SchedulerOptions:
    base: dict[str, object] = {
        "backoff_base_seconds": 2.0,
        "backoff_jitter": 0.0,
        "webhook_max_attempts": 5,
        "webhook_timeout_seconds": 2.0,
        "webhook_concurrency": 1,
        "breaker_threshold": 100,
    }
    return SchedulerOptions(**(base | kw))  # type: ignore[arg-type]


class Rig:
    def __init__(self, world: World, receiver: WebhookReceiver, opts: SchedulerOptions) -> None:
        self.world = world
        self.receiver = receiver
        self.sender = WebhookSender(receiver.url, SECRET, timeout=opts.webhook_timeout_seconds)
        self.engine = ReminderEngine(
            pool=world.pool,
            events=world.store,
            clock=world.clock,
            instance="a",
            max_lateness=3600,
            options=opts,
            webhook_enabled=True,
        )
        self.deliveries = Deliveries(
            pool=world.pool,
            sender=self.sender,
            clock=world.clock,
            instance="a",
            options=opts,
            rng=random.Random(7),
        )

    async def fire(self, count: int = 1, late: float = 0) -> list[str]:
        """Fire ``count`` reminders due at T0 + 10 s, ``late`` seconds after that."""
        w = await self.world.writer()
        ids = [await w.task(f"t{i}", iso(10)) for i in range(count)]
        await self.engine.apply_changes(await self.world.project(w))
        self.world.clock.set(T0 + timedelta(seconds=10 + late))
        assert len(await self.engine.drain_due()) == count
        return ids

    async def status(self, rid: str) -> tuple[str, int, str | None]:
        row = await self.world.row(rid)
        return row["status"], row["attempts"], row["last_error"]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as rx:
        yield rx


async def test_fails_three_times_then_succeeds_with_one_idempotency_key(
    world: World, receiver: WebhookReceiver
) -> None:
    receiver.respond = lambda n: 500 if n <= 3 else 204
    rig = Rig(world, receiver, options())
    [rid] = await rig.fire()
    fired_row = await world.row(rid)
    assert (fired_row["status"], fired_row["attempts"]) == ("fired", 0)

    for attempt, wait in enumerate([2.0, 4.0, 8.0], start=1):
        assert await rig.deliveries.deliver_due() == 1
        assert await rig.status(rid) == ("retrying", attempt, "HTTP 500")
        row = await world.row(rid)
        assert row["next_attempt_at"] == world.clock.now() + timedelta(seconds=wait)
        world.clock.advance(wait - 0.001)
        assert await rig.deliveries.deliver_due() == 0  # not yet
        world.clock.advance(0.001)
    assert await rig.deliveries.deliver_due() == 1
    assert await rig.status(rid) == ("fired", 4, None)
    assert (await world.row(rid))["next_attempt_at"] is None
    [info] = (await list_reminders(world.pool, str(fired_row["space_id"]), None, 10, None))[0]
    assert (info.status, info.attempts) == ("fired", 4)

    requests = receiver.requests
    assert [r.headers["idempotency-key"] for r in requests] == [rid] * 4
    assert [r.headers["concord-attempt"] for r in requests] == ["1", "2", "3", "4"]
    assert len({r.body for r in requests}) == 1  # the same body every time
    body = json.loads(requests[0].body)
    assert body["type"] == "reminder_fired"
    assert Notification(**body["notification"]) == Notification(
        id=rid,
        space_id=str(fired_row["space_id"]),
        entity_type="task",
        entity_id="t0",
        kind="reminder",
        fire_at=iso(10),
        fired_at=iso(10),
    )
    assert body["event_seq"] == fired_row["event_seq"]
    assert body["lateness_ms"] == 0
    await rig.sender.close()


async def test_the_body_reports_how_late_the_reminder_fired(
    world: World, receiver: WebhookReceiver
) -> None:
    rig = Rig(world, receiver, options())
    [rid] = await rig.fire(late=2.5)
    assert (await world.row(rid))["lateness_ms"] == 2500
    assert await rig.deliveries.deliver_due() == 1
    body = json.loads(receiver.requests[0].body)
    assert (body["lateness_ms"], body["notification"]["fired_at"]) == (2500, iso(12.5))
    await rig.sender.close()


async def test_a_row_is_leased_for_longer_than_its_request_may_take(
    world: World, receiver: WebhookReceiver
) -> None:
    """While a POST is in flight its row stays claimed past the request's timeout, so
    no other instance can claim it and post the same reminder again meanwhile."""
    arrived = asyncio.Event()

    def hang(n: int) -> None:  # until the timeout
        arrived.set()

    receiver.respond = hang
    opts = options(webhook_timeout_seconds=0.5, lease_seconds=30.0)
    rig = Rig(world, receiver, opts)
    [rid] = await rig.fire()
    attempt = asyncio.create_task(rig.deliveries.deliver_due())
    await asyncio.wait_for(arrived.wait(), 5)
    row = await world.row(rid)
    assert row["claimed_by"] == "a"
    assert row["claim_until"] == world.clock.now() + timedelta(seconds=30.5)
    assert await attempt == 1
    assert await rig.status(rid) == ("retrying", 1, "timeout after 0.5s")
    await rig.sender.close()


async def test_an_endpoint_refusing_connections_is_a_failed_attempt_with_its_error(
    world: World,
) -> None:
    async with WebhookReceiver() as gone:
        pass  # its port was listening, and no longer is
    rig = Rig(world, gone, options())
    [rid] = await rig.fire()
    assert await rig.deliveries.deliver_due() == 1
    status, attempts, error = await rig.status(rid)
    assert (status, attempts) == ("retrying", 1)
    assert error is not None
    assert error.startswith("ConnectError: ")
    assert gone.requests == []
    await rig.sender.close()


async def test_signatures_verify_with_the_shared_secret(
    world: World, receiver: WebhookReceiver
) -> None:
    rig = Rig(world, receiver, options())
    await rig.fire()
    await rig.deliveries.deliver_due()
    [request] = receiver.requests
    timestamp, signature = (
        request.headers["concord-timestamp"],
        request.headers["concord-signature"],
    )
    # The documented recipe, written out independently of scheduler.webhook:
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert signature == "v1=" + expected.hexdigest()
    assert verify_signature(SECRET, timestamp, request.body, signature, now=float(timestamp))
    assert not verify_signature("wrong", timestamp, request.body, signature, now=float(timestamp))
    tampered = request.body.replace(b"reminder", b"Reminder", 1)
    assert not verify_signature(SECRET, timestamp, tampered, signature, now=float(timestamp))
    assert not verify_signature(
        SECRET, timestamp, request.body, signature, now=float(timestamp) + 3600
    )
    await rig.sender.close()


async def test_always_failing_ends_dead_with_its_error(
    world: World, receiver: WebhookReceiver
) -> None:
    receiver.respond = lambda n: 503
    rig = Rig(world, receiver, options(webhook_max_attempts=3))
    [rid] = await rig.fire()
    for _ in range(3):
        await rig.deliveries.deliver_due()
        world.clock.advance(3600)
    assert await rig.status(rid) == ("dead", 3, "HTTP 503")
    assert await rig.deliveries.deliver_due() == 0
    assert len(receiver.requests) == 3
    [dead] = await dead_reminders(world.pool)
    assert (dead.reminder_id, dead.attempts, dead.last_error) == (rid, 3, "HTTP 503")
    counts = await reminder_counts(world.pool, world.clock.now())
    assert counts.by_status["dead"] == 1
    figures = await scheduler_diagnostics(world.pool)
    assert [d.reminder_id for d in figures.dead] == [rid]
    assert figures.reminders.by_status["dead"] == 1
    await rig.sender.close()


async def test_a_hanging_endpoint_is_cut_by_the_timeout(
    world: World, receiver: WebhookReceiver
) -> None:
    receiver.respond = lambda n: None  # never answers
    rig = Rig(world, receiver, options(webhook_timeout_seconds=0.3))
    [rid] = await rig.fire()
    started = time.monotonic()
    assert await rig.deliveries.deliver_due() == 1
    assert time.monotonic() - started < 2.0
    assert await rig.status(rid) == ("retrying", 1, "timeout after 0.3s")
    await rig.sender.close()


async def test_open_circuit_makes_no_calls_then_lets_one_probe_through(
    world: World, receiver: WebhookReceiver
) -> None:
    healthy = False
    receiver.respond = lambda n: 200 if healthy else 500
    opts = options(breaker_threshold=2, breaker_cooldown_seconds=60, backoff_base_seconds=1)
    rig = Rig(world, receiver, opts)
    ids = await rig.fire(3)
    assert await rig.deliveries.drain() == 2  # two failures open the circuit
    assert str(rig.deliveries.breaker.state) == "open"
    assert len(receiver.requests) == 2

    world.clock.advance(30)  # backoffs are over, the cooldown is not
    assert await rig.deliveries.drain() == 0
    assert len(receiver.requests) == 2
    assert await rig.deliveries.next_due() == T0 + timedelta(seconds=70)

    world.clock.advance(31)  # half-open: exactly one probe, which fails
    assert await rig.deliveries.drain() == 1
    assert len(receiver.requests) == 3
    assert str(rig.deliveries.breaker.state) == "open"

    healthy = True
    world.clock.advance(61)  # the next probe succeeds and closes the circuit
    assert await rig.deliveries.drain() == 3
    assert str(rig.deliveries.breaker.state) == "closed"
    assert [(await rig.status(r))[0] for r in ids] == ["fired"] * 3
    await rig.sender.close()


async def test_a_redirect_or_a_300_is_a_failed_attempt_and_is_not_followed(
    world: World, receiver: WebhookReceiver
) -> None:
    """Only a 2xx answer delivers. A redirect is not followed: the configured endpoint
    is the only address the scheduler posts to (a redirect could point it anywhere)."""
    async with WebhookReceiver() as elsewhere:
        receiver.respond = lambda n: 302 if n == 1 else 300
        receiver.location = elsewhere.url
        rig = Rig(world, receiver, options())
        [rid] = await rig.fire()
        assert await rig.deliveries.deliver_due() == 1
        assert await rig.status(rid) == ("retrying", 1, "HTTP 302")
        world.clock.advance(2.0)
        assert await rig.deliveries.deliver_due() == 1
        assert await rig.status(rid) == ("retrying", 2, "HTTP 300")
        assert elsewhere.requests == []
        [first, _] = receiver.requests
        assert first.headers["content-type"] == "application/json"
        assert first.headers["user-agent"] == "concord-scheduler/1"
        await rig.sender.close()


async def test_a_row_claimed_while_the_probe_runs_is_handed_back_untouched(
    world: World, receiver: WebhookReceiver
) -> None:
    """Two rounds start together on a half-open circuit: each may claim one row (the
    probe's budget), but only one call is let through. The other row goes back as it
    was: no request, no attempt counted, no error, unclaimed, due again at once (the
    probe hangs until its timeout, so it is still in flight when the other row comes)."""
    receiver.respond = lambda n: None
    opts = options(
        breaker_threshold=1,
        breaker_cooldown_seconds=60,
        webhook_concurrency=2,
        webhook_timeout_seconds=1.0,
    )
    rig = Rig(world, receiver, opts)
    ids = await rig.fire(2)
    rig.deliveries.breaker.record(False, world.clock.now())  # open, for 60 s
    world.clock.advance(60)
    claimed = await asyncio.gather(rig.deliveries.deliver_due(), rig.deliveries.deliver_due())
    assert list(claimed) == [1, 1]
    assert len(receiver.requests) == 1
    probed = receiver.requests[0].headers["idempotency-key"]
    [other] = [rid for rid in ids if rid != probed]
    assert await rig.status(probed) == ("retrying", 1, "timeout after 1s")
    row = await world.row(other)
    assert (row["status"], row["attempts"], row["last_error"]) == ("fired", 0, None)
    assert (row["claimed_by"], row["claim_until"]) == (None, None)
    assert row["next_attempt_at"] == world.clock.now()
    assert str(rig.deliveries.breaker.state) == "open"  # the probe failed
    await rig.sender.close()


class BrokenSender(WebhookSender):
    """A sender with a bug: it raises something other than DeliveryFailed."""

    async def send(self, reminder_id: str, attempt: int, body: bytes, at: datetime) -> None:
        raise RuntimeError("bug " * 200)


async def test_a_sender_bug_is_a_failed_attempt_with_its_error_recorded(
    world: World, receiver: WebhookReceiver
) -> None:
    opts = options(breaker_threshold=2)
    rig = Rig(world, receiver, opts)
    rig.deliveries.sender = BrokenSender(receiver.url, SECRET, timeout=1.0)
    [rid] = await rig.fire()
    assert await rig.deliveries.deliver_due() == 1
    status, attempts, error = await rig.status(rid)
    assert (status, attempts) == ("retrying", 1)
    assert error == ("RuntimeError: " + "bug " * 200)[:500]
    row = await world.row(rid)
    assert row["claimed_by"] is None  # not left claimed
    breaker = rig.deliveries.breaker
    assert (breaker.failures, breaker.probe_in_flight) == (1, False)
    await rig.sender.close()


async def test_each_outcome_is_counted_and_logged(
    world: World, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(world, receiver, options(webhook_max_attempts=2))
    before = {
        o: sample("concord_reminders_total", outcome=o) for o in ("delivered", "retrying", "dead")
    }
    caplog.set_level(logging.INFO, logger="concord.scheduler")
    dead, delivered = await rig.fire(2)

    def respond(n: int) -> int:
        return 200 if receiver.requests[n - 1].headers["idempotency-key"] == delivered else 503

    receiver.respond = respond
    for _ in range(3):
        await rig.deliveries.deliver_due()
        world.clock.advance(3600)
    assert await rig.status(dead) == ("dead", 2, "HTTP 503")
    assert await rig.status(delivered) == ("fired", 1, None)
    after = {o: sample("concord_reminders_total", outcome=o) - before[o] for o in before}
    assert after == {"delivered": 1, "retrying": 1, "dead": 1}
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("INFO", f"reminder {dead}: webhook attempt 1 failed (HTTP 503)") in lines
    assert ("ERROR", f"reminder {dead}: webhook dead after 2 attempts: HTTP 503") in lines
    await rig.sender.close()


async def test_an_endpoint_answering_too_slowly_is_cut_by_the_timeout(
    world: World, receiver: WebhookReceiver
) -> None:
    """Each byte of the answer comes well within the timeout, the whole answer does not:
    the timeout bounds the whole exchange, not only each read."""
    receiver.drip = 0.1  # a 20-byte body over 2 s
    rig = Rig(world, receiver, options(webhook_timeout_seconds=0.5))
    [rid] = await rig.fire()
    started = time.monotonic()
    assert await rig.deliveries.deliver_due() == 1
    assert time.monotonic() - started < 1.5
    assert await rig.status(rid) == ("retrying", 1, "timeout after 0.5s")
    await rig.sender.close()


async def test_the_timeout_is_the_configured_one_not_the_http_clients_default(
    world: World, receiver: WebhookReceiver
) -> None:
    """httpx cuts a read after 5 s unless told otherwise; an answer that takes longer,
    within `webhook_timeout_seconds`, is delivered."""
    receiver.delay = 5.5
    rig = Rig(world, receiver, options(webhook_timeout_seconds=8.0))
    [rid] = await rig.fire()
    assert await rig.deliveries.deliver_due() == 1
    assert await rig.status(rid) == ("fired", 1, None)
    await rig.sender.close()


async def test_a_slow_answer_within_the_timeout_is_delivered(
    world: World, receiver: WebhookReceiver
) -> None:
    receiver.drip = 0.01  # a 20-byte body over 0.2 s
    rig = Rig(world, receiver, options(webhook_timeout_seconds=2.0))
    [rid] = await rig.fire()
    assert await rig.deliveries.deliver_due() == 1
    assert await rig.status(rid) == ("fired", 1, None)
    await rig.sender.close()


async def test_an_outcome_after_the_claim_passed_to_another_instance_is_dropped_and_logged(
    world: World, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The lease ran out while the POST was in flight (a paused process) and instance b
    claimed the row: a's outcome is not written over b's claim, and a says so."""
    receiver.delay = 0.3
    rig = Rig(world, receiver, options())
    [rid] = await rig.fire()
    caplog.set_level(logging.INFO, logger="concord.scheduler")
    attempt = asyncio.create_task(rig.deliveries.deliver_due())
    for _ in range(500):
        if receiver.requests:
            break
        await asyncio.sleep(0.01)
    await world.pool.execute("UPDATE reminders SET claimed_by = 'b' WHERE reminder_id = $1", rid)
    assert await attempt == 1
    row = await world.row(rid)
    assert (row["status"], row["attempts"], row["claimed_by"]) == ("fired", 0, "b")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert (
        "WARNING",
        f"reminder {rid}: attempt 1 (delivered) not recorded: the claim passed to another "
        "instance, which delivers it again",
    ) in lines
    await rig.sender.close()
