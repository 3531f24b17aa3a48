"""Token expiry mid-queue on a live connection (docs/protocol.md section 5, issue 6 point 4)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from core.settings import Settings
from tests.e2e.harness import (
    Device,
    Served,
    assert_contiguous,
    login,
    op,
    refresh,
    register,
    serve_gateway,
)


@pytest.fixture(scope="module")
def short_ttl(settings: Settings) -> Iterator[Served]:
    process = serve_gateway(
        settings, env={"CONCORD_ACCESS_TOKEN_TTL": "2", "CONCORD_AUTH_GRACE": "4"}
    ).start()
    yield process
    process.stop()


async def test_queue_pushed_after_expiry_is_refused_then_applied_once(
    short_ttl: Served,
) -> None:
    acct = await register(short_ttl.url)
    device = await Device.connect(
        short_ttl.ws_url, acct.access_token, [{"space_id": acct.space_id, "after": 0}]
    )
    expiring = await device.expect("auth_expiring", within=5)  # TTL < 60 s: at once
    assert expiring["expires_at"].endswith("Z")
    await device.expect("caught_up")
    await asyncio.sleep(2.5)  # the access token is now expired

    # Another device writes meanwhile: delivery to the expired session must pause.
    other = await login(short_ttl.url, acct, "laptop")
    writer = await Device.connect(short_ttl.ws_url, other.access_token)
    written = await writer.push([op(acct.space_id, f"w-{i}", lamport=i + 1) for i in range(5)])
    assert {r["status"] for r in written["results"]} == {"applied"}
    await writer.close()

    queue = [op(acct.space_id, f"q-{i}", lamport=100 + i) for i in range(50)]
    reply = await device.push(queue)
    assert [r["status"] for r in reply["results"]] == ["rejected"] * 50
    assert {r["error"]["code"] for r in reply["results"]} == {"auth_expired"}
    assert all(r["error"]["retryable"] for r in reply["results"])
    assert device.seqs(acct.space_id) == [1]  # member_added, then nothing while expired

    await refresh(short_ttl.url, acct)
    await device.send({"type": "auth", "token": acct.access_token})
    ok = await device.expect("auth_ok")
    assert ok["token_expires_at"].endswith("Z")
    reply = await device.push(queue)
    assert [r["status"] for r in reply["results"]] == ["applied"] * 50
    again = await device.push(queue)
    assert [r["status"] for r in again["results"]] == ["duplicate"] * 50
    last = reply["results"][-1]["seq"]
    await device.wait_for_seq(acct.space_id, last)
    assert_contiguous(device.seqs(acct.space_id))
    await device.close()


async def test_expired_token_in_auth_gets_auth_expired(short_ttl: Served) -> None:
    acct = await register(short_ttl.url)
    stale = acct.access_token
    device = await Device.connect(short_ttl.ws_url, stale)
    await asyncio.sleep(2.5)
    await device.send({"type": "auth", "token": stale})
    error = await device.expect("error")
    assert error["error"]["code"] == "auth_expired"
    await device.close()


async def test_no_auth_within_grace_closes_4401(short_ttl: Served) -> None:
    acct = await register(short_ttl.url)
    device = await Device.connect(short_ttl.ws_url, acct.access_token)
    assert await device.close_code(within=15) == 4401


async def test_token_of_another_device_closes_4401(short_ttl: Served) -> None:
    acct = await register(short_ttl.url)
    other = await login(short_ttl.url, acct, "laptop")
    device = await Device.connect(short_ttl.ws_url, acct.access_token)
    await device.send({"type": "auth", "token": other.access_token})
    assert await device.close_code(within=5) == 4401
