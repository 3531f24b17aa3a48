"""Server events are hinted like pushes: a subscribed device gets `reminder_fired` and
`reminder_skipped` within about a second of their COMMIT, not on the gateway's safety
poll (which this gateway runs only once an hour)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.settings import Settings
from tests.e2e.harness import Device, ServerProcess, op, register

#: A lost hint would be caught up only after this long: far beyond any wait below.
SAFETY_POLL = 3600.0
#: How long after its COMMIT a server event may take to reach a subscribed device.
WITHIN = 1.5


@pytest.fixture
def stack(settings: Settings) -> Iterator[ServerProcess]:
    gateway = ServerProcess(settings, options={"feed_safety_interval": SAFETY_POLL}).start()
    workers = [ServerProcess(settings, command=c) for c in ("projector", "scheduler")]
    for worker in workers:
        worker.start_worker()
    yield gateway
    for worker in workers:
        worker.stop()
    gateway.stop()


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _recorded(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["recorded_at"].replace("Z", "+00:00")).timestamp()


async def _server_events(device: Device, space_id: str, kinds: set[str]) -> dict[str, float]:
    """Read until an event of every kind in ``kinds`` arrived (or 30 s passed); for each
    that did, how long after its COMMIT (``recorded_at``) this device had it."""
    delays: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while not kinds <= delays.keys():
        try:
            message = await device.recv(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        received = time.time()
        if message["type"] != "events" or message["space_id"] != space_id:
            continue
        for event in message["events"]:
            if event["kind"] in kinds:
                delays[event["kind"]] = received - _recorded(event)
    return delays


async def test_reminder_events_reach_devices_by_hint(stack: ServerProcess) -> None:
    acct = await register(stack.url)
    device = await Device.connect(
        stack.ws_url, acct.access_token, [{"space_id": acct.space_id, "after": 0}]
    )
    await device.expect("caught_up")
    now = datetime.now(UTC)
    fires = op(acct.space_id, "t-1", "remind_at", _stamp(now + timedelta(seconds=2)), lamport=1)
    # Two days late is past the default maximum lateness (a day): skipped at once.
    skips = op(acct.space_id, "t-2", "remind_at", _stamp(now - timedelta(days=2)), lamport=1)
    reply = await device.push([fires, skips])
    assert [r["status"] for r in reply["results"]] == ["applied", "applied"]

    delays = await _server_events(device, acct.space_id, {"reminder_fired", "reminder_skipped"})

    assert delays.keys() == {"reminder_fired", "reminder_skipped"}, f"never delivered: {delays}"
    assert max(delays.values()) < WITHIN, delays
    await device.close()
