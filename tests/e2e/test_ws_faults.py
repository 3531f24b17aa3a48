"""Gateways die and NATS goes away: nothing acknowledged is lost, delivery stays exact."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import msgspec
import websockets

from concord.embedded import EmbeddedNats
from core.settings import Settings
from projector.stream import Names
from tests.e2e.harness import (
    Account,
    Device,
    Served,
    ServerProcess,
    StalledDevice,
    assert_contiguous,
    http,
    login,
    op,
    register,
    serve_gateway,
)
from tests.integration.test_projector_support import eventually, stream_seqs


async def _writer_and_watcher(gw: Served) -> tuple[Account, Device, Device]:
    """A new account's phone (``a``, the writer) and laptop (``b``), the laptop subscribed
    to the personal space from seq 0 and caught up."""
    acct = await register(gw.url)
    other = await login(gw.url, acct, "laptop")
    a = await Device.connect(gw.ws_url, acct.access_token)
    b = await Device.connect(
        gw.ws_url, other.access_token, [{"space_id": acct.space_id, "after": 0}]
    )
    await b.expect("caught_up")
    return acct, a, b


async def _pull_all(base: str, token: str, space_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        r = await http(
            base, "GET", "/v1/sync/pull", token, params={"space_id": space_id, "after": after}
        )
        body = r.json()
        events += body["events"]
        if not body["events"] or events[-1]["seq"] >= body["head"]:
            return events
        after = events[-1]["seq"]


async def test_two_gateways_act_as_one_and_survive_a_kill(settings: Settings) -> None:
    gw1 = ServerProcess(settings).start()
    gw2 = ServerProcess(settings).start()
    try:
        phone = await register(gw1.url)
        laptop = await login(gw2.url, phone)
        a = await Device.connect(gw1.ws_url, phone.access_token)
        b = await Device.connect(
            gw2.ws_url, laptop.access_token, [{"space_id": phone.space_id, "after": 0}]
        )
        await b.expect("caught_up")
        batches = [
            [op(phone.space_id, f"t-{n}-{i}", lamport=n * 100 + i + 1) for i in range(20)]
            for n in range(10)
        ]
        acked: dict[str, int] = {}
        for batch in batches[:5]:
            reply = await a.push(batch)
            acked.update({r["op_id"]: r["seq"] for r in reply["results"]})
        await b.wait_for_seq(phone.space_id, max(acked.values()))
        assert_contiguous(b.seqs(phone.space_id))

        # SIGKILL gateway 1 while A pushes the rest without waiting for results.
        for n, batch in enumerate(batches[5:]):
            await a.send({"type": "push", "batch_id": f"late-{n}", "ops": batch})
        gw1.kill()
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            while True:
                message = await a.recv(within=5)
                if message["type"] == "push_result":
                    acked.update({r["op_id"]: r["seq"] for r in message["results"]})

        # A reconnects to gateway 2 and resends every batch: exactly once overall.
        a2 = await Device.connect(gw2.ws_url, phone.access_token)
        final: dict[str, int] = {}
        for batch in batches:
            reply = await a2.push(batch)
            assert {r["status"] for r in reply["results"]} <= {"applied", "duplicate"}
            final.update({r["op_id"]: r["seq"] for r in reply["results"]})
        for op_id, seq in acked.items():
            assert final[op_id] == seq, "an acknowledged op moved or was lost"
        stored = await _pull_all(gw2.url, phone.access_token, phone.space_id)
        stored_ids = [e["op_id"] for e in stored if e["kind"] == "set"]
        assert sorted(stored_ids) == sorted(o["op_id"] for batch in batches for o in batch)
        await b.wait_for_seq(phone.space_id, max(final.values()))
        assert_contiguous(b.seqs(phone.space_id))
        await a2.close()
        await b.close()
    finally:
        gw1.stop()
        gw2.stop()


async def test_nats_outage_keeps_writes_and_exact_delivery(
    settings: Settings, tmp_path: Path
) -> None:
    nats = EmbeddedNats(tmp_path)
    url = await asyncio.to_thread(nats.start)
    port = nats.port
    own = msgspec.structs.replace(settings, nats_url=url)
    gw = ServerProcess(own).start()
    try:
        acct, a, b = await _writer_and_watcher(gw)
        lamport = 0

        async def push_some(tag: str, n: int) -> int:
            nonlocal lamport
            last = 0
            for i in range(n):
                lamport += 1
                reply = await a.push([op(acct.space_id, f"{tag}-{i}", lamport=lamport)])
                assert reply["results"][0]["status"] == "applied"
                last = reply["results"][0]["seq"]
            return last

        await b.wait_for_seq(acct.space_id, await push_some("before", 5))
        await asyncio.to_thread(nats.stop)
        ready = await http(gw.url, "GET", "/readyz", "")
        assert ready.status_code == 200
        for _ in range(50):
            if (await http(gw.url, "GET", "/readyz", "")).json()["status"] == "degraded":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("/readyz never reported degraded")
        during = await push_some("during", 10)
        await b.wait_for_seq(acct.space_id, during, within=15)  # polled from PostgreSQL
        await asyncio.sleep(8)  # NATS stays down ~10 s in all
        await asyncio.to_thread(nats.start, port)
        after = await push_some("after", 5)
        await b.wait_for_seq(acct.space_id, after, within=15)
        assert_contiguous(b.seqs(acct.space_id))
        await a.close()
        await b.close()
    finally:
        gw.stop(signal.SIGTERM)
        await asyncio.to_thread(nats.stop)


async def test_sigterm_answers_pushes_in_flight_then_closes_1001(settings: Settings) -> None:
    gw = ServerProcess(settings).start()
    try:
        acct = await register(gw.url)
        device = await Device.connect(gw.ws_url, acct.access_token)
        batch = [op(acct.space_id, f"t-{i}", lamport=i + 1) for i in range(500)]
        await device.send({"type": "push", "batch_id": "in-flight", "ops": batch})
        await asyncio.sleep(0.05)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        result = await device.expect("push_result", within=30)
        assert result["batch_id"] == "in-flight"
        assert {r["status"] for r in result["results"]} == {"applied"}
        assert await device.close_code(within=30) == 1001
        assert gw.proc.wait(30) == 0
    finally:
        gw.stop()


async def test_device_that_cannot_keep_up_is_closed_4429_and_resumes(settings: Settings) -> None:
    gw = serve_gateway(settings, options={"ws_send_queue": 2, "ws_send_timeout": 1.0}).start()
    try:
        acct = await register(gw.url)
        writer = await Device.connect(gw.ws_url, acct.access_token)
        big = "n" * 9000
        last = 0
        for n in range(40):  # ~36 MB of events: far more than socket buffers hold
            ops = [op(acct.space_id, f"t-{n}-{i}", "notes", big, lamport=1) for i in range(100)]
            last = (await writer.push(ops))["results"][-1]["seq"]
        slow = await StalledDevice.connect("127.0.0.1", gw.port)
        slow.send(
            {
                "type": "hello",
                "token": acct.access_token,
                "subscriptions": [{"space_id": acct.space_id, "after": 0}],
            }
        )
        await asyncio.sleep(5)  # reads nothing meanwhile
        messages, code = await slow.read_all()
        assert code == 4429
        got = [e["seq"] for m in messages if m["type"] == "events" for e in m["events"]]
        assert got == list(range(1, len(got) + 1))
        assert got[-1] < last
        resumed = await Device.connect(
            gw.ws_url, acct.access_token, [{"space_id": acct.space_id, "after": got[-1]}]
        )
        await resumed.wait_for_seq(acct.space_id, last, within=60)
        assert resumed.seqs(acct.space_id) == list(range(got[-1] + 1, last + 1))
        await resumed.close()
        await writer.close()
    finally:
        gw.stop()


async def test_gateway_dead_between_commit_and_hint_still_delivers(settings: Settings) -> None:
    """The fault hook drops every space hint after COMMIT, as a gateway killed right then
    would: the relay still publishes the events to the log stream within its interval,
    and a subscribed device still receives every event once, in order."""
    gw = serve_gateway(settings, options={"publish_hints": False}).start()
    relay = ServerProcess(settings, command="projector")
    relay.start_worker()
    try:
        acct, a, b = await _writer_and_watcher(gw)
        last = 0
        for i in range(10):
            reply = await a.push([op(acct.space_id, f"lost-hint-{i}", lamport=i + 1)])
            assert reply["results"][0]["status"] == "applied"
            last = reply["results"][0]["seq"]
        await b.wait_for_seq(acct.space_id, last, within=20)
        assert_contiguous(b.seqs(acct.space_id))
        names = Names(settings.nats_prefix)
        expected = list(range(1, last + 1))

        async def relayed() -> bool:
            with contextlib.suppress(Exception):  # the stream may not exist yet
                return (
                    await stream_seqs(settings.nats_url or "", names, acct.space_id, last)
                    == expected
                )
            return False

        await eventually(relayed, within=20)
        await a.close()
        await b.close()
    finally:
        gw.stop(signal.SIGTERM)
        relay.stop(signal.SIGTERM)
