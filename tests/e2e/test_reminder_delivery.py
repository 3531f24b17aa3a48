"""A reminder reaches a subscribed device: the `notification` and the `reminder_fired`
event, through real gateway, projector and scheduler processes (docs/protocol.md section 7)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.settings import Settings
from scheduler.clock import parse_time
from tests.e2e.harness import Device, ServerProcess, http, op, register


@pytest.fixture
def stack(settings: Settings) -> Iterator[ServerProcess]:
    gateway = ServerProcess(settings).start()
    workers = [ServerProcess(settings, command=c) for c in ("projector", "scheduler")]
    for worker in workers:
        worker.start_worker()
    yield gateway
    for worker in workers:
        worker.stop()
    gateway.stop()


async def test_device_receives_notification_and_event(stack: ServerProcess) -> None:
    acct = await register(stack.url)
    device = await Device.connect(
        stack.ws_url, acct.access_token, [{"space_id": acct.space_id, "after": 0}]
    )
    await device.expect("caught_up")
    due = datetime.now(UTC) + timedelta(seconds=2)
    remind_at = due.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    reply = await device.push([op(acct.space_id, "t-1", "remind_at", remind_at, lamport=1)])
    reminder_id = reply["results"][0]["op_id"]

    note = (await device.expect("notification", within=30))["notification"]
    received = time.time()
    assert note["id"] == reminder_id
    assert (note["space_id"], note["entity_type"], note["entity_id"]) == (
        acct.space_id, "task", "t-1",
    )  # fmt: skip
    assert note["kind"] == "reminder"
    assert note["fire_at"].endswith("Z")
    assert received >= due.timestamp() - 0.05  # never early (clock skew allowance)

    fired: dict[str, Any] | None = None
    while fired is None:
        events = device.events.get(acct.space_id, [])
        fired = next((e for e in events if e["kind"] == "reminder_fired"), None)
        if fired is None:
            await device.expect("events", within=15)
    value = fired["value"]
    assert value["reminder_id"] == reminder_id
    # Never early, and the lateness is what the event's own times say.
    late = parse_time(value["fired_at"]) - parse_time(value["fire_at"])
    assert late >= timedelta(0), value
    assert value["lateness_ms"] == late // timedelta(milliseconds=1), value
    listed = await http(
        stack.url, "GET", f"/v1/spaces/{acct.space_id}/reminders", acct.access_token
    )
    (row,) = listed.json()["reminders"]
    assert (row["reminder_id"], row["status"]) == (reminder_id, "fired")
    assert row["lateness_ms"] == value["lateness_ms"]
    assert row["lateness_ms"] < 10_000  # generous: the precision is benchmarked
    await device.close()
