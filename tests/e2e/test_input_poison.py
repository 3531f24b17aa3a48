"""Input that poisons, against a real gateway (issue 15): strings with a NUL or an
unpaired surrogate, internal errors, and the lamport headroom.

* Every string a client sends is plain text (docs/protocol.md section 2): an op holding a NUL or
  an unpaired surrogate anywhere is ``invalid_op`` and nothing of it is stored, over HTTP
  and over the WebSocket (JSON and MessagePack); anywhere else in a message it is
  ``bad_message``.
* No client ever reads a database error: an internal error answers a generic message
  naming the request id (HTTP) or a reference (WebSocket), the detail goes to the log.
* A lamport may be at most ``lamport_headroom`` (2^20) above the space's highest one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import pytest

from core.settings import Settings
from eventstore.postgres import PostgresEventStore
from gateway.params import UNPAIRED_SURROGATE
from projector.apply import apply_space
from tests.conftest import TEST_ADMIN_TOKEN, TEST_SECRET
from tests.e2e.conftest import Api, GatewayProcess, Session, set_op
from tests.e2e.harness import Device
from tests.integration.test_projector_support import append_unchecked

Op = dict[str, Any]
NUL = "\x00"
#: A lone surrogate: json.dumps writes it as the escape "\ud800" (valid JSON grammar).
LONE = "\ud800"


def _ws_url(gateway: GatewayProcess) -> str:
    return gateway.base_url.replace("http://", "ws://") + "/v1/sync"


def _json(body: Any) -> bytes:
    """JSON as Python writes it: unpaired surrogates as \\uXXXX escapes."""
    return json.dumps(body, ensure_ascii=True).encode()


def _with(**changes: Any) -> Callable[[Op], Op]:
    return lambda raw: {**raw, **changes}


def _tag(text: str) -> Callable[[Op], Op]:
    """The op made a ``tags`` add of ``text``."""
    return lambda raw: {**raw, "kind": "add", "field": "tags", "value": text}


#: Per-op mutations, each with a NUL or lone surrogate in one place of the op.
OP_CASES: list[tuple[str, Callable[[Op], Op]]] = []
for _name, _bad in (("NUL", f"a{NUL}b"), ("lone surrogate", f"a{LONE}b")):
    OP_CASES += [
        (f"{_name} in a value", _with(value=_bad)),
        (f"{_name} in a field name", _with(field=_bad)),
        (f"{_name} in an entity_id", _with(entity_id=_bad)),
        (f"{_name} in an entity_type", _with(entity_type=_bad)),
        (f"{_name} in a set element", _tag(_bad)),
        (f"{_name} in a nested value", _with(value={"k": ["ok", _bad]})),
        (f"{_name} in a nested key", _with(value={_bad: 1})),
        (f"{_name} in client_time", _with(client_time=_bad)),
        (f"{_name} in device_id", _with(device_id=_bad)),
    ]


def _pull(api: Api, user: Session, space: str) -> list[dict[str, Any]]:
    r = api.http.get("/v1/sync/pull", params={"space_id": space}, headers=user.headers)
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


@pytest.mark.parametrize(("name", "mutate"), OP_CASES, ids=[c[0] for c in OP_CASES])
def test_an_op_with_nul_or_lone_surrogate_is_invalid_op_over_http(
    api: Api, name: str, mutate: Callable[[Op], Op]
) -> None:
    user = api.register()
    space = user.personal_space_id
    good = set_op(space, "t-good", "fine", lamport=1)
    bad = mutate(set_op(space, "t-bad", "x", lamport=2))
    r = api.http.post(
        "/v1/sync/push",
        content=_json({"batch_id": "b", "ops": [good, bad]}),
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["status"] == "applied", name
    assert second["status"] == "rejected", name
    assert second["error"]["code"] == "invalid_op", second
    if "entity_id" not in name:  # that one breaks the entity_id pattern first
        assert "must not contain NUL or an unpaired surrogate" in second["error"]["message"]
    assert second["op_id"] == bad["op_id"]
    events = _pull(api, user, space)
    assert [e["op_id"] for e in events[1:]] == [good["op_id"]]  # nothing of the bad op


def test_a_nul_value_is_never_stored_and_the_read_model_keeps_up(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    results = api.push(user, [set_op(space, "t-1", f"milk{NUL}")]).json()["results"]
    assert results[0]["error"]["code"] == "invalid_op"
    assert len(_pull(api, user, space)) == 1  # the member_added event only
    r = api.http.get(f"/v1/spaces/{space}/entities/task/t-1", headers=user.headers)
    assert r.status_code == 404


REG = "/v1/auth/register"
REGISTER = {"email": "n@example.test", "password": "long enough", "device_name": "x"}
LOGIN = {**REGISTER, "email": "a@b.cd"}


async def test_a_quarantined_entity_is_read_from_the_log(api: Api, settings: Settings) -> None:
    # A NUL title stored by an older server: the projector quarantines it, and reads of
    # its task replay the log, so the client still gets the whole merged state.
    user = api.register()
    space = user.personal_space_id
    assert api.push(user, [set_op(space, "t-1", "milk")]).json()["results"][0]["seq"] == 2
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
            seq = await append_unchecked(
                store, user.user_id, space, entity_id="t-1", value=f"old{NUL}", lamport=2
            )
        async with pool.acquire() as conn:
            applied = await apply_space(conn, space)
        assert applied is not None
        assert (applied.seq, applied.quarantined) == (seq, 1)
    finally:
        await pool.close()
    r = api.http.get(f"/v1/spaces/{space}/entities/task/t-1", headers=user.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["seq"], r.json()["fields"]["title"]["value"]) == (seq, f"old{NUL}")
    listed = api.http.get(f"/v1/spaces/{space}/entities", headers=user.headers).json()
    assert [e["fields"]["title"]["value"] for e in listed["entities"]] == [f"old{NUL}"]
    # Operators see it: ids and the error type, never the error text.
    admin = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
    figures = api.http.get("/v1/diagnostics", headers=admin).json()
    assert figures["projector_quarantined_events"] >= 1
    [shown] = [q for q in figures["quarantined_events"] if q["space_id"] == space]
    assert (shown["seq"], shown["entity_id"]) == (seq, "t-1")
    assert shown["error_type"] == "CharacterNotInRepertoireError (22021)"
    assert "error" not in shown
    metrics = api.http.get("/metrics", headers=admin).text
    [gauge] = [
        line
        for line in metrics.splitlines()
        if line.startswith("concord_projector_quarantined_events ")
    ]
    assert float(gauge.split()[1]) >= 1


BODY_CASES: list[tuple[str, str, dict[str, Any], bool]] = []
for _name, _bad in (("NUL", f"a{NUL}b"), ("lone surrogate", f"a{LONE}b")):
    BODY_CASES += [
        (f"{_name} in register email", REG, {**REGISTER, "email": _bad}, False),
        (f"{_name} in register password", REG, {**REGISTER, "password": _bad * 4}, False),
        (f"{_name} in register device_name", REG, {**REGISTER, "device_name": _bad}, False),
        (f"{_name} in login password", "/v1/auth/login", {**LOGIN, "password": _bad * 4}, False),
        (f"{_name} in login device_id", "/v1/auth/login", {**LOGIN, "device_id": _bad}, False),
        (f"{_name} in a refresh token", "/v1/auth/refresh", {"refresh_token": _bad * 20}, False),
        (f"{_name} in a space name", "/v1/spaces", {"name": _bad}, True),
        (f"{_name} in a push batch_id", "/v1/sync/push", {"batch_id": _bad, "ops": []}, True),
    ]


@pytest.mark.parametrize(
    ("name", "path", "body", "authed"), BODY_CASES, ids=[c[0] for c in BODY_CASES]
)
def test_nul_or_lone_surrogate_in_an_http_body_is_bad_message(
    api: Api, name: str, path: str, body: dict[str, Any], authed: bool
) -> None:
    headers = {"Content-Type": "application/json"}
    if authed:
        headers.update(api.register().headers)
    r = api.http.post(path, content=_json(body), headers=headers)
    assert r.status_code == 400, (name, r.text)
    assert r.json()["error"]["code"] == "bad_message"
    if name.startswith("lone surrogate") and path != "/v1/sync/push":
        # said as it is, not as msgspec words it ("Input data was truncated")
        assert r.json()["error"]["message"] == UNPAIRED_SURROGATE


def test_nul_in_a_member_email_is_bad_message(api: Api) -> None:
    owner = api.register()
    r = api.http.post(
        f"/v1/spaces/{owner.personal_space_id}/members",
        content=_json({"email": f"x{NUL}@example.test", "role": "reader"}),
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_message"


# --------------------------------------------------------------------------- WebSocket


async def test_ops_with_nul_or_lone_surrogate_are_invalid_op_over_websocket_json(
    api: Api, gateway: GatewayProcess
) -> None:
    user = api.register()
    space = user.personal_space_id
    device = await Device.connect(_ws_url(gateway), user.access_token)
    try:
        ops = [set_op(space, "t-good", "fine", lamport=1)]
        ops += [mutate(set_op(space, "t-bad", "x", lamport=2)) for _, mutate in OP_CASES]
        reply = await device.push(ops)
        codes = [(r["status"], r.get("error", {}).get("code")) for r in reply["results"]]
        assert codes == [("applied", None)] + [("rejected", "invalid_op")] * len(OP_CASES)
        # Anywhere else in a message: bad_message, and the connection stays.
        await device.send({"type": "push", "batch_id": f"b{NUL}", "ops": ops[:1]})
        assert (await device.expect("error"))["error"]["code"] == "bad_message"
        await device.ws.send(json.dumps({"type": "ping", "nonce": LONE}))
        assert (await device.expect("error"))["error"]["code"] == "bad_message"
        await device.send({"type": "ping", "nonce": "alive"})
        assert (await device.expect("pong"))["nonce"] == "alive"
    finally:
        await device.close()
    events = _pull(api, user, space)
    assert [e["op_id"] for e in events[1:]] == [ops[0]["op_id"]]


def _msgpack_with_lone_surrogate(message: dict[str, Any], placeholder: str) -> bytes:
    """``message`` in MessagePack with ``placeholder`` replaced by the (ill-formed) UTF-8
    bytes of a lone surrogate: the only way MessagePack can carry one."""
    encoded = msgspec.msgpack.encode(message)
    raw = placeholder.encode()
    assert len(raw) == 3
    return encoded.replace(b"\xa3" + raw, b"\xa3\xed\xa0\x80")


async def test_ops_with_nul_are_invalid_op_over_websocket_msgpack(
    api: Api, gateway: GatewayProcess
) -> None:
    user = api.register()
    space = user.personal_space_id
    device = await Device.connect(_ws_url(gateway), user.access_token, msgpack=True)
    try:
        nul_ops = [
            _with(value=f"a{NUL}")(set_op(space, "t-1", "x")),
            _tag(NUL)(set_op(space, "t-1", "x")),
        ]
        reply = await device.push(nul_ops)
        assert [r["error"]["code"] for r in reply["results"]] == ["invalid_op", "invalid_op"]
        # A lone surrogate cannot be MessagePack text: the message is bad_message.
        frame = _msgpack_with_lone_surrogate(
            {"type": "push", "batch_id": "s", "ops": [set_op(space, "t-1", "zzz")]}, "zzz"
        )
        await device.ws.send(frame)
        assert (await device.expect("error"))["error"]["code"] == "bad_message"
        await device.send({"type": "ping", "nonce": 1})
        assert (await device.expect("pong"))["nonce"] == 1
    finally:
        await device.close()
    assert len(_pull(api, user, space)) == 1


# --------------------------------------------------------------------------- internal errors

SECRET = "concord-test-secret-detail"


@pytest.fixture
async def failing_inserts(settings: Settings) -> AsyncIterator[str]:
    """A trigger that makes PostgreSQL refuse events of one entity id with a recognisable
    error text, as any unforeseen database error would; the entity id to use."""
    marker = f"boom-{uuid.uuid4().hex[:8]}"
    name = marker.replace("-", "_")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.entity_id = '{marker}' THEN
                    RAISE EXCEPTION '{SECRET}: relation "events" says no';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER {name} BEFORE INSERT ON events
                FOR EACH ROW EXECUTE FUNCTION {name}();
            """
        )
        yield marker
    finally:
        await conn.execute(f"DROP TRIGGER IF EXISTS {name} ON events; DROP FUNCTION {name}()")
        await conn.close()


def _assert_no_database_text(text: str) -> None:
    for leak in (SECRET, "relation", "RaiseError", "event store error", "asyncpg"):
        assert leak not in text, text


def test_an_internal_error_over_http_shows_the_request_id_not_the_database_text(
    api: Api, failing_inserts: str
) -> None:
    user = api.register()
    r = api.push(user, [set_op(user.personal_space_id, failing_inserts, "x")])
    assert r.status_code == 500, r.text
    _assert_no_database_text(r.text)
    error = r.json()["error"]
    assert error["code"] == "internal"
    request_id = r.headers["x-request-id"]
    assert error["message"] == f"internal error; request id {request_id}"
    # The client's own request id is the one quoted.
    mine = f"req-{uuid.uuid4().hex}"
    r = api.http.post(
        "/v1/sync/push",
        json={"batch_id": "b", "ops": [set_op(user.personal_space_id, failing_inserts, "x")]},
        headers={**user.headers, "X-Request-Id": mine},
    )
    assert r.json()["error"]["message"] == f"internal error; request id {mine}"


async def test_an_internal_error_over_websocket_shows_a_reference_not_the_database_text(
    api: Api, gateway: GatewayProcess, failing_inserts: str
) -> None:
    user = api.register()
    device = await Device.connect(_ws_url(gateway), user.access_token)
    try:
        await device.send(
            {
                "type": "push",
                "batch_id": "boom",
                "ops": [set_op(user.personal_space_id, failing_inserts, "x")],
            }
        )
        reply = await device.expect("push_result", within=30)
        _assert_no_database_text(json.dumps(reply))
        (result,) = reply["results"]
        assert result["status"] == "rejected"
        assert result["error"]["code"] == "internal"
        assert result["error"]["message"].startswith("internal error; reference ")
    finally:
        await device.close()


# --------------------------------------------------------------------------- lamport headroom


def test_lamport_headroom_is_two_to_the_twenty(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id  # highest stored lamport: 0 (its member_added event)
    over = set_op(space, "t-1", "too far", lamport=2**20 + 1)
    (result,) = api.push(user, [over]).json()["results"]
    assert result["status"] == "rejected"
    assert result["error"] == {
        "code": "invalid_op",
        "message": "lamport 1048577 is more than 1048576 above the space's highest stored "
        "lamport 0; at most 1048576",
        "retryable": False,
    }
    (result,) = api.push(user, [set_op(space, "t-1", "just", lamport=2**20)]).json()["results"]
    assert result["status"] == "applied"
    # Measured from the new highest lamport: 2^20 above it is fine again.
    (result,) = api.push(user, [set_op(space, "t-2", "on", lamport=2**21)]).json()["results"]
    assert result["status"] == "applied"


async def test_welcome_publishes_the_headroom(api: Api, gateway: GatewayProcess) -> None:
    user = api.register()
    device = await Device.connect(_ws_url(gateway), user.access_token, hello=False)
    try:
        await device.send({"type": "hello", "token": user.access_token})
        welcome = await device.expect("welcome")
        assert welcome["limits"]["lamport_headroom"] == 2**20
    finally:
        await device.close()
