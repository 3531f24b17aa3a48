"""WebSocket sync (docs/protocol.md section 5) against a real gateway process."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from core.settings import Settings
from tests.e2e.harness import (
    Account,
    Device,
    Served,
    assert_contiguous,
    http,
    login,
    op,
    register,
    serve_gateway,
)


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[Served]:
    process = serve_gateway(settings).start()
    yield process
    process.stop()


async def test_two_devices_thousand_ops_in_order_then_duplicates(server: Served) -> None:
    phone = await register(server.url)
    laptop = await login(server.url, phone)
    a = await Device.connect(server.ws_url, phone.access_token)
    b = await Device.connect(
        server.ws_url, laptop.access_token, [{"space_id": phone.space_id, "after": 0}]
    )
    await b.expect("caught_up")
    ops = [op(phone.space_id, f"t-{i}", "title", f"task {i}", lamport=i + 1) for i in range(1000)]
    results: list[dict[str, Any]] = []
    for start in range(0, 1000, 250):
        reply = await a.push(ops[start : start + 250])
        results += reply["results"]
    assert [r["status"] for r in results] == ["applied"] * 1000
    seqs = [r["seq"] for r in results]
    await b.wait_for_seq(phone.space_id, seqs[-1])
    assert_contiguous(b.seqs(phone.space_id))  # seq 1 is the member_added of creation
    got = [e["op_id"] for e in b.events[phone.space_id] if e["kind"] == "set"]
    assert got == [o["op_id"] for o in ops]

    replay = []
    for start in range(0, 1000, 250):
        replay += (await a.push(ops[start : start + 250]))["results"]
    assert [r["status"] for r in replay] == ["duplicate"] * 1000
    assert [r["seq"] for r in replay] == seqs
    with pytest.raises(TimeoutError):
        await b.expect("events", within=1.5)
    await a.close()
    await b.close()


async def test_offline_replay_closed_before_result_is_stored_once(server: Served) -> None:
    acct = await register(server.url)
    ops = [op(acct.space_id, f"t-{i}", "title", "x", lamport=i + 1) for i in range(50)]
    first = await Device.connect(server.ws_url, acct.access_token)
    await first.send({"type": "push", "batch_id": "b1", "ops": ops})
    await first.ws.close()  # gone before push_result
    second = await Device.connect(server.ws_url, acct.access_token)
    reply = await second.push(ops, "b1")
    assert {r["status"] for r in reply["results"]} <= {"applied", "duplicate"}
    pulled = await http(
        server.url,
        "GET",
        "/v1/sync/pull",
        acct.access_token,
        params={"space_id": acct.space_id, "after": 0, "limit": 1000},
    )
    stored = [e["op_id"] for e in pulled.json()["events"] if e["kind"] == "set"]
    assert sorted(stored) == sorted(o["op_id"] for o in ops)
    assert len(stored) == len(set(stored))
    await second.close()


async def test_resume_after_n_receives_exactly_the_rest(server: Served) -> None:
    acct = await register(server.url)
    writer = await Device.connect(server.ws_url, acct.access_token)
    reply = await writer.push([op(acct.space_id, f"t-{i}", lamport=i + 1) for i in range(30)])
    head = reply["results"][-1]["seq"]
    reader = await Device.connect(
        server.ws_url, acct.access_token, [{"space_id": acct.space_id, "after": 10}]
    )
    caught = await reader.expect("caught_up")
    assert caught["seq"] == head
    assert reader.seqs(acct.space_id) == list(range(11, head + 1))
    # Subscribing again resumes from max(after, last delivered): nothing repeats.
    await reader.send({"type": "subscribe", "space_id": acct.space_id, "after": 0})
    again = await reader.expect("caught_up")
    assert again["seq"] == head
    assert reader.seqs(acct.space_id) == list(range(11, head + 1))
    await writer.close()
    await reader.close()


async def test_msgpack_subprotocol(server: Served) -> None:
    acct = await register(server.url)
    device = await Device.connect(
        server.ws_url, acct.access_token, [{"space_id": acct.space_id, "after": 0}], msgpack=True
    )
    await device.expect("caught_up")
    reply = await device.push([op(acct.space_id, lamport=5)])
    assert reply["results"][0]["status"] == "applied"
    assert reply["server_lamport"] == 5
    await device.wait_for_seq(acct.space_id, reply["results"][0]["seq"])
    await device.send({"type": "ping", "nonce": 7})
    assert (await device.expect("pong"))["nonce"] == 7
    await device.close()


async def test_non_member_gets_not_found_and_nothing(server: Served) -> None:
    owner = await register(server.url)
    stranger = await register(server.url)
    spy = await Device.connect(
        server.ws_url, stranger.access_token, [{"space_id": owner.space_id, "after": 0}]
    )
    error = await spy.expect("error")
    assert (error["error"]["code"], error["ref"]) == ("not_found", owner.space_id)
    reply = await spy.push([op(owner.space_id)])
    assert reply["results"][0]["error"]["code"] == "not_found"
    assert reply["server_lamport"] == 0
    writer = await Device.connect(server.ws_url, owner.access_token)
    await writer.push([op(owner.space_id, lamport=3)])
    with pytest.raises(TimeoutError):
        await spy.expect("events", within=1.5)
    assert owner.space_id not in spy.events
    await spy.close()
    await writer.close()


async def _share(server: Served, owner_token: str, space: str, member: Account, role: str) -> None:
    """Invite ``member`` and accept the code as them."""
    r = await http(
        server.url,
        "POST",
        f"/v1/spaces/{space}/members",
        owner_token,
        json={"email": member.email, "role": role},
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


async def test_reader_push_is_forbidden(server: Served) -> None:
    owner = await register(server.url)
    reader = await register(server.url)
    await _share(server, owner.access_token, owner.space_id, reader, "reader")
    device = await Device.connect(server.ws_url, reader.access_token)
    reply = await device.push([op(owner.space_id)])
    assert reply["results"][0]["error"]["code"] == "forbidden"
    await device.close()


async def test_removed_member_receives_nothing_after_removal(server: Served) -> None:
    owner = await register(server.url)
    member = await register(server.url)
    await _share(server, owner.access_token, owner.space_id, member, "editor")
    second = await login(server.url, member, "tablet")
    subs = [{"space_id": owner.space_id, "after": 0}]
    conns = [
        await Device.connect(server.ws_url, member.access_token, subs),
        await Device.connect(server.ws_url, second.access_token, subs),
    ]
    for conn in conns:
        await conn.expect("caught_up")
    writer = await Device.connect(server.ws_url, owner.access_token)
    await writer.push([op(owner.space_id, "t-1", lamport=2)])
    r = await http(
        server.url,
        "DELETE",
        f"/v1/spaces/{owner.space_id}/members/{member.user_id}",
        owner.access_token,
    )
    assert r.status_code == 204, r.text
    await writer.push([op(owner.space_id, "t-2", lamport=3)])
    for conn in conns:
        error = await conn.expect("error", within=10)
        assert (error["error"]["code"], error["ref"]) == ("not_found", owner.space_id)
        events = conn.events[owner.space_id]
        removal = [e for e in events if e["kind"] == "member_removed"]
        assert len(removal) == 1
        assert events[-1] == removal[0], "nothing after the member_removed event"
        with pytest.raises(TimeoutError):
            await conn.expect("events", within=1)
        await conn.close()
    await writer.close()


async def test_logout_closes_live_connections_4401(server: Served) -> None:
    acct = await register(server.url)
    device = await Device.connect(server.ws_url, acct.access_token)
    r = await http(server.url, "POST", "/v1/auth/logout", acct.access_token)
    assert r.status_code == 204
    assert await device.close_code() == 4401


async def test_first_message_must_be_hello(server: Served) -> None:
    device = await Device.connect(server.ws_url, hello=False)
    await device.send({"type": "ping", "nonce": 1})
    assert await device.close_code() == 4401


async def test_bad_token_closes_4401(server: Served) -> None:
    device = await Device.connect(server.ws_url, hello=False)
    await device.send({"type": "hello", "token": "nope"})
    assert await device.close_code() == 4401


async def test_no_hello_in_time_closes_4408(server: Served) -> None:
    device = await Device.connect(server.ws_url, hello=False)
    assert await device.close_code() == 4408


BAD_FRAMES: list[tuple[str, Any]] = [
    ("garbage", "}{not json"),
    ("not an object", "[1, 2]"),
    ("no type", {"token": "x"}),
    ("unknown type", {"type": "teleport"}),
    ("second hello", {"type": "hello", "token": "x"}),
    ("push without ops", {"type": "push", "batch_id": "b"}),
    ("push ops not a list", {"type": "push", "batch_id": "b", "ops": 5}),
    ("push batch_id mistyped", {"type": "push", "batch_id": 5, "ops": []}),
    ("subscribe without space", {"type": "subscribe"}),
    ("subscribe after mistyped", {"type": "subscribe", "space_id": "s", "after": "x"}),
    ("unsubscribe mistyped", {"type": "unsubscribe", "space_id": 3}),
    ("auth without token", {"type": "auth"}),
    ("ping nonce mistyped", {"type": "ping", "nonce": {"a": 1}}),
]


async def test_bad_frames_get_errors_and_the_connection_survives(server: Served) -> None:
    acct = await register(server.url)
    device = await Device.connect(server.ws_url, acct.access_token)
    for name, frame in BAD_FRAMES:
        await device.ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        error = await device.expect("error")
        assert error["error"]["code"] == "bad_message", name
        await device.send({"type": "ping", "nonce": name})
        assert (await device.expect("pong"))["nonce"] == name
    # Per-op problems are results, not errors: the push answers with invalid_op.
    reply = await device.push([{"op_id": "nope"}, 17])  # type: ignore[list-item]
    assert [r["error"]["code"] for r in reply["results"]] == ["invalid_op", "invalid_op"]
    # Over the published limits: one too_large error naming the batch, nothing stored.
    limit = 1000
    big = [op(acct.space_id, f"t-{i}", lamport=1) for i in range(limit + 1)]
    await device.send({"type": "push", "batch_id": "big", "ops": big})
    error = await device.expect("error")
    assert (error["error"]["code"], error["ref"]) == ("too_large", "big")
    huge = [op(acct.space_id, "t-1", "notes", "x" * 9000, lamport=1) for _ in range(200)]
    await device.send({"type": "push", "batch_id": "huge", "ops": huge})
    error = await device.expect("error")
    assert (error["error"]["code"], error["ref"]) == ("too_large", "huge")
    # Subscribing to a space id that is not a UUID is simply not_found.
    await device.send({"type": "subscribe", "space_id": "s", "after": 0})
    error = await device.expect("error")
    assert (error["error"]["code"], error["ref"]) == ("not_found", "s")
    await device.send({"type": "ping", "nonce": "still here"})
    assert (await device.expect("pong"))["nonce"] == "still here"
    await device.close()


async def test_many_malformed_in_a_row_close_4400(server: Served) -> None:
    acct = await register(server.url)
    device = await Device.connect(server.ws_url, acct.access_token)
    for _ in range(12):
        await device.ws.send("garbage")
    assert await device.close_code() == 4400


async def test_unsubscribe_stops_delivery(server: Served) -> None:
    acct = await register(server.url)
    device = await Device.connect(
        server.ws_url, acct.access_token, [{"space_id": acct.space_id, "after": 0}]
    )
    await device.expect("caught_up")
    await device.send({"type": "unsubscribe", "space_id": acct.space_id})
    await device.send({"type": "ping", "nonce": "sync"})
    await device.expect("pong")
    other = await Device.connect(server.ws_url, acct.access_token)
    await other.push([op(acct.space_id, str(uuid.uuid4()), lamport=9)])
    with pytest.raises(TimeoutError):
        await device.expect("events", within=1.5)
    await device.close()
    await other.close()
