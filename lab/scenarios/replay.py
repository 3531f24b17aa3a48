"""``offline-replay``: 200 tasks made offline, sent over a link that loses answers.

The phone queues 200 tasks (a title and a position each) while offline, then comes
online on a flaky link: some ``push_result`` messages are dropped and the link is cut
right after some pushes. The phone cannot know those pushes were stored, so it resends
the same op_ids after reconnecting; the server must answer ``duplicate``, store each op
once, and lose none. A second device then shows all 200 tasks.
"""

from __future__ import annotations

from collections import Counter

from client import DeviceConfig, FlakyLink
from lab.context import Lab
from lab.metrics import Meter
from lab.report import Report

TASKS = 200


async def run(lab: Lab, report: Report, meter: Meter) -> None:
    account = await lab.account("replay")
    flaky = FlakyLink(drop_results=3, cut_after_send=2)
    config = DeviceConfig(batch_size=40)
    async with lab.device(account, "phone", online=False, config=config, faults=flaky) as phone:
        space = phone.personal_space_id
        for i in range(TASKS):
            await phone.set(space, "task", f"replay-{i:03d}", "title", f"Task {i}")
            await phone.set(space, "task", f"replay-{i:03d}", "position", f"a{i:04d}")
        queued = {op.op_id for op in phone.pending()}
        report.say(f"phone offline: {TASKS} tasks created, {len(queued)} ops queued")
        report.say("phone online on a flaky link: 3 push_results dropped, 2 links cut after send")
        phone.go_online()
        await phone.sync(within=180)
        stats = phone.stats
        report.say(
            f"queue drained: {stats.pushes} pushes, {stats.results_dropped} answers lost, "
            f"{stats.links_cut} links cut, {stats.reconnects} reconnects, results {stats.results}"
        )
        report.expect(not phone.pending(), f"{len(phone.pending())} ops still queued")
        report.expect(not phone.rejected(), f"rejected: {phone.rejected()[:3]}")
        report.expect(stats.results.get("duplicate", 0) > 0, "no op was resent as a duplicate")
        token = await phone.token()
        events = await lab.api.pull_all(token, space)
    stored = Counter(e.op_id for e in events if e.op_id in queued)
    twice = [op_id for op_id, n in stored.items() if n > 1]
    missing = queued - stored.keys()
    report.say(f"server log: {len(stored)} of {len(queued)} ops stored, {len(twice)} twice")
    report.expect(not twice, f"ops stored twice: {twice[:3]}")
    report.expect(not missing, f"{len(missing)} ops missing on the server")
    async with lab.device(account, "laptop") as laptop:
        await laptop.sync(within=120)
        shown = [laptop.state(space, "task", f"replay-{i:03d}") for i in range(TASKS)]
        wrong = [
            i
            for i, view in enumerate(shown)
            if view is None or view.fields["title"].value != f"Task {i}"
        ]
        report.say(f"laptop after sync: {TASKS - len(wrong)} of {TASKS} tasks, titles right")
        report.expect(not wrong, f"laptop misses or garbles tasks {wrong[:5]}")
    await meter.checkpoint()
    report.metric_rose(meter, "concord_ops_total", 1, status="duplicate")
    report.metric_rose(meter, "concord_ops_total", len(queued), status="applied")
