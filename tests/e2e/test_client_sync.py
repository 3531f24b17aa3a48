"""The SDK against a real gateway: permanent rejections, convergence after long offline
edits, a flaky link, and a queue draining across token expiries."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client import Device, DeviceConfig, FlakyLink
from core.settings import Settings
from lab.context import describe_view, server_view
from lab.metrics import SampleKey, scrape
from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import GatewayProcess
from tests.e2e.harness import ServerProcess, register

TASKS = [f"long-{i:02d}" for i in range(12)]


def rejected_ops(values: dict[SampleKey, float]) -> float:
    return values.get(("concord_ops_total", (("status", "rejected"),)), 0.0)


async def stored_once(device: Device, op_ids: set[str]) -> None:
    token = await device.token()
    events = await device.api.pull_all(token, device.personal_space_id)
    stored = Counter(e.op_id for e in events if e.op_id in op_ids)
    assert set(stored) == op_ids, f"{len(op_ids - set(stored))} ops missing"
    assert set(stored.values()) == {1}, "an op was stored twice"


async def test_a_permanently_rejected_op_is_reported_and_never_retried(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    base = gateway.base_url
    account = await register(base)
    before = rejected_ops((await scrape(base, TEST_ADMIN_TOKEN)).values)
    async with Device.open(
        base, tmp_path / "phone.db", email=account.email, password=account.password
    ) as phone:
        space = phone.personal_space_id
        await phone.set(space, "task", "t-1", "title", "kept")
        bad = await phone.set(space, "task", "t-1", "done", "not a boolean")
        await phone.add(space, "task", "t-1", "tags", "kept too")
        view = phone.state(space, "task", "t-1")
        assert view is not None
        assert "done" in view.fields  # shown optimistically until the server answers
        await phone.sync()
        assert [(r.op.op_id, r.code) for r in phone.rejected()] == [(bad, "type_mismatch")]
        assert phone.pending() == []
        view = phone.state(space, "task", "t-1")
        assert view is not None
        assert set(view.fields) == {"title", "tags"}
        await asyncio.sleep(2)
        await phone.sync()
    async with Device.open(base, tmp_path / "phone.db") as again:  # the stored session
        assert [r.op.op_id for r in again.rejected()] == [bad]
        assert again.pending() == []
        await again.sync()
    after = rejected_ops((await scrape(base, TEST_ADMIN_TOKEN)).values)
    assert after - before == 1  # answered once, never sent again


async def _edit(device: Device, space: str, rng: random.Random, n: int) -> None:
    for _ in range(n):
        task = rng.choice(TASKS)
        choice = rng.randrange(7)
        if choice == 0:
            await device.set(space, "task", task, "title", f"{task} {rng.random():.4f}")
        elif choice == 1:
            await device.set(space, "task", task, "assignee", rng.choice(["ana", "ben", None]))
        elif choice == 2:
            await device.add(space, "task", task, "tags", rng.choice(["a", "b", "c"]))
        elif choice == 3:
            await device.remove(space, "task", task, "tags", rng.choice(["a", "b", "c"]))
        elif choice == 4:
            await device.inc(space, "task", task, "pomodoros", rng.randint(-3, 5))
        elif choice == 5:
            await device.set(space, "task", task, "done", rng.random() < 0.5)
        else:
            kind = rng.choice(["delete", "restore"])
            await (device.delete if kind == "delete" else device.restore)(space, "task", task)


@pytest.mark.timeout(180)
async def test_devices_converge_after_long_offline_edits(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    base = gateway.base_url
    account = await register(base)
    rng = random.Random(20261123)
    async with (
        Device.open(
            base,
            tmp_path / "phone.db",
            device_name="phone",
            email=account.email,
            password=account.password,
        ) as phone,
        Device.open(
            base,
            tmp_path / "laptop.db",
            device_name="laptop",
            email=account.email,
            password=account.password,
        ) as laptop,
    ):
        space = phone.personal_space_id
        for task in TASKS:
            await phone.set(space, "task", task, "title", task)
        await phone.sync()
        await laptop.sync()
        await laptop.go_offline()
        for _ in range(5):  # the phone keeps syncing while the laptop is away
            await _edit(phone, space, rng, 30)
            await phone.sync()
            await _edit(laptop, space, rng, 30)
        assert len(laptop.pending()) >= 150
        laptop.go_online()
        await laptop.sync(within=90)
        await phone.sync(within=90)
        for task in TASKS:
            on_phone = describe_view(phone.state(space, "task", task))
            on_laptop = describe_view(laptop.state(space, "task", task))
            assert on_phone == on_laptop, task
            assert on_phone == await server_view(phone, space, "task", task), task
        assert laptop.rejected() == []
        assert phone.rejected() == []


@pytest.mark.timeout(120)
async def test_a_flaky_link_loses_answers_but_no_op(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    base = gateway.base_url
    account = await register(base)
    flaky = FlakyLink(drop_results=2, cut_after_send=2)
    config = DeviceConfig(batch_size=8, msgpack=True)
    async with Device.open(
        base,
        tmp_path / "p.db",
        online=False,
        config=config,
        faults=flaky,
        email=account.email,
        password=account.password,
    ) as phone:
        space = phone.personal_space_id
        for i in range(60):
            await phone.inc(space, "task", f"f-{i % 6}", "pomodoros", 1)
        queued = {op.op_id for op in phone.pending()}
        phone.go_online()
        await phone.sync()
        assert phone.stats.results_dropped == 2
        assert phone.stats.links_cut == 2
        assert phone.stats.results.get("duplicate", 0) > 0
        await stored_once(phone, queued)
        for i in range(6):
            view = phone.state(space, "task", f"f-{i}")
            assert view is not None
            assert view.fields["pomodoros"].value == 10  # each inc counted once


@pytest.fixture(scope="module")
async def short_ttl(settings: Settings) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(settings, env={"CONCORD_ACCESS_TOKEN_TTL": "3"})
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("proactive", [False, True])
async def test_a_queue_drains_across_token_expiries(
    short_ttl: ServerProcess, tmp_path: Path, proactive: bool
) -> None:
    account = await register(short_ttl.url)
    # 12 pushes 0.5 s apart take about 6 s, twice the 3 s token life: the queue meets an
    # expiry whatever the token's age when the link comes up (at 0.25 s apart the drain
    # took about as long as one token life, and sometimes ended before it).
    config = DeviceConfig(batch_size=10, push_interval=0.5)
    flaky = FlakyLink(proactive_refresh=proactive)
    async with Device.open(
        short_ttl.url,
        tmp_path / "t.db",
        online=False,
        config=config,
        faults=flaky,
        email=account.email,
        password=account.password,
    ) as tablet:
        space = tablet.personal_space_id
        for i in range(120):
            await tablet.set(space, "task", f"e-{i % 40}", "title", f"v{i}")
        queued = {op.op_id for op in tablet.pending()}
        tablet.go_online()
        await tablet.sync(within=120)
        stats = tablet.stats
        assert stats.mixed_pushes == 0
        assert stats.renewals > 0
        if not proactive:
            assert stats.results.get("auth_expired", 0) > 0  # expiry met mid-queue
        assert stats.results.get("applied") == 120
        assert tablet.rejected() == []
        await stored_once(tablet, queued)
        for i in range(40):
            view = tablet.state(space, "task", f"e-{i}")
            assert view is not None
            assert view.fields["title"].value == f"v{80 + i}"
        # Idle past its token's expiry (delivery paused), it still catches up.
        await asyncio.sleep(4)
        async with Device.open(
            short_ttl.url, tmp_path / "peer.db", email=account.email, password=account.password
        ) as peer:
            await peer.sync()  # it sees v80 first, so its set supersedes it
            await peer.set(space, "task", "e-0", "title", "from the peer")
            await peer.sync()
        await tablet.sync(within=30)
        view = tablet.state(space, "task", "e-0")
        assert view is not None
        assert view.fields["title"].value == "from the peer"
