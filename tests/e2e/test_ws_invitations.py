"""The invitation holes of issue 15 seen from live sockets on two gateways: an invitation
grants nothing until its code is accepted by a signed-in user; an owner removed after
inviting gets nothing back through it; whoever registers the invited email first gets
nothing either."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from core.settings import Settings
from tests.e2e.harness import Account, Device, Served, http, op, register, serve_gateway


@pytest.fixture(scope="module")
def two(settings: Settings) -> Iterator[tuple[Served, Served]]:
    one = serve_gateway(settings).start()
    other = serve_gateway(settings).start()
    yield one, other
    one.stop()
    other.stop()


async def invite(base: str, owner: Account, space_id: str, email: str, role: str) -> str:
    r = await http(
        base,
        "POST",
        f"/v1/spaces/{space_id}/members",
        owner.access_token,
        json={"email": email, "role": role},
    )
    assert r.status_code == 202, r.text
    code: str = r.json()["code"]
    return code


async def accept(base: str, user: Account, code: str) -> tuple[int, Any]:
    r = await http(base, "POST", "/v1/invitations/accept", user.access_token, json={"code": code})
    return r.status_code, r.json() if r.content else None


async def refused(device: Device, space_id: str) -> None:
    """A subscribe that gets not_found and nothing more of the space."""
    before = len(device.events.get(space_id, []))
    await device.send({"type": "subscribe", "space_id": space_id, "after": 0})
    error = await device.expect("error")
    assert (error["error"]["code"], error["ref"]) == ("not_found", space_id)
    await device.send({"type": "ping", "nonce": "after-refusal"})
    await device.expect("pong")
    assert len(device.events.get(space_id, [])) == before


async def test_a_removed_owner_gets_nothing_back_through_an_old_invitation(
    two: tuple[Served, Served],
) -> None:
    one, other = two
    first, second = await register(one.url), await register(one.url)
    space = (
        await http(one.url, "POST", "/v1/spaces", first.access_token, json={"name": "team"})
    ).json()["space_id"]
    code = await invite(one.url, first, space, second.email, "owner")
    assert await accept(other.url, second, code) == (200, {"space_id": space, "role": "owner"})
    # The first owner prepares a way back in (an owner invitation to an address they
    # hold), then the second owner removes them.
    spare = await register(other.url)
    way_back = await invite(one.url, first, space, spare.email, "owner")
    watcher = await Device.connect(
        other.ws_url, first.access_token, [{"space_id": space, "after": 0}]
    )
    await watcher.expect("caught_up")
    removed = await http(
        one.url, "DELETE", f"/v1/spaces/{space}/members/{first.user_id}", second.access_token
    )
    assert removed.status_code == 204, removed.text
    error = await watcher.expect("error")
    assert (error["error"]["code"], error["ref"]) == ("not_found", space)
    assert watcher.events[space][-1]["kind"] == "member_removed"
    # The old invitation opens nothing, on either gateway, for anyone.
    assert (await accept(other.url, spare, way_back))[0] == 404
    assert (await accept(one.url, first, way_back))[0] == 404
    spare_device = await Device.connect(other.ws_url, spare.access_token)
    await refused(spare_device, space)
    await refused(watcher, space)
    for device in (watcher, spare_device):
        await device.close()


async def test_an_invitation_goes_to_whoever_presents_the_code_not_the_first_registrant(
    two: tuple[Served, Served],
) -> None:
    one, other = two
    owner = await register(one.url)
    email = f"invited-{uuid.uuid4().hex[:10]}@example.test"
    code = await invite(one.url, owner, owner.space_id, email, "editor")
    # Someone registers the invited address first, on the other gateway: nothing granted.
    squatter = await register(other.url, email=email)
    squatter_device = await Device.connect(other.ws_url, squatter.access_token)
    await refused(squatter_device, owner.space_id)
    # The person the owner handed the code to accepts it and syncs live across gateways.
    friend = await register(other.url)
    assert await accept(other.url, friend, code) == (
        200,
        {"space_id": owner.space_id, "role": "editor"},
    )
    device = await Device.connect(
        other.ws_url, friend.access_token, [{"space_id": owner.space_id, "after": 0}]
    )
    await device.expect("caught_up")
    added = [e for e in device.events[owner.space_id] if e["kind"] == "member_added"]
    assert added[-1]["value"]["user_id"] == friend.user_id
    assert added[-1]["value"]["by"] == owner.user_id
    writer = await Device.connect(one.ws_url, owner.access_token)
    reply = await writer.push([op(owner.space_id, "t-shared", lamport=5)])
    seq = reply["results"][0]["seq"]
    await device.wait_for_seq(owner.space_id, seq)
    # The code is spent: a replay, even by its rightful holder, is 404.
    assert (await accept(one.url, friend, code))[0] == 404
    assert (await accept(one.url, squatter, code))[0] == 404
    await refused(squatter_device, owner.space_id)
    for d in (squatter_device, device, writer):
        await d.close()
