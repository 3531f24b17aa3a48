"""Errors: every code of docs/protocol.md section 4 is a class with its status and retryability."""

from __future__ import annotations

import json

import pytest

from core.errors import ERRORS_BY_CODE, ConcordError, RateLimited, error_for_code, render

#: docs/protocol.md section 4, verbatim: code -> (HTTP status, retryable).
PROTOCOL_TABLE = {
    "bad_message": (400, False),
    "invalid_op": (422, False),
    "unknown_entity_type": (422, False),
    "unknown_field": (422, False),
    "type_mismatch": (422, False),
    "too_large": (413, False),
    "op_id_conflict": (409, False),
    "device_mismatch": (422, False),
    "not_found": (404, False),
    "forbidden": (403, False),
    "conflict": (409, False),
    "unauthenticated": (401, False),
    "refresh_reused": (401, False),
    "auth_expired": (401, True),
    "rate_limited": (429, True),
    "unavailable": (503, True),
}


def test_every_protocol_code_has_a_class() -> None:
    assert set(ERRORS_BY_CODE) == set(PROTOCOL_TABLE)


@pytest.mark.parametrize(("code", "expected"), sorted(PROTOCOL_TABLE.items()))
def test_status_and_retryable(code: str, expected: tuple[int, bool]) -> None:
    cls = ERRORS_BY_CODE[code]
    assert issubclass(cls, ConcordError)
    assert (cls.http_status, cls.retryable) == expected


def test_render_is_the_protocol_shape() -> None:
    body = json.loads(render(error_for_code("not_found", "no such space")))
    assert body == {"error": {"code": "not_found", "message": "no such space", "retryable": False}}


def test_rate_limited_carries_retry_after() -> None:
    body = json.loads(render(RateLimited("slow down", retry_after_ms=250)))
    assert body["error"]["retry_after_ms"] == 250
    assert body["error"]["retryable"] is True


def test_facts_are_attributes() -> None:
    err = error_for_code("invalid_op", "bad pred")
    assert err.message == "bad pred"
    assert err.facts == {}
