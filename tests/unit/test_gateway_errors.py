"""Every failure renders in the error shape of docs/protocol.md, with its status, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import asyncpg
import msgspec
import pytest
from litestar import Litestar, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.testing import TestClient

from core.errors import ConcordError, Forbidden, NotFound, RateLimited
from gateway.errors import EXCEPTION_HANDLERS, redacted
from gateway.params import OpsRequest
from gateway.requestlog import before_send, request_id_middleware

#: Text a database error might carry: it must never reach a client.
SECRET = 'duplicate key value violates unique constraint "events_pkey" DETAIL: secret'


class Body(msgspec.Struct, frozen=True):
    name: str


@post("/echo", status_code=200)
async def echo(data: JSONBody[Body]) -> Body:
    return data


@get("/raise/{what:str}")
async def raiser(what: FromPath[str], n: Annotated[int, QueryParameter(ge=0)] = 0) -> None:
    if what == "forbidden":
        raise Forbidden("readers may not push")
    if what == "limited":
        raise RateLimited("slow down", retry_after_ms=1500)
    if what == "db":
        raise asyncpg.ConnectionDoesNotExistError("connection lost")
    if what == "os":
        raise ConnectionRefusedError("refused")
    if what == "nul":
        raise asyncpg.CharacterNotInRepertoireError("invalid byte sequence: 0x00")
    if what == "deep":
        raise RecursionError("maximum recursion depth exceeded")
    if what == "store":  # as eventstore.errors.translate words a driver error
        raise ConcordError(f"event store error: UniqueViolationError: {SECRET}")
    if what == "driver":
        raise asyncpg.UniqueViolationError(SECRET)
    raise RuntimeError(f"a bug: {SECRET}")


@post("/ops", status_code=200, request_class=OpsRequest)
async def ops(data: JSONBody[dict[str, list[str]]]) -> dict[str, list[str]]:
    return data


def _app() -> Litestar:
    return Litestar(
        route_handlers=[echo, raiser, ops],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_id_middleware],
        before_send=[before_send],
        request_max_body_size=64,
        logging_config=None,
    )


@pytest.fixture
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(_app()) as c:
        yield c


CASES = [
    ("POST", "/echo", b"\xff", 400, "bad_message", False),
    ("POST", "/echo", b'{"name": 3}', 400, "bad_message", False),
    ("POST", "/echo", b"{}", 400, "bad_message", False),
    ("POST", "/echo", b'{"name": "' + b"x" * 100 + b'"}', 413, "too_large", False),
    ("GET", "/raise/forbidden", None, 403, "forbidden", False),
    ("GET", "/raise/limited", None, 429, "rate_limited", True),
    ("GET", "/raise/db", None, 503, "unavailable", True),
    ("GET", "/raise/os", None, 503, "unavailable", True),
    ("GET", "/raise/deep", None, 400, "bad_message", False),
    ("GET", "/raise/nul", None, 400, "bad_message", False),
    ("GET", "/raise/bug", None, 500, "internal", False),
    ("GET", "/raise/bug?n=x", None, 400, "bad_message", False),
    ("GET", "/raise/bug?n=-1", None, 400, "bad_message", False),
    ("GET", "/nowhere", None, 404, "not_found", False),
    ("DELETE", "/echo", None, 405, "bad_message", False),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "retryable"), CASES)
def test_errors_render_in_the_protocol_shape(
    client: TestClient[Litestar],
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    code: str,
    retryable: bool,
) -> None:
    r = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error["retryable"] is retryable
    assert isinstance(error["message"], str)
    assert error["message"]
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"]


@pytest.mark.parametrize("what", ["store", "driver", "bug"])
def test_an_internal_error_answers_the_request_id_never_its_text(
    client: TestClient[Litestar], what: str
) -> None:
    r = client.get(f"/raise/{what}")
    assert r.status_code == 500
    assert "secret" not in r.text
    assert "events_pkey" not in r.text
    request_id = r.headers["x-request-id"]
    assert r.json()["error"] == {
        "code": "internal",
        "message": f"internal error; request id {request_id}",
        "retryable": False,
    }
    mine = client.get(f"/raise/{what}", headers={"X-Request-Id": "my-request-7"})
    assert mine.json()["error"]["message"] == "internal error; request id my-request-7"


def test_redacted_keeps_protocol_errors_and_hides_internal_ones() -> None:
    not_found = NotFound("no such space")
    assert redacted(not_found) is not_found
    hidden = redacted(ConcordError(f"event store error: {SECRET}"), batch_id="b")
    assert hidden.code == "internal"
    assert not hidden.retryable
    assert hidden.message.startswith("internal error; reference ")
    assert "secret" not in hidden.message


def test_an_ops_body_keeps_lone_surrogates_for_each_op_to_refuse(
    client: TestClient[Litestar],
) -> None:
    headers = {"Content-Type": "application/json"}
    body = b'{"ops": ["a\\ud800", "\\ud83d\\ude00"]}'
    r = client.post("/ops", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"ops": ["a\x00", "\U0001f600"]}
    # Elsewhere such bodies stay bad_message, and so do other malformed ones.
    assert client.post("/echo", content=b'{"name": "\\ud800"}', headers=headers).status_code == 400
    for bad in (b'{"ops": ["\\ud800"]', b'{"ops": [NaN]}', b"\xff"):
        r = client.post("/ops", content=bad, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_message")


def test_rate_limited_carries_retry_after(client: TestClient[Litestar]) -> None:
    r = client.get("/raise/limited")
    assert r.json()["error"]["retry_after_ms"] == 1500
    assert r.headers["retry-after"] == "2"


def test_method_not_allowed_names_the_allowed_methods(client: TestClient[Litestar]) -> None:
    r = client.delete("/echo")
    assert "POST" in r.headers["allow"]


def test_request_id_is_echoed_when_safe(client: TestClient[Litestar]) -> None:
    assert (
        client.post("/echo", json={"name": "a"}, headers={"X-Request-Id": "r-1"}).headers[
            "x-request-id"
        ]
        == "r-1"
    )
    generated = client.get("/nowhere", headers={"X-Request-Id": "<script>"}).headers["x-request-id"]
    assert generated != "<script>"
    assert len(generated) == 32
