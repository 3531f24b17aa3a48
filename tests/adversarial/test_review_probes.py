"""The outside review's probes as a table, against a real gateway (issue 15).

Each probe is what an attacker or a broken client sends; each row names the documented
answer. After every probe the server must still serve (``/healthz``, a signed-in read),
and after every WebSocket probe that is not meant to close, the same socket must still
answer a ping.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from core.settings import Settings
from tests.e2e.harness import Account, Device, ServerProcess, http, login, op, register

SPELLINGS: list[Callable[[str], str]] = [
    str,
    str.upper,
    lambda u: u.replace("-", ""),
    lambda u: "{" + u + "}",
    lambda u: "urn:uuid:" + u,
]


@dataclass
class World:
    """One gateway and the accounts the probes use: ``victim`` owns a space shared
    with ``member``; ``attacker`` belongs to nothing of theirs."""

    server: ServerProcess
    victim: Account
    member: Account
    attacker: Account


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[ServerProcess]:
    process = ServerProcess(settings).start()
    yield process
    process.stop()


@pytest.fixture
async def world(server: ServerProcess) -> World:
    victim, member, attacker = [await register(server.url) for _ in range(3)]
    r = await http(
        server.url,
        "POST",
        f"/v1/spaces/{victim.space_id}/members",
        victim.access_token,
        json={"email": member.email, "role": "editor"},
    )
    assert r.status_code == 202, r.text
    accepted = await http(
        server.url,
        "POST",
        "/v1/invitations/accept",
        member.access_token,
        json={"code": r.json()["code"]},
    )
    assert accepted.status_code == 200, accepted.text
    return World(server, victim, member, attacker)


async def still_serving(w: World) -> None:
    async with httpx.AsyncClient(base_url=w.server.url, timeout=10) as client:
        assert (await client.get("/healthz")).status_code == 200
    r = await http(w.server.url, "GET", "/v1/spaces", w.victim.access_token)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- HTTP probes


def forged(w: World, key: str = "an attacker guessing the signing key", alg: str = "HS256") -> str:
    claims = {
        "sub": w.attacker.user_id,
        "did": w.attacker.device_id,
        "exp": int(time.time()) + 600,
        "iat": int(time.time()),
    }
    return jwt.encode(claims, key, algorithm=alg)


def unsigned(w: World) -> str:
    header = {"alg": "none", "typ": "JWT"}
    claims = {"sub": w.victim.user_id, "exp": int(time.time()) + 600}
    parts = [jwt.utils.base64url_encode(json.dumps(p).encode()).decode() for p in (header, claims)]
    return ".".join([*parts, ""])


def pull(space: str, token: str, **params: Any) -> tuple[str, str, str, dict[str, Any]]:
    return "GET", "/v1/sync/pull", token, {"params": {"space_id": space, "after": 0, **params}}


def body(method: str, path: str, token: str, raw: str) -> tuple[str, str, str, dict[str, Any]]:
    return method, path, token, {"content": raw, "headers": {"content-type": "application/json"}}


def push_one(w: World, **changes: Any) -> tuple[str, str, str, dict[str, Any]]:
    one = op(w.victim.space_id, "t-probe", lamport=2)
    one.update(changes)
    raw = json.dumps({"batch_id": "probe", "ops": [one]})
    return body("POST", "/v1/sync/push", w.victim.access_token, raw)


def push_raw_value(w: World, value_json: str) -> tuple[str, str, str, dict[str, Any]]:
    one = op(w.victim.space_id, "t-probe", lamport=2, value="__VALUE__")
    raw = json.dumps({"batch_id": "probe", "ops": [one]}).replace('"__VALUE__"', value_json)
    return body("POST", "/v1/sync/push", w.victim.access_token, raw)


Request = tuple[str, str, str, dict[str, Any]]

#: (probe, the request, expected status, expected error code; "invalid_op" means a 200
#: push_result whose one op is rejected with that code)
HTTP_PROBES: list[tuple[str, Callable[[World], Request], int, str]] = [
    (
        "forged token (wrong key)",
        lambda w: pull(w.victim.space_id, forged(w)),
        401,
        "unauthenticated",
    ),
    ("token with alg none", lambda w: pull(w.victim.space_id, unsigned(w)), 401, "unauthenticated"),
    (
        "swapped token: another user's on the victim's space",
        lambda w: pull(w.victim.space_id, w.attacker.access_token),
        404,
        "not_found",
    ),
    (
        "refresh token used as an access token",
        lambda w: pull(w.victim.space_id, w.victim.refresh_token),
        401,
        "unauthenticated",
    ),
    (
        "access token used as a refresh token",
        lambda w: body(
            "POST", "/v1/auth/refresh", "", json.dumps({"refresh_token": w.victim.access_token})
        ),
        401,
        "unauthenticated",
    ),
    (
        "NUL in a registration email",
        lambda w: body(
            "POST",
            "/v1/auth/register",
            "",
            json.dumps({"email": "a\u0000@example.test", "password": "x" * 12, "device_name": "d"}),
        ),
        400,
        "bad_message",
    ),
    (
        "NUL in a device name",
        lambda w: body(
            "POST",
            "/v1/auth/login",
            "",
            json.dumps({"email": w.victim.email, "password": "x" * 12, "device_name": "d\u0000"}),
        ),
        400,
        "bad_message",
    ),
    (
        "NUL in a space name",
        lambda w: body("POST", "/v1/spaces", w.victim.access_token, '{"name": "a\\u0000b"}'),
        400,
        "bad_message",
    ),
    (
        "lone surrogate in a space name",
        lambda w: body("POST", "/v1/spaces", w.victim.access_token, '{"name": "a\\ud800b"}'),
        400,
        "bad_message",
    ),
    ("NUL in an op value", lambda w: push_raw_value(w, '"a\\u0000b"'), 200, "invalid_op"),
    (
        "lone surrogate in an op value",
        lambda w: push_raw_value(w, '"a\\udfffb"'),
        200,
        "invalid_op",
    ),
    ("NUL in a field name", lambda w: push_one(w, field="ti\u0000tle"), 200, "invalid_op"),
    ("NUL in an entity id", lambda w: push_one(w, entity_id="t\u0000"), 200, "invalid_op"),
    (
        "JSON nested 5,000 deep",
        lambda w: body(
            "POST", "/v1/spaces", w.victim.access_token, '{"name":' + "[" * 5000 + "]" * 5000 + "}"
        ),
        400,
        "bad_message",
    ),
    (
        "a cursor of 2^63",
        lambda w: pull(w.victim.space_id, w.victim.access_token, after=2**63),
        400,
        "bad_message",
    ),
    (
        "a page size of 0",
        lambda w: pull(w.victim.space_id, w.victim.access_token, limit=0),
        400,
        "bad_message",
    ),
    (
        "an invitation code that cannot be one",
        lambda w: body(
            "POST", "/v1/invitations/accept", w.attacker.access_token, '{"code": "../../etc"}'
        ),
        400,
        "bad_message",
    ),
    (
        "a well-formed code nobody issued",
        lambda w: body(
            "POST",
            "/v1/invitations/accept",
            w.attacker.access_token,
            json.dumps({"code": "A" * 43}),
        ),
        404,
        "not_found",
    ),
]


@pytest.mark.parametrize(
    ("build", "status", "code"),
    [pytest.param(b, s, c, id=name) for name, b, s, c in HTTP_PROBES],
)
async def test_http_probe(
    world: World, build: Callable[[World], Request], status: int, code: str
) -> None:
    method, path, token, kw = build(world)
    headers = {**kw.pop("headers", {}), **({"authorization": f"Bearer {token}"} if token else {})}
    async with httpx.AsyncClient(base_url=world.server.url, timeout=30) as client:
        r = await client.request(method, path, headers=headers, **kw)
    assert r.status_code == status, r.text
    answer = r.json()
    if code == "invalid_op":
        [result] = answer["results"]
        assert (result["status"], result["error"]["code"]) == ("rejected", code)
    else:
        assert answer["error"]["code"] == code
    assert "postgres" not in r.text.lower()
    assert "asyncpg" not in r.text.lower()
    await still_serving(world)


async def test_five_spellings_of_one_space_read_the_same(world: World) -> None:
    expected: list[int] | None = None
    for spell in SPELLINGS:
        method, path, token, kw = pull(spell(world.victim.space_id), world.victim.access_token)
        r = await http(world.server.url, method, path, token, **kw)
        assert r.status_code == 200, r.text
        events = r.json()["events"]
        assert {e["space_id"] for e in events} == {world.victim.space_id}
        seqs = [e["seq"] for e in events]
        expected = expected or seqs
        assert seqs == expected
    await still_serving(world)


async def test_an_invitation_code_is_good_once(world: World) -> None:
    r = await http(
        world.server.url,
        "POST",
        f"/v1/spaces/{world.victim.space_id}/members",
        world.victim.access_token,
        json={"email": f"x-{uuid.uuid4().hex[:8]}@example.test", "role": "reader"},
    )
    code = r.json()["code"]
    accept = ("POST", "/v1/invitations/accept")
    first = await http(world.server.url, *accept, world.attacker.access_token, json={"code": code})
    assert first.status_code == 200, first.text
    for who in (world.attacker, world.member, world.victim):
        again = await http(world.server.url, *accept, who.access_token, json={"code": code})
        assert (again.status_code, again.json()["error"]["code"]) == (404, "not_found")
    await still_serving(world)


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    settings: Settings,
) -> None:
    """The per-address login limit counts the real peer, whatever X-Forwarded-For says."""
    gateway = ServerProcess(settings, options={"login_address_attempts": 3}).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            statuses = []
            for i in range(4):
                r = await client.post(
                    "/v1/auth/login",
                    json={"email": "nobody@example.test", "password": "x" * 12, "device_name": "d"},
                    headers={"X-Forwarded-For": f"203.0.113.{i}"},
                )
                statuses.append(r.status_code)
        assert statuses == [401, 401, 401, 429]
    finally:
        gateway.stop()


# --------------------------------------------------------------------------- WebSocket probes

Probe = Callable[[Device, World], Awaitable[None]]


async def expect_error(device: Device, code: str, ref: str | None = None) -> None:
    error = await device.expect("error")
    assert error["error"]["code"] == code, error
    if ref is not None:
        assert error["ref"] == ref


async def ws_deep(device: Device, w: World) -> None:
    await device.ws.send('{"type":"subscribe","space_id":' + "[" * 5000 + "]" * 5000 + "}")
    await expect_error(device, "bad_message")


async def ws_huge_cursor(device: Device, w: World) -> None:
    await device.ws.send(
        json.dumps({"type": "subscribe", "space_id": w.victim.space_id, "after": 2**63})
    )
    await expect_error(device, "bad_message")


async def ws_nul_in_space_id(device: Device, w: World) -> None:
    await device.ws.send('{"type":"subscribe","space_id":"\\u0000","after":0}')
    await expect_error(device, "bad_message")


async def ws_nul_value(device: Device, w: World) -> None:
    one = op(w.victim.space_id, "t-ws", lamport=2, value="__V__")
    await device.ws.send(
        json.dumps({"type": "push", "batch_id": "nul", "ops": [one]}).replace(
            '"__V__"', '"x\\u0000"'
        )
    )
    [result] = (await device.expect("push_result"))["results"]
    assert result["error"]["code"] == "invalid_op"


async def ws_surrogate_value(device: Device, w: World) -> None:
    one = op(w.victim.space_id, "t-ws", lamport=2, value="__V__")
    await device.ws.send(
        json.dumps({"type": "push", "batch_id": "sur", "ops": [one]}).replace(
            '"__V__"', '"x\\ud800"'
        )
    )
    [result] = (await device.expect("push_result"))["results"]
    assert result["error"]["code"] == "invalid_op"


async def ws_foreign_space(device: Device, w: World) -> None:
    await device.send({"type": "subscribe", "space_id": w.attacker.space_id, "after": 0})
    await expect_error(device, "not_found", w.attacker.space_id)


async def ws_five_spellings(device: Device, w: World) -> None:
    for spell in SPELLINGS:
        await device.send({"type": "subscribe", "space_id": spell(w.victim.space_id)})
        assert (await device.expect("caught_up"))["space_id"] == w.victim.space_id
    assert list(device.events) == [w.victim.space_id]
    seqs = [e["seq"] for e in device.events[w.victim.space_id]]
    assert seqs == sorted(set(seqs)), "each event once"


WS_PROBES: list[tuple[str, Probe]] = [
    ("JSON nested 5,000 deep", ws_deep),
    ("a cursor of 2^63", ws_huge_cursor),
    ("NUL in a space id", ws_nul_in_space_id),
    ("NUL in an op value", ws_nul_value),
    ("lone surrogate escape in an op value", ws_surrogate_value),
    ("subscribe to another user's space", ws_foreign_space),
    ("five spellings of one space", ws_five_spellings),
]


@pytest.mark.parametrize("probe", [pytest.param(p, id=name) for name, p in WS_PROBES])
async def test_ws_probe_and_the_socket_stays_usable(world: World, probe: Probe) -> None:
    device = await Device.connect(world.server.ws_url, world.victim.access_token)
    await probe(device, world)
    await device.send({"type": "ping", "nonce": "still here"})
    assert (await device.expect("pong"))["nonce"] == "still here"
    await device.close()
    await still_serving(world)


async def test_ws_resubscribe_after_removal(world: World) -> None:
    device = await Device.connect(
        world.server.ws_url,
        world.member.access_token,
        [{"space_id": world.victim.space_id, "after": 0}],
    )
    await device.expect("caught_up")
    r = await http(
        world.server.url,
        "DELETE",
        f"/v1/spaces/{world.victim.space_id}/members/{world.member.user_id}",
        world.victim.access_token,
    )
    assert r.status_code == 204
    await expect_error(device, "not_found", world.victim.space_id)
    assert device.events[world.victim.space_id][-1]["kind"] == "member_removed"
    await device.send({"type": "subscribe", "space_id": world.victim.space_id, "after": 10**9})
    await expect_error(device, "not_found", world.victim.space_id)
    await device.send({"type": "ping", "nonce": "usable"})
    assert (await device.expect("pong"))["nonce"] == "usable"
    await device.close()
    await still_serving(world)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda w: forged(w), id="forged token"),
        pytest.param(lambda w: unsigned(w), id="alg none"),
        pytest.param(lambda w: w.victim.refresh_token, id="refresh token"),
    ],
)
async def test_ws_hello_with_a_bad_token_closes_4401(
    world: World, token: Callable[[World], str]
) -> None:
    device = await Device.connect(world.server.ws_url, hello=False)
    await device.send({"type": "hello", "token": token(world)})
    assert await device.close_code() == 4401
    await still_serving(world)


async def test_ws_auth_with_another_users_token_closes_4401(world: World) -> None:
    device = await Device.connect(world.server.ws_url, world.victim.access_token)
    await device.send({"type": "auth", "token": world.attacker.access_token})
    assert await device.close_code() == 4401
    laptop = await login(world.server.url, world.victim)
    fresh = await Device.connect(world.server.ws_url, laptop.access_token)
    await fresh.send({"type": "ping", "nonce": 1})
    assert (await fresh.expect("pong"))["nonce"] == 1
    await fresh.close()
