"""1,000 concurrent connections on one gateway (bounded, loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psutil
import pytest

from core.settings import Settings
from tests.e2e.harness import (
    Device,
    ServerProcess,
    op,
    open_connections,
    register,
    wait_connections,
)

CONNECTIONS = 1000


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerProcess]:
    process = ServerProcess(settings).start()
    yield process
    process.stop()


@pytest.mark.timeout(300)
async def test_thousand_connections_all_receive_a_broadcast(server: ServerProcess) -> None:
    acct = await register(server.url)
    assert server.proc is not None
    gateway = psutil.Process(server.proc.pid)
    rss_before = gateway.memory_info().rss
    subs = [{"space_id": acct.space_id, "after": 0}]
    devices: list[Device] = []
    for _ in range(CONNECTIONS // 100):
        devices += await asyncio.gather(
            *(Device.connect(server.ws_url, acct.access_token, subs) for _ in range(100))
        )
    await asyncio.gather(*(d.expect("caught_up", within=60) for d in devices))
    rss_idle = gateway.memory_info().rss
    per_connection = (rss_idle - rss_before) / CONNECTIONS
    print(
        f"\ngateway RSS: {rss_before / 2**20:.1f} MiB before, {rss_idle / 2**20:.1f} MiB with "
        f"{CONNECTIONS} idle subscribed connections: {per_connection / 1024:.1f} KiB each"
    )

    reply = await devices[0].push([op(acct.space_id, "broadcast", lamport=1)])
    seq = reply["results"][0]["seq"]
    # Generous: 1,000 clients share one Python process with the test on a 2-core machine.
    await asyncio.gather(*(d.wait_for_seq(acct.space_id, seq, within=150) for d in devices))
    assert all(d.seqs(acct.space_id)[-1] == seq for d in devices)
    # The gateway held every connection at once and survived them, and it lets each go
    # once its device leaves (a leak would keep the gauge up).
    assert server.proc.poll() is None, "the gateway died under 1,000 connections"
    assert await open_connections(server.url) == CONNECTIONS
    await asyncio.gather(*(d.close() for d in devices))
    await wait_connections(server.url, 0)
