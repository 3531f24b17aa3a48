"""Table-driven: what a client can send wrong, and the status and code it gets back.

Every answer is the error shape of docs/protocol.md; nothing a client sends produces a 5xx.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.e2e.conftest import Api, Session

SPACE = "{space}"  # replaced by the caller's personal space id


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: bytes | None
    status: int
    code: str
    params: dict[str, Any] | None = None
    authed: bool = True


def j(value: Any) -> bytes:
    return json.dumps(value).encode()


def _register(**changes: Any) -> bytes:
    body = {"email": "new@example.test", "password": "long enough", "device_name": "x"}
    return j({**body, **changes})


def _ops(ops: Any, **extra: Any) -> bytes:
    return j({"batch_id": "b", "ops": ops, **extra})


OVERSIZE = b'{"batch_id": "b", "ops": ["' + b"x" * 1_048_600 + b'"]}'
DEEP = b'{"batch_id": "b", "ops": ' + b"[" * 5000 + b"]" * 5000 + b"}"

CASES = [
    Case(
        "garbage bytes",
        "POST",
        "/v1/auth/register",
        b"\xff\xfe\x00garbage",
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "truncated json",
        "POST",
        "/v1/auth/register",
        b'{"email": "a@b.c", ',
        400,
        "bad_message",
        authed=False,
    ),
    Case("empty body", "POST", "/v1/auth/register", b"", 400, "bad_message", authed=False),
    Case("json array", "POST", "/v1/auth/register", b"[1, 2]", 400, "bad_message", authed=False),
    Case("json null", "POST", "/v1/auth/login", b"null", 400, "bad_message", authed=False),
    Case(
        "NaN literal", "POST", "/v1/auth/login", b'{"email": NaN}', 400, "bad_message", authed=False
    ),
    Case(
        "missing field",
        "POST",
        "/v1/auth/register",
        j({"email": "a@b.cd", "password": "long enough"}),
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "wrong type",
        "POST",
        "/v1/auth/register",
        _register(email=42),
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "invalid email",
        "POST",
        "/v1/auth/register",
        _register(email="not-an-email"),
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "short password",
        "POST",
        "/v1/auth/register",
        _register(password="short"),
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "long device name",
        "POST",
        "/v1/auth/register",
        _register(device_name="d" * 201),
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "login device_id type",
        "POST",
        "/v1/auth/login",
        j({"email": "a@b.cd", "password": "p" * 8, "device_name": "x", "device_id": 7}),
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "huge password",
        "POST",
        "/v1/auth/login",
        j({"email": "a@b.cd", "password": "p" * 2000, "device_name": "x"}),
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "NUL in login email",
        "POST",
        "/v1/auth/login",
        j({"email": "a\u0000@b.cd", "password": "p" * 8, "device_name": "x"}),
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "NUL in member email",
        "POST",
        f"/v1/spaces/{SPACE}/members",
        j({"email": "a\u0000b@c.de", "role": "reader"}),
        400,
        "bad_message",
    ),
    Case("NUL in space name", "POST", "/v1/spaces", j({"name": "a\u0000b"}), 400, "bad_message"),
    Case("refresh missing", "POST", "/v1/auth/refresh", j({}), 400, "bad_message", authed=False),
    Case(
        "refresh wrong type",
        "POST",
        "/v1/auth/refresh",
        j({"refresh_token": 5}),
        400,
        "bad_message",
        authed=False,
    ),
    Case(
        "refresh unknown",
        "POST",
        "/v1/auth/refresh",
        j({"refresh_token": "x" * 43}),
        401,
        "unauthenticated",
        authed=False,
    ),
    Case(
        "refresh oversize",
        "POST",
        "/v1/auth/refresh",
        j({"refresh_token": "x" * 5000}),
        401,
        "unauthenticated",
        authed=False,
    ),
    Case("space empty name", "POST", "/v1/spaces", j({"name": "   "}), 400, "bad_message"),
    Case("space long name", "POST", "/v1/spaces", j({"name": "n" * 201}), 400, "bad_message"),
    Case("space name type", "POST", "/v1/spaces", j({"name": ["x"]}), 400, "bad_message"),
    Case(
        "member bad role",
        "POST",
        f"/v1/spaces/{SPACE}/members",
        j({"email": "a@b.cd", "role": "admin"}),
        400,
        "bad_message",
    ),
    Case(
        "member no email",
        "POST",
        f"/v1/spaces/{SPACE}/members",
        j({"role": "reader"}),
        400,
        "bad_message",
    ),
    Case(
        "member bad email",
        "POST",
        f"/v1/spaces/{SPACE}/members",
        j({"email": "nope", "role": "reader"}),
        400,
        "bad_message",
    ),
    Case("accept no code", "POST", "/v1/invitations/accept", j({}), 400, "bad_message"),
    Case("accept code type", "POST", "/v1/invitations/accept", j({"code": 7}), 400, "bad_message"),
    Case(
        "accept short code",
        "POST",
        "/v1/invitations/accept",
        j({"code": "abc"}),
        400,
        "bad_message",
    ),
    Case(
        "accept code charset",
        "POST",
        "/v1/invitations/accept",
        j({"code": "!" * 43}),
        400,
        "bad_message",
    ),
    Case(
        "accept unknown code",
        "POST",
        "/v1/invitations/accept",
        j({"code": "A" * 43}),
        404,
        "not_found",
    ),
    Case(
        "invitations bad cursor",
        "GET",
        f"/v1/spaces/{SPACE}/invitations",
        None,
        400,
        "bad_message",
        {"after": "12.nope"},
    ),
    Case(
        "cancel invitation not a uuid",
        "DELETE",
        f"/v1/spaces/{SPACE}/invitations/zzz",
        None,
        404,
        "not_found",
    ),
    Case("push ops not a list", "POST", "/v1/sync/push", _ops({"op": 1}), 400, "bad_message"),
    Case("push no batch_id", "POST", "/v1/sync/push", j({"ops": []}), 400, "bad_message"),
    Case(
        "push long batch_id",
        "POST",
        "/v1/sync/push",
        j({"batch_id": "b" * 201, "ops": []}),
        400,
        "bad_message",
    ),
    Case("push too many ops", "POST", "/v1/sync/push", _ops([{}] * 1001), 413, "too_large"),
    Case("push oversize body", "POST", "/v1/sync/push", OVERSIZE, 413, "too_large"),
    Case("push deep nesting", "POST", "/v1/sync/push", DEEP, 400, "bad_message"),
    Case("pull no space", "GET", "/v1/sync/pull", None, 400, "bad_message"),
    Case(
        "pull bad after",
        "GET",
        "/v1/sync/pull",
        None,
        400,
        "bad_message",
        {"space_id": SPACE, "after": "x"},
    ),
    Case(
        "pull negative after",
        "GET",
        "/v1/sync/pull",
        None,
        400,
        "bad_message",
        {"space_id": SPACE, "after": -1},
    ),
    Case(
        "pull huge after",
        "GET",
        "/v1/sync/pull",
        None,
        400,
        "bad_message",
        {"space_id": SPACE, "after": 2**70},
    ),
    Case(
        "pull after just past 2^53-1",
        "GET",
        "/v1/sync/pull",
        None,
        400,
        "bad_message",
        {"space_id": SPACE, "after": 2**53},
    ),
    Case(
        "pull zero limit",
        "GET",
        "/v1/sync/pull",
        None,
        400,
        "bad_message",
        {"space_id": SPACE, "limit": 0},
    ),
    Case(
        "pull space not a uuid", "GET", "/v1/sync/pull", None, 404, "not_found", {"space_id": "x"}
    ),
    Case(
        "entity bad as_of_seq",
        "GET",
        f"/v1/spaces/{SPACE}/entities/task/t1",
        None,
        400,
        "bad_message",
        {"as_of_seq": "abc"},
    ),
    Case(
        "entities bad bool",
        "GET",
        f"/v1/spaces/{SPACE}/entities",
        None,
        400,
        "bad_message",
        {"include_deleted": "maybe"},
    ),
    Case(
        "history negative after",
        "GET",
        f"/v1/spaces/{SPACE}/entities/task/t1/history",
        None,
        400,
        "bad_message",
        {"after": -5},
    ),
    Case(
        "reminders bad status",
        "GET",
        f"/v1/spaces/{SPACE}/reminders",
        None,
        400,
        "bad_message",
        {"status": "later"},
    ),
    Case("spaces bad cursor", "GET", "/v1/spaces", None, 400, "bad_message", {"after": "nope"}),
    Case("devices bad cursor", "GET", "/v1/devices", None, 400, "bad_message", {"after": "1.x"}),
    Case("space path not a uuid", "GET", "/v1/spaces/zzz/entities", None, 404, "not_found"),
    Case("unknown route", "GET", "/v1/nothing-here", None, 404, "not_found"),
    Case("method not allowed", "PUT", "/v1/spaces", j({"name": "x"}), 405, "bad_message"),
    Case("no token", "GET", "/v1/spaces", None, 401, "unauthenticated", authed=False),
    # What the OpenAPI document refuses, the server refuses (docs/http-api.md, "The
    # OpenAPI document is exact"): found by schemathesis before the document said so.
    Case("empty cursor", "GET", "/v1/spaces", None, 400, "bad_message", {"after": ""}),
    Case("null limit", "GET", "/v1/devices", None, 400, "bad_message", {"limit": "null"}),
    Case("limit past 2^53-1", "GET", "/v1/spaces", None, 400, "bad_message", {"limit": 2**53}),
    Case(
        "null as_of_seq",
        "GET",
        f"/v1/spaces/{SPACE}/entities/task/t-1",
        None,
        400,
        "bad_message",
        {"as_of_seq": "null"},
    ),
    Case(
        "null status",
        "GET",
        f"/v1/spaces/{SPACE}/reminders",
        None,
        400,
        "bad_message",
        {"status": "null"},
    ),
    Case(
        "upper-case uuid cursor",
        "GET",
        "/v1/spaces",
        None,
        400,
        "bad_message",
        {"after": "0D8C8E2A-1B2C-4D5E-8F90-123456789ABC"},
    ),
    Case(
        "cursor with a final newline",
        "GET",
        "/v1/devices",
        None,
        400,
        "bad_message",
        {"after": "1.0d8c8e2a-1b2c-4d5e-8f90-123456789abc\n"},
    ),
    Case(
        "entity cursor without a type",
        "GET",
        f"/v1/spaces/{SPACE}/entities",
        None,
        400,
        "bad_message",
        {"after": "0"},
    ),
    Case(
        "control character in a name",
        "POST",
        "/v1/spaces",
        j({"name": "a\u0085b"}),
        400,
        "bad_message",
    ),
    Case(
        "email with a space inside",
        "POST",
        "/v1/auth/register",
        _register(email="a@b.cd\u3000x y"),
        400,
        "bad_message",
        authed=False,
    ),
]


@pytest.fixture(scope="module")
def caller(gateway: Any) -> Session:
    api = Api(gateway.base_url)
    try:
        return api.register()
    finally:
        api.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_its_status_and_code(api: Api, caller: Session, case: Case) -> None:
    space = caller.personal_space_id
    path = case.path.replace(SPACE, space)
    params = {k: (space if v == SPACE else v) for k, v in (case.params or {}).items()}
    headers = {"Content-Type": "application/json", "X-Request-Id": f"bad-{uuid.uuid4().hex}"}
    if case.authed:
        headers.update(caller.headers)
    r = api.http.request(case.method, path, content=case.body, params=params, headers=headers)
    assert r.status_code == case.status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == case.code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert body["error"]["retryable"] is False
    assert r.headers["x-request-id"] == headers["X-Request-Id"]


def test_a_push_of_garbage_ops_is_answered_per_op(api: Api, caller: Session) -> None:
    """Malformed ops are ``invalid_op`` results, never a ``bad_message`` for the batch."""
    r = api.http.post(
        "/v1/sync/push",
        json={"batch_id": "g", "ops": [None, 1, "x", [], {"op_id": 5}]},
        headers=caller.headers,
    )
    assert r.status_code == 200
    assert [x["error"]["code"] for x in r.json()["results"]] == ["invalid_op"] * 5


@pytest.mark.parametrize("depth", [100, 900, 2000])
def test_deeply_nested_values_never_break_the_server(api: Api, caller: Session, depth: int) -> None:
    op = {
        "op_id": str(uuid.uuid4()),
        "space_id": caller.personal_space_id,
        "entity_type": "task",
        "entity_id": "deep",
        "kind": "set",
        "field": "title",
        "lamport": 1,
    }
    body = (
        j({"batch_id": "d", "ops": [op]})[:-3]
        + b', "value": '
        + b"[" * depth
        + b"]" * depth
        + b"}]}"
    )
    r = api.http.post(
        "/v1/sync/push",
        content=body,
        headers={**caller.headers, "Content-Type": "application/json"},
    )
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert r.json()["results"][0]["status"] == "rejected"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/spaces", {"after": "0d8c8e2a-1b2c-4d5e-8f90-123456789abc"}),
        ("/v1/devices", {"after": "-62135596800000000.0d8c8e2a-1b2c-4d5e-8f90-123456789abc"}),
        ("/v1/devices", {"after": "999999999999999999.0d8c8e2a-1b2c-4d5e-8f90-123456789abc"}),
        (f"/v1/spaces/{SPACE}/reminders", {"after": "1.0d8c8e2a-1b2c-4d5e-8f90-123456789abc"}),
        (f"/v1/spaces/{SPACE}/entities", {"after": "task/t-1", "type": "task"}),
        ("/v1/spaces", {"limit": 2**53 - 1}),
        ("/v1/spaces", {"limit": 1}),
        ("/v1/sync/pull", {"space_id": SPACE, "after": 2**53 - 1, "limit": 1}),
        ("/v1/sync/pull", {"space_id": SPACE, "after": 0}),
    ],
)
def test_what_the_document_admits_is_accepted(
    api: Api, caller: Session, path: str, params: dict[str, Any]
) -> None:
    """Any cursor of a route's pattern names a position (a time beyond what a datetime
    holds too), even one the server never handed out: 200, never 400."""
    given = {k: v.replace(SPACE, caller.personal_space_id) if isinstance(v, str) else v
             for k, v in params.items()}  # fmt: skip
    r = api.http.get(
        path.replace(SPACE, caller.personal_space_id), params=given, headers=caller.headers
    )
    assert r.status_code == 200, r.text


def test_the_document_states_the_bounds_the_checks_apply(api: Api) -> None:
    """Every seq and page size of the OpenAPI document: the bounds above, stated as
    the checks apply them (a client generated from the document sends nothing refused)."""
    document = api.http.get("/schema/openapi.json").json()
    bounds: dict[tuple[str, str], tuple[int, int]] = {}
    for path, item in document["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            schema = parameter["schema"]
            if schema.get("type") == "integer":
                bounds[(path, parameter["name"])] = (schema["minimum"], schema["maximum"])
    assert bounds[("/v1/sync/pull", "after")] == (0, 2**53 - 1)
    assert bounds[("/v1/sync/pull", "limit")] == (1, 2**53 - 1)
    assert bounds[("/v1/spaces", "limit")] == (1, 2**53 - 1)
    assert set(bounds.values()) == {(0, 2**53 - 1), (1, 2**53 - 1)}, bounds


@pytest.mark.parametrize("name", ["  Family  ", "\u3000Family", "👨\u200d👩\u200d👧", "x" * 200])
def test_names_the_document_admits_are_taken_trimmed(api: Api, caller: Session, name: str) -> None:
    r = api.http.post("/v1/spaces", json={"name": name}, headers=caller.headers)
    assert r.status_code == 201, r.text
    spaces = api.http.get("/v1/spaces", params={"limit": 1000}, headers=caller.headers).json()
    names = {s["space_id"]: s["name"] for s in spaces["spaces"]}
    assert names[r.json()["space_id"]] == name.strip(" ")


def test_a_query_parameter_given_twice_is_refused(api: Api) -> None:
    """Every declared query parameter of every route, given twice: 400, where the last
    value would otherwise win silently (``limit=x&limit=5`` read as 5). Given once, the
    same value is read; an unknown parameter is ignored, twice or not."""
    user = api.register()
    space = user.personal_space_id
    entities = f"/v1/spaces/{space}/entities"
    queries = {
        entities: {"type": "task", "include_deleted": "true", "limit": "5", "after": "task/t1"},
        f"{entities}/task/t1": {"as_of_seq": "2"},
        f"{entities}/task/t1/history": {"limit": "5", "after": "1"},
        f"/v1/spaces/{space}/reminders": {"status": "scheduled", "limit": "5"},
        f"/v1/spaces/{space}/invitations": {"limit": "5"},
        "/v1/spaces": {"limit": "5", "after": space},
        "/v1/devices": {"limit": "5"},
        "/v1/sync/pull": {"space_id": space, "after": "0", "limit": "5"},
    }
    title: dict[str, Any] = {"op_id": str(uuid.uuid4()), "space_id": space, "lamport": 1}
    title |= {"entity_type": "task", "entity_id": "t1", "kind": "set", "field": "title"}
    pushed = api.push(user, [{**title, "value": "one"}])
    assert [r["status"] for r in pushed.json()["results"]] == ["applied"]
    for path, params in queries.items():
        unknown = urlencode([*params.items(), ("utm", "a"), ("utm", "b")])
        once = api.http.get(path, params=unknown, headers=user.headers)
        assert once.status_code == 200, (path, once.text)
        for name in params:
            twice = [(n, v) for n, v in params.items() if n != name]
            twice += [(name, params[name]), (name, params[name])]
            r = api.http.get(path, params=urlencode(twice), headers=user.headers)
            assert r.status_code == 400, (path, name, r.text)
            assert r.json()["error"] == {
                "code": "bad_message",
                "message": f"{name}: given more than once",
                "retryable": False,
            }
