"""``multi-device-conflict``: a phone and a laptop edit the same tasks offline.

Both devices start from the same tasks, go offline, and each edits every task: a new
title (lww), an assignee (mv) and a tag (set). They reconnect one after the other, in
both orders (round A: phone first; round B: laptop first). Afterwards both devices and
the server must show the same state: one title winning by order key with both heads
listed, the assignee holding both values until a device resolves it, both tags. The
server counts each concurrent ``set`` in ``concord_conflicts_total`` per field.
"""

from __future__ import annotations

from client import Device
from lab.context import Lab, describe_view, server_view
from lab.metrics import Meter
from lab.report import Report

TASKS = 5


async def run(lab: Lab, report: Report, meter: Meter) -> None:
    account = await lab.account("conflict")
    async with lab.device(account, "phone") as phone, lab.device(account, "laptop") as laptop:
        space = phone.personal_space_id
        laptop.subscribe(space)
        for label, first, second in (("A", phone, laptop), ("B", laptop, phone)):
            ids = [f"conflict-{label}-{i}" for i in range(TASKS)]
            await _round(report, space, ids, phone, laptop, first, second, label)
            await _check_converged(report, space, ids, phone, laptop)
        await _resolve(report, space, "conflict-A-0", phone, laptop)
    await meter.checkpoint()
    report.metric_rose(
        meter, "concord_conflicts_total", 2 * TASKS, entity_type="task", field="title"
    )
    report.metric_rose(
        meter, "concord_conflicts_total", 2 * TASKS, entity_type="task", field="assignee"
    )


async def _round(
    report: Report,
    space: str,
    ids: list[str],
    phone: Device,
    laptop: Device,
    first: Device,
    second: Device,
    label: str,
) -> None:
    for entity_id in ids:
        await phone.set(space, "task", entity_id, "title", f"{entity_id} draft")
    await phone.sync()
    await laptop.sync()
    await phone.go_offline()
    await laptop.go_offline()
    for device, name, who in ((phone, "phone", "ana"), (laptop, "laptop", "ben")):
        for entity_id in ids:
            await device.set(space, "task", entity_id, "title", f"{entity_id} by {name}")
            await device.set(space, "task", entity_id, "assignee", who)
            await device.add(space, "task", entity_id, "tags", name)
    names = ("phone", "laptop") if first is phone else ("laptop", "phone")
    report.say(f"round {label}: both offline edited {len(ids)} tasks; {names[0]} reconnects first")
    first.go_online()
    await first.sync()
    second.go_online()
    await second.sync()
    await first.sync()


async def _check_converged(
    report: Report, space: str, ids: list[str], phone: Device, laptop: Device
) -> None:
    for entity_id in ids:
        on_phone = describe_view(phone.state(space, "task", entity_id))
        on_laptop = describe_view(laptop.state(space, "task", entity_id))
        on_server = await server_view(phone, space, "task", entity_id)
        report.expect(on_phone == on_laptop, f"{entity_id}: phone {on_phone} != laptop {on_laptop}")
        report.expect(
            on_phone == on_server, f"{entity_id}: devices {on_phone} != server {on_server}"
        )
        view = phone.state(space, "task", entity_id)
        assert view is not None
        title, assignee, tags = (view.fields[f] for f in ("title", "assignee", "tags"))
        report.expect(bool(title.conflicted), f"{entity_id}: title shows no conflict")
        report.expect(
            sorted(assignee.value) == ["ana", "ben"],
            f"{entity_id}: assignee {assignee.value}, expected both values",
        )
        report.expect(sorted(tags.value) == ["laptop", "phone"], f"{entity_id}: tags {tags.value}")
    sample = phone.state(space, "task", ids[0])
    assert sample is not None
    report.say(
        f"converged on phone, laptop and server: title {sample.fields['title'].value!r} "
        f"(2 heads), assignee {sample.fields['assignee'].value}, tags {sample.fields['tags'].value}"
    )


async def _resolve(
    report: Report, space: str, entity_id: str, phone: Device, laptop: Device
) -> None:
    """A set naming every head ends the conflict on every device."""
    await phone.set(space, "task", entity_id, "assignee", "ana")
    await phone.sync()
    await laptop.sync()
    for device in (phone, laptop):
        view = device.state(space, "task", entity_id)
        assert view is not None
        assignee = view.fields["assignee"]
        report.expect(
            assignee.value == ["ana"] and not assignee.conflicted,
            f"{entity_id}: assignee {assignee.value} after resolving",
        )
    on_server = await server_view(phone, space, "task", entity_id)
    report.expect(
        on_server["fields"]["assignee"][0] == ["ana"], f"server assignee {on_server['fields']}"
    )
    report.say(f"{entity_id}: phone resolved the assignee to ['ana']; laptop and server agree")
