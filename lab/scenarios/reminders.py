"""``missed-reminder``: reminders whose time passed while nothing could fire them.

Against any server: a task whose ``remind_at`` is 30 s in the past (missed while no
scheduler ran) must fire at once, recording its lateness, and notify the connected
device; one three days in the past (beyond ``CONCORD_REMINDER_MAX_LATENESS``, one day
by default) must be recorded as ``reminder_skipped`` (``too_late``) instead.

Against the lab's own server, also the real thing: a reminder is scheduled, the whole
server (gateway, projector, scheduler) is stopped before it is due and started again
after; on recovery it fires once, late, and the device receives the firing through
normal sync.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from client import Device
from core.wire import Event
from lab.context import Lab
from lab.metrics import Meter
from lab.report import Report

LATE_BY = 30.0
SKIPPED_BY = 3 * 86400.0
Seen = dict[str, list[Event]]


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def run(lab: Lab, report: Report, meter: Meter) -> None:
    account = await lab.account("reminder")
    seen: Seen = {}
    async with lab.device(account, "phone") as phone:
        phone.on_event(lambda e: _collect(seen, e))
        space = phone.personal_space_id
        now = time.time()
        late = await _task(phone, space, "remind-late", now - LATE_BY)
        skipped = await _task(phone, space, "remind-skip", now - SKIPPED_BY)
        report.say(f"task remind-late: remind_at {LATE_BY:.0f}s ago; remind-skip: 3 days ago")
        await phone.sync()
        fired = await _wait_event(phone, seen, "remind-late", "reminder_fired")
        _check_fired(report, fired, late, min_lateness=LATE_BY * 1000)
        await _wait_notification(report, phone, late)
        skip = await _wait_event(phone, seen, "remind-skip", "reminder_skipped")
        report.expect(skip.value["reminder_id"] == skipped, f"skipped the wrong reminder: {skip}")
        report.expect(skip.value["reason"] == "too_late", f"skip reason {skip.value['reason']}")
        report.say(f"remind-skip: reminder_skipped (too_late, {skip.value['lateness_ms']} ms late)")
        expected = {"remind-late": "fired", "remind-skip": "skipped"}
        if lab.server.restartable:
            await _downtime(lab, report, meter, phone, seen)
            expected["remind-down"] = "fired"
        await _check_listed(report, lab, phone, expected)
    await meter.checkpoint()
    report.metric_rose(meter, "concord_reminders_total", len(expected) - 1, outcome="fired")
    report.metric_rose(meter, "concord_reminders_total", 1, outcome="skipped")
    report.metric_rose(meter, "concord_reminder_lateness_seconds_count", len(expected) - 1)


async def _check_listed(report: Report, lab: Lab, phone: Device, expected: dict[str, str]) -> None:
    """The server's reminder list (GET /v1/spaces/{id}/reminders) agrees."""
    listed = await lab.api.reminders(await phone.token(), phone.personal_space_id)
    statuses = {r.entity_id: r.status for r in listed}
    report.say(f"server reminders: {statuses}")
    for entity_id, status in expected.items():
        report.expect(statuses.get(entity_id) == status, f"{entity_id}: {statuses}")


def _collect(seen: Seen, event: Event) -> None:
    if event.kind in ("reminder_fired", "reminder_skipped"):
        seen.setdefault(event.entity_id, []).append(event)


async def _task(phone: Device, space: str, entity_id: str, remind_at: float) -> str:
    """A task with a reminder; returns the reminder_id (the op_id of the remind_at set)."""
    await phone.set(space, "task", entity_id, "title", f"{entity_id} (lab)")
    return await phone.set(space, "task", entity_id, "remind_at", rfc3339(remind_at))


async def _wait_event(
    phone: Device, seen: Seen, entity_id: str, kind: str, within: float = 90
) -> Event:
    def found() -> bool:
        return any(e.kind == kind for e in seen.get(entity_id, []))

    if not await phone.engine.wait_until(found, time.monotonic() + within):
        raise AssertionError(f"no {kind} event for {entity_id} within {within:.0f}s")
    return next(e for e in seen[entity_id] if e.kind == kind)


def _check_fired(report: Report, event: Event, reminder_id: str, *, min_lateness: float) -> None:
    value: dict[str, Any] = event.value
    report.expect(value["reminder_id"] == reminder_id, f"fired the wrong reminder: {value}")
    report.expect(
        value["lateness_ms"] >= min_lateness,
        f"{event.entity_id}: lateness {value['lateness_ms']} ms, expected >= {min_lateness:.0f}",
    )
    report.say(f"{event.entity_id}: reminder_fired, {value['lateness_ms']} ms late")


async def _wait_notification(report: Report, phone: Device, reminder_id: str) -> None:
    def arrived() -> bool:
        return any(n.id == reminder_id for n in phone.notifications)

    got = await phone.engine.wait_until(arrived, time.monotonic() + 30)
    report.expect(got, f"no notification for reminder {reminder_id}")
    report.say("the connected phone got the notification")


async def _until_scheduled(
    report: Report, lab: Lab, phone: Device, reminder_id: str, *, until: float
) -> None:
    """Wait until the server lists the reminder as scheduled (the projector and the
    scheduler have seen it); a server that lists no reminders gets until ``until``."""
    space = phone.personal_space_id
    while time.time() < until:
        listed = await lab.api.reminders(await phone.token(), space)
        if any(r.reminder_id == reminder_id and r.status == "scheduled" for r in listed):
            report.say("the server lists remind-down as scheduled")
            return
        await asyncio.sleep(0.2)
    report.say("remind-down not listed by GET /reminders; waited for the pipeline instead")


async def _downtime(lab: Lab, report: Report, meter: Meter, phone: Device, seen: Seen) -> None:
    """Schedule a reminder, stop the whole server before it is due, start it after."""
    space = phone.personal_space_id
    due = time.time() + 15
    reminder_id = await _task(phone, space, "remind-down", due)
    await phone.sync()
    await _until_scheduled(report, lab, phone, reminder_id, until=due - 7)
    await meter.checkpoint()
    stopped = time.time()
    report.expect(stopped < due - 2, "the reminder was scheduled too late to be missed")
    await lab.server.stop_backend()
    report.say(f"server stopped {due - stopped:.1f}s before remind-down was due")
    await asyncio.sleep(max(0.0, due + 3 - time.time()))
    await lab.server.start_backend()
    report.say(f"server started again {time.time() - due:.1f}s after the reminder was due")
    fired = await _wait_event(phone, seen, "remind-down", "reminder_fired")
    _check_fired(report, fired, reminder_id, min_lateness=3000)
    history = await lab.api.history(await phone.token(), space, "task", "remind-down")
    firings = [e for e in history if e.kind == "reminder_fired"]
    report.expect(len(firings) == 1, f"remind-down fired {len(firings)} times")
    report.say("remind-down fired exactly once, on recovery, and reached the phone by sync")
