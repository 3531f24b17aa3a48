"""Membership on live sockets and ids at the boundary (issue 15, the two high items),
over two gateway processes: a removal commits on one, the removed member's devices are
connected to the other.

docs/protocol.md section 5: whatever a connection's cursor says, a removed member's devices get
their ``member_removed`` event, then ``error`` ``not_found``, and nothing of the space
after that; a subscribe (first or again) is checked against the current role.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from core.settings import Settings
from tests.e2e.harness import Account, Device, Served, http, login, op, register, serve_gateway

#: A long safety poll: what these tests see comes from hints, or from no hint at all.
SLOW_POLL = {"feed_safety_interval": 60.0}


@dataclass
class Pair:
    """Two gateways of one deployment; ``quiet`` publishes no hints at all (as if it
    died after every COMMIT), ``poller`` checks heads every 0.3 s."""

    one: Served
    two: Served
    quiet: Served
    poller: Served
    started: float = field(default_factory=time.monotonic)

    async def past_first_poll(self) -> None:
        """Wait until every feed's first head check is over: it runs a second after
        start, while NATS connects (``poll_interval``). After it, what a device of ``one``
        or ``two`` gets within seconds came by a hint."""
        await asyncio.sleep(max(0.0, self.started + 1.5 - time.monotonic()))


@pytest.fixture(scope="module")
def gateways(settings: Settings) -> Iterator[Pair]:
    one = serve_gateway(settings, options=SLOW_POLL).start()
    two = serve_gateway(settings, options=SLOW_POLL).start()
    quiet = serve_gateway(settings, options={"publish_hints": False, **SLOW_POLL}).start()
    poller = serve_gateway(settings, options={"feed_safety_interval": 0.3}).start()
    yield Pair(one, two, quiet, poller)
    for process in (one, two, quiet, poller):
        process.stop()


async def add_member(base: str, owner: Account, member: Account, role: str = "editor") -> None:
    """Make ``member`` a member of ``owner``'s personal space (invitation, if one is
    answered, accepted with the member's session)."""
    r = await http(
        base,
        "POST",
        f"/v1/spaces/{owner.space_id}/members",
        owner.access_token,
        json={"email": member.email, "role": role},
    )
    assert r.status_code in (200, 202), r.text
    code = r.json().get("code") if r.content else None
    if code is not None:
        accepted = await http(
            base, "POST", "/v1/invitations/accept", member.access_token, json={"code": code}
        )
        assert accepted.status_code == 200, accepted.text


async def remove_member(base: str, owner: Account, member: Account) -> None:
    r = await http(
        base,
        "DELETE",
        f"/v1/spaces/{owner.space_id}/members/{member.user_id}",
        owner.access_token,
    )
    assert r.status_code == 204, r.text


async def head_of(base: str, account: Account) -> int:
    r = await http(
        base,
        "GET",
        "/v1/sync/pull",
        account.access_token,
        params={"space_id": account.space_id, "after": 0, "limit": 1},
    )
    assert r.status_code == 200, r.text
    head: int = r.json()["head"]
    return head


async def shared_space(base: str) -> tuple[Account, Account]:
    owner = await register(base)
    member = await register(base)
    await add_member(base, owner, member)
    return owner, member


async def assert_removed_then_silent(
    device: Device, owner: Account, member: Account, writer: Device
) -> None:
    """The member_removed event, then not_found, then nothing (even as writes go on)."""
    error = await device.expect("error", within=10)
    assert (error["error"]["code"], error["ref"]) == ("not_found", owner.space_id)
    events = device.events.get(owner.space_id, [])
    assert events, "the member_removed event itself must be delivered"
    assert events[-1]["kind"] == "member_removed"
    assert events[-1]["entity_id"] == member.user_id
    assert [e for e in events if e["kind"] == "member_removed"] == [events[-1]]
    for i in range(3):
        await writer.push([op(owner.space_id, f"after-{i}", lamport=100 + i)])
    await device.send({"type": "ping", "nonce": "sync"})
    await device.expect("pong")
    with pytest.raises(TimeoutError):
        await device.expect("events", within=1.0)
    # Whatever it sends next, the space stays closed to it.
    await device.send({"type": "subscribe", "space_id": owner.space_id, "after": 0})
    again = await device.expect("error")
    assert (again["error"]["code"], again["ref"]) == ("not_found", owner.space_id)
    with pytest.raises(TimeoutError):
        await device.expect("events", within=0.5)


async def test_removal_on_one_gateway_ends_delivery_at_once_on_the_other(gateways: Pair) -> None:
    owner, member = await shared_space(gateways.one.url)
    device = await Device.connect(
        gateways.two.ws_url, member.access_token, [{"space_id": owner.space_id, "after": 0}]
    )
    await device.expect("caught_up")
    writer = await Device.connect(gateways.one.ws_url, owner.access_token)
    await remove_member(gateways.one.url, owner, member)
    await assert_removed_then_silent(device, owner, member, writer)
    await device.close()
    await writer.close()


async def test_a_cursor_beyond_the_head_still_gets_the_removal(gateways: Pair) -> None:
    owner, member = await shared_space(gateways.one.url)
    head = await head_of(gateways.one.url, owner)
    device = await Device.connect(
        gateways.two.ws_url,
        member.access_token,
        [{"space_id": owner.space_id, "after": head + 1000}],
    )
    await device.expect("caught_up")
    writer = await Device.connect(gateways.one.ws_url, owner.access_token)
    await remove_member(gateways.one.url, owner, member)
    await assert_removed_then_silent(device, owner, member, writer)
    assert device.events[owner.space_id][-1]["seq"] == head + 1
    await device.close()
    await writer.close()


async def test_a_cursor_beyond_the_head_gets_the_removal_with_every_hint_lost(
    gateways: Pair,
) -> None:
    """No hint at all (the removal commits on a gateway that publishes none): the
    member's gateway learns of the new head from its own poll, then asks the log."""
    owner, member = await shared_space(gateways.quiet.url)
    head = await head_of(gateways.quiet.url, owner)
    device = await Device.connect(
        gateways.poller.ws_url,
        member.access_token,
        [{"space_id": owner.space_id, "after": head + 1000}],
    )
    await device.expect("caught_up")
    writer = await Device.connect(gateways.quiet.ws_url, owner.access_token)
    await remove_member(gateways.quiet.url, owner, member)
    await assert_removed_then_silent(device, owner, member, writer)
    await device.close()
    await writer.close()


async def test_subscribing_again_after_an_unseen_removal_delivers_it(gateways: Pair) -> None:
    """The removal's hints are lost and the member's gateway polls rarely: a subscribe
    again, even one that moves the cursor far past the removal, is checked against the
    current role and ends with the removal, never skips it."""
    owner, member = await shared_space(gateways.quiet.url)
    device = await Device.connect(
        gateways.two.ws_url, member.access_token, [{"space_id": owner.space_id, "after": 0}]
    )
    await device.expect("caught_up")
    head = await head_of(gateways.quiet.url, owner)
    writer = await Device.connect(gateways.quiet.ws_url, owner.access_token)
    await remove_member(gateways.quiet.url, owner, member)
    for i in range(5):
        await writer.push([op(owner.space_id, f"later-{i}", lamport=50 + i)])
    await device.send({"type": "subscribe", "space_id": owner.space_id, "after": head + 3})
    await assert_removed_then_silent(device, owner, member, writer)
    assert device.events[owner.space_id][-1]["seq"] == head + 1
    await device.close()
    await writer.close()


async def test_a_member_added_back_is_not_cut_at_the_old_removal(gateways: Pair) -> None:
    """A removal before the current membership is history: catch-up passes it."""
    owner, member = await shared_space(gateways.one.url)
    await remove_member(gateways.one.url, owner, member)
    await add_member(gateways.one.url, owner, member)
    writer = await Device.connect(gateways.one.ws_url, owner.access_token)
    await writer.push([op(owner.space_id, "t-back", lamport=7)])
    head = await head_of(gateways.one.url, owner)
    device = await Device.connect(
        gateways.two.ws_url, member.access_token, [{"space_id": owner.space_id, "after": 0}]
    )
    await device.wait_for_seq(owner.space_id, head)
    kinds = [e["kind"] for e in device.events[owner.space_id]]
    assert "member_removed" in kinds
    assert kinds[-1] == "set"
    assert not [m for m in device.inbox if m["type"] == "error"]
    await device.close()
    await writer.close()


SPELLINGS: list[Callable[[str], str]] = [
    str.upper,
    lambda u: u.replace("-", ""),
    lambda u: "{" + u + "}",
    lambda u: "urn:uuid:" + u,
    str,
]


async def test_five_spellings_of_one_space_are_one_subscription(gateways: Pair) -> None:
    owner = await register(gateways.one.url)
    device = await Device.connect(gateways.two.ws_url, owner.access_token)
    for spell in SPELLINGS:
        await device.send({"type": "subscribe", "space_id": spell(owner.space_id), "after": 0})
        caught_up = await device.expect("caught_up")
        assert caught_up["space_id"] == owner.space_id
    assert list(device.events) == [owner.space_id]
    assert [e["seq"] for e in device.events[owner.space_id]] == [1], "catch-up once"
    writer = await Device.connect(gateways.one.ws_url, owner.access_token)
    await writer.push([op(owner.space_id, "t-live", lamport=3)])
    await device.wait_for_seq(owner.space_id, 2)
    with pytest.raises(TimeoutError):
        await device.expect("events", within=1.0)
    assert [e["seq"] for e in device.events[owner.space_id]] == [1, 2], "live once"
    # Unsubscribing by another spelling ends the one subscription.
    await device.send({"type": "unsubscribe", "space_id": owner.space_id.upper()})
    await writer.push([op(owner.space_id, "t-gone", lamport=4)])
    with pytest.raises(TimeoutError):
        await device.expect("events", within=1.0)
    await device.close()
    await writer.close()


async def test_http_takes_every_spelling_and_answers_the_canonical_one(gateways: Pair) -> None:
    owner = await register(gateways.one.url)
    writer = await Device.connect(gateways.one.ws_url, owner.access_token)
    await writer.push([op(owner.space_id, "t-1", lamport=2)])
    for spell in SPELLINGS:
        spelled = spell(owner.space_id)
        pulled = await http(
            gateways.one.url,
            "GET",
            "/v1/sync/pull",
            owner.access_token,
            params={"space_id": spelled, "after": 0},
        )
        assert pulled.status_code == 200, (spelled, pulled.text)
        assert {e["space_id"] for e in pulled.json()["events"]} == {owner.space_id}
        entity = await http(
            gateways.one.url,
            "GET",
            f"/v1/spaces/{spelled}/entities/task/t-1",
            owner.access_token,
        )
        assert entity.status_code == 200, (spelled, entity.text)
    await writer.close()


async def test_a_second_device_of_a_removed_member_on_another_gateway_too(gateways: Pair) -> None:
    """Every device of the member, on any gateway, is cut at the removal."""
    owner, member = await shared_space(gateways.one.url)
    tablet = await login(gateways.one.url, member, "tablet")
    subs = [{"space_id": owner.space_id, "after": 0}]
    devices = [
        await Device.connect(gateways.one.ws_url, member.access_token, subs),
        await Device.connect(gateways.two.ws_url, tablet.access_token, subs),
    ]
    for device in devices:
        await device.expect("caught_up")
    writer = await Device.connect(gateways.two.ws_url, owner.access_token)
    await remove_member(gateways.two.url, owner, member)
    for device in devices:
        await assert_removed_then_silent(device, owner, member, writer)
        await device.close()
    await writer.close()


def test_ids_in_this_module_are_canonical() -> None:
    """The spellings above all name one id (a check of the test's own table)."""
    value = str(uuid.uuid4())
    assert {str(uuid.UUID(spell(value))) for spell in SPELLINGS} == {value}
    assert len({spell(value) for spell in SPELLINGS}) == len(SPELLINGS)


async def test_op_ids_in_any_spelling_are_one_op(gateways: Pair) -> None:
    """An op's ids (op_id, space_id, pred entries) in any spelling are stored, answered
    and deduplicated in the canonical form: a replay in another spelling is a duplicate."""
    owner = await register(gateways.one.url)
    device = await Device.connect(gateways.one.ws_url, owner.access_token)
    first = op(owner.space_id, "t-spell", lamport=2)
    canonical = first["op_id"]
    spelled = {**first, "op_id": "{" + canonical.upper() + "}", "space_id": owner.space_id.upper()}
    reply = await device.push([spelled])
    [result] = reply["results"]
    assert (result["status"], result["op_id"]) == ("applied", canonical)
    for spell in SPELLINGS:
        again = {**first, "op_id": spell(canonical), "space_id": spell(owner.space_id)}
        [dup] = (await device.push([again]))["results"]
        assert (dup["status"], dup["op_id"], dup["seq"]) == ("duplicate", canonical, result["seq"])
    child = op(owner.space_id, "t-spell", lamport=3, pred=["urn:uuid:" + canonical])
    [applied] = (await device.push([child]))["results"]
    assert applied["status"] == "applied", applied
    pulled = await http(
        gateways.one.url,
        "GET",
        "/v1/sync/pull",
        owner.access_token,
        params={"space_id": owner.space_id, "after": 0},
    )
    stored = [e for e in pulled.json()["events"] if e["kind"] == "set"]
    assert [e["op_id"] for e in stored] == [canonical, child["op_id"]]
    assert stored[1]["pred"] == [canonical]
    await device.close()


async def test_an_error_about_a_spelled_space_names_the_canonical_id(gateways: Pair) -> None:
    owner, stranger = await register(gateways.one.url), await register(gateways.one.url)
    device = await Device.connect(gateways.one.ws_url, stranger.access_token)
    await device.send({"type": "subscribe", "space_id": owner.space_id.upper(), "after": 0})
    error = await device.expect("error")
    assert (error["error"]["code"], error["ref"]) == ("not_found", owner.space_id)
    await device.send({"type": "subscribe", "space_id": "not-a-uuid", "after": 0})
    error = await device.expect("error")
    assert (error["error"]["code"], error["ref"]) == ("not_found", "not-a-uuid")
    await device.close()


async def test_an_accepted_invitation_reaches_the_other_gateway_by_its_hint(
    gateways: Pair,
) -> None:
    """The acceptance commits on one gateway; an owner's device on the other (which
    polls every 60 s) gets the ``member_added`` event from the hint, at once."""
    owner = await register(gateways.one.url)
    member = await register(gateways.one.url)
    device = await Device.connect(
        gateways.two.ws_url, owner.access_token, [{"space_id": owner.space_id, "after": 0}]
    )
    await device.expect("caught_up")
    await gateways.past_first_poll()
    head = await head_of(gateways.one.url, owner)
    await add_member(gateways.one.url, owner, member)
    await device.wait_for_seq(owner.space_id, head + 1, within=5)
    added = device.events[owner.space_id][-1]
    assert (added["kind"], added["entity_id"]) == ("member_added", member.user_id)
    await device.close()


async def test_a_role_change_reaches_the_other_gateway_by_its_hint(gateways: Pair) -> None:
    """A member's role set at once (the owner adds a member's email again) commits on one
    gateway; the member's device on the other gets ``member_role_changed`` at once, and
    stays subscribed."""
    owner, member = await shared_space(gateways.one.url)
    device = await Device.connect(
        gateways.two.ws_url, member.access_token, [{"space_id": owner.space_id, "after": 0}]
    )
    await device.expect("caught_up")
    await gateways.past_first_poll()
    head = await head_of(gateways.one.url, owner)
    r = await http(
        gateways.one.url,
        "POST",
        f"/v1/spaces/{owner.space_id}/members",
        owner.access_token,
        json={"email": member.email, "role": "reader"},
    )
    assert r.status_code == 200, r.text
    await device.wait_for_seq(owner.space_id, head + 1, within=5)
    changed = device.events[owner.space_id][-1]
    assert (changed["kind"], changed["entity_id"]) == ("member_role_changed", member.user_id)
    assert changed["value"]["role"] == "reader"
    writer = await Device.connect(gateways.one.ws_url, owner.access_token)
    await writer.push([op(owner.space_id, "after-the-change", lamport=90)])
    await device.wait_for_seq(owner.space_id, head + 2, within=5)
    assert not [m for m in device.inbox if m["type"] == "error"]
    await device.close()
    await writer.close()
