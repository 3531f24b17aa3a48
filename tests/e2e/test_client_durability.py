"""The SDK's offline queue survives the device process being killed (SIGKILL).

The device runs in a subprocess of its own (``DEVICE`` below) against the session's
real gateway; the test kills it with SIGKILL, starts it again on the same SQLite file,
and checks on the server that every queued op is stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from client import HttpApi
from tests.e2e.conftest import GatewayProcess
from tests.e2e.harness import register

DEVICE = """
import asyncio, json, sys
from client import Device, DeviceConfig

def say(**fields):
    print(json.dumps(fields), flush=True)

async def main(base, path, email, password, mode, n):
    config = DeviceConfig(batch_size=5, push_interval=0.3)
    online = mode == "drain"
    async with Device.open(base, path, email=email, password=password,
                           device_name="phone", online=online, config=config) as device:
        space = device.personal_space_id
        if mode == "drain":
            say(pending=len(device.pending()))
            await device.sync(within=90)
            say(done=len(device.pending()), results=device.stats.results)
            return
        for i in range(int(n)):
            await device.set(space, "task", f"k-{i:03d}", "title", f"task {i}")
        say(ready=[op.op_id for op in device.pending()], space=space)
        if mode == "trickle":
            device.go_online()
        while True:  # until killed
            say(pending=len(device.pending()))
            await asyncio.sleep(0.05)

asyncio.run(main(*sys.argv[1:]))
"""


class DeviceProcess:
    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> DeviceProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            DEVICE,
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def line(self, within: float = 60) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        assert raw, f"device exited ({await self.proc.wait()})"
        message: dict[str, Any] = json.loads(raw)
        return message

    async def until(self, key: str, within: float = 60) -> dict[str, Any]:
        while True:
            message = await self.line(within)
            if key in message:
                return message

    async def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL


async def stored_counts(base: str, token: str, space: str, op_ids: set[str]) -> Counter[str]:
    api = HttpApi(base)
    try:
        events = await api.pull_all(token, space)
    finally:
        await api.aclose()
    return Counter(e.op_id for e in events if e.op_id in op_ids)


@pytest.mark.timeout(180)
async def test_ops_queued_offline_survive_sigkill_and_are_sent_once(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    base = gateway.base_url
    account = await register(base)
    path = str(tmp_path / "phone.db")
    args = (base, path, account.email, account.password)
    async with DeviceProcess(*args, "queue", "50") as first:
        ready = await first.until("ready")
        await first.sigkill()  # offline: nothing was sent
    queued = set(ready["ready"])
    assert len(queued) == 50
    async with DeviceProcess(*args, "drain", "0") as second:
        assert (await second.until("pending"))["pending"] == 50
        done = await second.until("done", within=120)
    assert done["done"] == 0
    assert done["results"] == {"applied": 50}  # each op answered at its first send
    stored = await stored_counts(base, account.access_token, ready["space"], queued)
    assert set(stored) == queued
    assert set(stored.values()) == {1}


@pytest.mark.timeout(180)
async def test_a_device_killed_mid_drain_resends_and_nothing_is_stored_twice(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    base = gateway.base_url
    account = await register(base)
    path = str(tmp_path / "phone.db")
    args = (base, path, account.email, account.password)
    async with DeviceProcess(*args, "trickle", "100") as first:
        ready = await first.until("ready")
        pending = (await first.until("pending"))["pending"]
        while pending > 60:  # wait until some pushes have been answered
            pending = (await first.until("pending"))["pending"]
        await first.sigkill()  # some pushes answered, one maybe in flight
    queued = set(ready["ready"])
    async with DeviceProcess(*args, "drain", "0") as second:
        left = (await second.until("pending"))["pending"]
        done = await second.until("done", within=120)
    # Killed mid drain: some ops are left. A push answered just before the kill may be
    # left too (its removal from the queue not yet durable, seen once as 65 after a last
    # report of 60): it is resent, answered ``duplicate``, and stored once (below).
    assert 0 < left < 100  # answered ops left the durable queue: not all 100 are resent
    assert done["done"] == 0
    assert sum(done["results"].values()) == left
    stored = await stored_counts(base, account.access_token, ready["space"], queued)
    assert set(stored) == queued
    assert set(stored.values()) == {1}
