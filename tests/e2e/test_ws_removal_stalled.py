"""A removal and the event after it, both committed before a paused subscriber reads.

Delivery to a session pauses while its access token is expired (docs/protocol.md
section 5). The member's session is left to expire; meanwhile the owner removes the member
and writes again. When the member authenticates again, one catch-up page holds both the
``member_removed`` event and the write after it: the page must be cut at the removal
(invariant 8), whatever the timing of hints and reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from core.settings import Settings
from tests.e2e.harness import Account, Device, Served, http, op, refresh, register, serve_gateway


@pytest.fixture(scope="module")
def short_ttl(settings: Settings) -> Iterator[Served]:
    process = serve_gateway(
        settings, env={"CONCORD_ACCESS_TOKEN_TTL": "4", "CONCORD_AUTH_GRACE": "120"}
    ).start()
    yield process
    process.stop()


async def _share(server: Served, owner: Account, member: Account) -> None:
    r = await http(
        server.url,
        "POST",
        f"/v1/spaces/{owner.space_id}/members",
        owner.access_token,
        json={"email": member.email, "role": "editor"},
    )
    assert r.status_code == 202, r.text
    r = await http(
        server.url,
        "POST",
        "/v1/invitations/accept",
        member.access_token,
        json={"code": r.json()["code"]},
    )
    assert r.status_code == 200, r.text


async def _until_expired(device: Device, own_space: str, within: float = 30) -> None:
    """Probe with an op the server refuses either way (lamport 0) until the refusal is
    ``auth_expired``: the session is then paused, with nothing written by the probes."""
    deadline = time.monotonic() + within
    while True:
        reply = await device.push([op(own_space, "probe", lamport=0)])
        code = reply["results"][0]["error"]["code"]
        if code == "auth_expired":
            return
        assert code == "invalid_op", reply
        if time.monotonic() > deadline:
            raise AssertionError("the session never expired")
        await asyncio.sleep(0.2)


async def test_a_page_holding_the_removal_and_a_later_event_stops_at_the_removal(
    short_ttl: Served,
) -> None:
    server = short_ttl
    owner = await register(server.url)
    member = await register(server.url)
    await _share(server, owner, member)
    device = await Device.connect(
        server.ws_url, member.access_token, [{"space_id": owner.space_id, "after": 0}]
    )
    await device.expect("caught_up")
    await _until_expired(device, member.space_id)

    await refresh(server.url, owner)  # the owner's token expires as fast
    writer = await Device.connect(server.ws_url, owner.access_token)
    r = await http(
        server.url,
        "DELETE",
        f"/v1/spaces/{owner.space_id}/members/{member.user_id}",
        owner.access_token,
    )
    assert r.status_code == 204, r.text
    after = await writer.push([op(owner.space_id, "t-after", lamport=50)])
    assert after["results"][0]["status"] == "applied", after
    later_seq = after["results"][0]["seq"]
    await writer.close()

    await refresh(server.url, member)
    await device.send({"type": "auth", "token": member.access_token})
    await device.expect("auth_ok")
    error = await device.expect("error", within=10)
    assert (error["error"]["code"], error["ref"]) == ("not_found", owner.space_id)
    events = device.events[owner.space_id]
    assert events[-1]["kind"] == "member_removed", events
    assert events[-1]["entity_id"] == member.user_id
    assert events[-1]["seq"] == later_seq - 1, "the removal and the write were both pending"
    assert later_seq not in device.seqs(owner.space_id)
    with pytest.raises(TimeoutError):
        await device.expect("events", within=1)
    await device.close()
