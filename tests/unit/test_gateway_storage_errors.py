"""Storage failures are answered 503 ``unavailable`` (retryable), not 500."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import pytest
from litestar import Request

from gateway.errors import on_unexpected


def request() -> Request[Any, Any, Any]:
    scope = {"type": "http", "method": "POST", "path": "/v1/auth/login", "headers": []}
    return Request(scope)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        # Found by ``concord lab chaos --seed 19``: a login during PostgreSQL faults
        # answered 500 internal, and a device gave up instead of retrying.
        asyncpg.InternalClientError(
            "cannot switch to state 11; another operation (2) is in progress"
        ),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ],
)
def test_a_connection_lost_under_a_query_is_unavailable_not_internal(error: Exception) -> None:
    response = on_unexpected(request(), error)
    assert response.status_code == 503
    body = msgspec.json.decode(response.content)
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["retryable"] is True


def test_a_push_cut_by_a_lost_connection_is_retryable() -> None:
    """Found by ``concord lab chaos --quick --seed 7``: a push whose connection was
    killed under it was answered ``internal`` (not retryable), and the device dropped
    a valid write for good."""
    from eventstore.errors import is_transient, translate

    lost = asyncpg.InternalClientError("cannot switch to state 21; another operation (2)")
    assert is_transient(lost)
    error = translate(lost)
    assert (error.code, error.retryable) == ("unavailable", True)
