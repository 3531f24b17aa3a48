"""``auth-expiry-mid-queue``: 500 queued ops drain across several token expiries.

The device queues 500 ops offline (100 tasks, five ops each), then drains them in
paced pushes of 20 with proactive renewal switched off, so its access token expires
several times under the queue. Each push sent with an expired token must be refused
as a whole (``auth_expired`` for every op, nothing stored); the device renews with an
``auth`` message and resends. At the end every op is stored exactly once and the
device and the server agree on every task.

Needs a server with a short access-token lifetime: ``concord lab`` starts its own with
``CONCORD_ACCESS_TOKEN_TTL=5``; with ``--against``, start that server with
``CONCORD_ACCESS_TOKEN_TTL`` of at most 60 (else the scenario is skipped).
"""

from __future__ import annotations

from collections import Counter

from client import Device, DeviceConfig, FlakyLink
from lab.context import Lab, describe_view, server_view
from lab.metrics import Meter
from lab.report import Report, Skipped

TASKS = 100
MAX_TTL = 60
BATCH = 20
#: The metric that shows refused pushes (see docs/observability.md).
EXPIRED_METRIC = ("concord_auth_failures_total", {"reason": "expired"})


async def run(lab: Lab, report: Report, meter: Meter) -> None:
    account = await lab.account("expiry")
    ttl = lab.access_ttl or 0
    if ttl > MAX_TTL:
        raise Skipped(
            f"this server issues {ttl:.0f}s access tokens; run it with "
            f"CONCORD_ACCESS_TOKEN_TTL<={MAX_TTL} (or run `concord lab` without --against)"
        )
    pushes = 5 * TASKS // BATCH
    interval = max(0.2, 2.5 * ttl / pushes)
    config = DeviceConfig(batch_size=BATCH, push_interval=interval)
    flaky = FlakyLink(proactive_refresh=False)
    async with lab.device(account, "tablet", online=False, config=config, faults=flaky) as tablet:
        space = tablet.personal_space_id
        ids = [f"expiry-{i:03d}" for i in range(TASKS)]
        for n, entity_id in enumerate(ids):
            await tablet.set(space, "task", entity_id, "title", f"Expiring {n}")
            await tablet.set(space, "task", entity_id, "done", n % 2 == 0)
            await tablet.add(space, "task", entity_id, "tags", "queued")
            await tablet.inc(space, "task", entity_id, "pomodoros", n + 1)
            await tablet.set(space, "task", entity_id, "position", f"b{n:04d}")
        queued = {op.op_id for op in tablet.pending()}
        report.say(
            f"{len(queued)} ops queued offline; token lifetime {ttl:.0f}s; draining in "
            f"pushes of {BATCH} every {interval:.2f}s (~{pushes * interval:.0f}s) without renewal"
        )
        tablet.go_online()
        await tablet.sync(within=120 + pushes * interval * 3)
        stats = tablet.stats
        refused = stats.results.get("auth_expired", 0)
        report.say(
            f"drained: {stats.pushes} pushes, results {stats.results}, "
            f"{stats.renewals} renewals, {stats.mixed_pushes} pushes half applied"
        )
        report.expect(refused > 0, "no push met an expired token: the queue drained too fast")
        report.expect(stats.mixed_pushes == 0, "a push was partly applied and partly refused")
        report.expect(not tablet.rejected(), f"ops rejected for good: {tablet.rejected()[:3]}")
        await _check_server(report, lab, tablet, ids, queued)
    await meter.checkpoint()
    report.metric_rose(meter, "concord_ops_total", len(queued), status="applied")
    name, labels = EXPIRED_METRIC
    report.metric_rose(meter, name, 1, **labels)


async def _check_server(
    report: Report, lab: Lab, tablet: Device, ids: list[str], queued: set[str]
) -> None:
    """Every op stored exactly once; device and server agree on every task."""
    space = tablet.personal_space_id
    token = await tablet.token()
    stored = Counter(e.op_id for e in await lab.api.pull_all(token, space) if e.op_id in queued)
    twice = [op_id for op_id, n in stored.items() if n > 1]
    report.say(f"server log: {len(stored)} of {len(queued)} ops stored, {len(twice)} twice")
    report.expect(not twice and len(stored) == len(queued), "ops lost or stored twice")
    for entity_id in ids:
        mine = describe_view(tablet.state(space, "task", entity_id))
        theirs = await server_view(tablet, space, "task", entity_id)
        report.expect(mine == theirs, f"{entity_id}: device {mine} != server {theirs}")
    report.say(f"device and server agree on all {len(ids)} tasks")
