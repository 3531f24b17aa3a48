"""WebSocket input that used to close the socket or slip past a limit (issue 15 item 5):
each gets ``bad_message`` or ``too_large`` and the connection stays usable."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from core.settings import Settings
from tests.e2e.harness import Account, Device, Served, http, op, register, serve_gateway


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[Served]:
    process = serve_gateway(settings).start()
    yield process
    process.stop()


async def still_usable(device: Device, nonce: str) -> None:
    await device.send({"type": "ping", "nonce": nonce})
    assert (await device.expect("pong"))["nonce"] == nonce


async def stored_sets(server: Served, account: Account) -> int:
    r = await http(
        server.url,
        "GET",
        "/v1/sync/pull",
        account.access_token,
        params={"space_id": account.space_id, "after": 0, "limit": 1000},
    )
    return len([e for e in r.json()["events"] if e["kind"] == "set"])


@pytest.mark.parametrize("depth", [600, 1000, 5000])
async def test_deeply_nested_json_is_a_bad_message(server: Served, depth: int) -> None:
    acct = await register(server.url)
    device = await Device.connect(server.ws_url, acct.access_token)
    nested = "[" * depth + "]" * depth
    await device.ws.send(f'{{"type":"push","batch_id":"deep","ops":[{nested}]}}')
    reply = await device.recv()
    if reply["type"] == "push_result":  # shallow enough to decode: the op is invalid
        assert reply["results"][0]["error"]["code"] == "invalid_op"
    else:
        assert (reply["type"], reply["error"]["code"]) == ("error", "bad_message")
    await still_usable(device, f"deep-{depth}")
    await device.close()


@pytest.mark.parametrize("after", [2**63, 2**64, 10**30, -1])
async def test_a_cursor_out_of_range_is_a_bad_message(server: Served, after: int) -> None:
    acct = await register(server.url)
    device = await Device.connect(server.ws_url, acct.access_token)
    await device.ws.send(
        json.dumps({"type": "subscribe", "space_id": acct.space_id, "after": after})
    )
    error = await device.expect("error")
    assert error["error"]["code"] == "bad_message"
    await still_usable(device, "cursor")
    await device.close()


async def test_the_largest_cursor_is_taken(server: Served) -> None:
    acct = await register(server.url)
    device = await Device.connect(server.ws_url, acct.access_token)
    await device.send({"type": "subscribe", "space_id": acct.space_id, "after": 2**63 - 1})
    assert (await device.expect("caught_up"))["seq"] == 2**63 - 1
    await device.close()


async def test_the_message_limit_counts_bytes_not_characters(server: Served) -> None:
    """150 ops of 2,000 emoji each: 0.3 M characters, 1.2 MB of UTF-8, over 1 MiB."""
    acct = await register(server.url)
    device = await Device.connect(server.ws_url, acct.access_token)
    ops = [op(acct.space_id, f"t-{i}", "notes", "😀" * 2000, lamport=1) for i in range(150)]
    frame = json.dumps({"type": "push", "batch_id": "emoji", "ops": ops}, ensure_ascii=False)
    assert len(frame) < 1_048_576 < len(frame.encode())
    await device.ws.send(frame)
    error = await device.expect("error")
    assert (error["error"]["code"], error["ref"]) == ("too_large", "emoji")
    assert await stored_sets(server, acct) == 0, "nothing of it is stored"
    # Under the limit in bytes (0.8 MB of UTF-8), the same shape is taken.
    small = json.dumps({"type": "push", "batch_id": "fits", "ops": ops[:100]}, ensure_ascii=False)
    assert len(small.encode()) < 1_048_576
    await device.ws.send(small)
    reply = await device.expect("push_result")
    assert {r["status"] for r in reply["results"]} == {"applied"}
    await device.close()
