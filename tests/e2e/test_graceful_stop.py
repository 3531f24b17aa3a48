"""SIGTERM stops a gateway with live WebSocket devices within seconds (it allows its
connections 0.5 s; the bound below leaves room for a loaded CI machine), one of them
reading nothing, and the same port serves again at once although that device still
holds its connection (one stop took 10.4 s; restarts were refused for up to 2 min)."""

from __future__ import annotations

import asyncio
import signal
import time

from core.settings import Settings
from tests.e2e.harness import Device, ServerProcess, StalledDevice, op, register

#: Connected devices in all: the writer, the readers, and one that reads nothing.
DEVICES = 20
STOP_WITHIN = 5.0


async def _stalled_device(gw: ServerProcess, token: str, space_id: str) -> StalledDevice:
    """A device subscribed from seq 0 to a space far larger than socket buffers hold,
    reading nothing: the server's sends to it wait on flow control."""
    stalled = await StalledDevice.connect("127.0.0.1", gw.port)
    stalled.send(
        {"type": "hello", "token": token, "subscriptions": [{"space_id": space_id, "after": 0}]}
    )
    await stalled.wait_full()  # the server filled the socket buffers: its sends now wait
    return stalled


async def test_sigterm_with_live_devices_stops_within_seconds_and_restarts(
    settings: Settings,
) -> None:
    gw = ServerProcess(settings).start()
    try:
        acct = await register(gw.url)
        writer = await Device.connect(gw.ws_url, acct.access_token)
        big = "n" * 9000
        head = 0
        for n in range(8):  # ~7 MB of events: more than the stalled device's buffers hold
            ops = [op(acct.space_id, f"t-{n}-{i}", "notes", big, lamport=1) for i in range(100)]
            head = (await writer.push(ops))["results"][-1]["seq"]
        readers = [
            await Device.connect(
                gw.ws_url, acct.access_token, [{"space_id": acct.space_id, "after": head}]
            )
            for _ in range(DEVICES - 2)
        ]
        for reader in readers:
            await reader.expect("caught_up")
        stalled = await _stalled_device(gw, acct.access_token, acct.space_id)

        assert gw.proc is not None
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(gw.proc.wait, 30)
        stopped_in = time.monotonic() - started

        assert status == 0
        assert stopped_in < STOP_WITHIN, f"the stop took {stopped_in:.2f} s"
        for device in [writer, *readers]:
            assert await device.close_code(within=5) == 1001
        # The stalled device has not even read its events: its connection lingers, and
        # the next start on the same port must not mind.
        gw.start(port=gw.port)  # waits for /readyz
        again = await Device.connect(gw.ws_url, acct.access_token)  # welcomed
        await again.close()
        stalled.writer.close()
    finally:
        gw.stop()
