"""OpenAPI: the document at ``/schema/openapi.json``, error responses and examples.

Every route lists the error statuses it can answer, each with the ``ErrorResponse``
schema and an example per code, so generated clients and schemathesis see the real
contract (docs/protocol.md section 4's table).
"""

from __future__ import annotations

from typing import Any

from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, Example, SecurityScheme

from core.wire import ErrorResponse

USER_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
ADMIN_SECURITY: list[dict[str, list[str]]] = [{"admin": []}]

_CODES: dict[int, tuple[str, list[tuple[str, str, bool]]]] = {
    400: ("Malformed request", [("bad_message", "email: Expected `str`, got `int`", False)]),
    401: (
        "No valid session",
        [
            ("unauthenticated", "no valid access token", False),
            ("auth_expired", "access token expired; refresh and resend", True),
            ("refresh_reused", "this refresh token was already used", False),
        ],
    ),
    403: ("The caller's role does not allow this", [("forbidden", "readers may not push", False)]),
    404: (
        "No such resource (or a space the caller is not a member of)",
        [
            ("not_found", "no such space", False),
        ],
    ),
    405: ("Method not allowed", [("bad_message", "method not allowed on this route", False)]),
    409: (
        "Contradicts current state",
        [
            ("conflict", "this email is already registered", False),
            ("op_id_conflict", "op_id reused with another payload", False),
        ],
    ),
    413: ("Over a published limit", [("too_large", "more than max_ops_per_push ops", False)]),
    422: (
        "Well-formed but invalid",
        [
            ("invalid_op", "lamport out of range", False),
            ("type_mismatch", "title: expected a string", False),
        ],
    ),
    429: ("Slow down", [("rate_limited", "too many attempts; slow down", True)]),
    503: (
        "Storage or broker unavailable; nothing was applied",
        [("unavailable", "storage unavailable; nothing was applied", True)],
    ),
}


def _example(code: str, message: str, retryable: bool) -> Example:
    error: dict[str, Any] = {"code": code, "message": message, "retryable": retryable}
    if code == "rate_limited":
        error["retry_after_ms"] = 1500
    return Example(summary=code, value={"error": error})


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """Response specs for ``statuses``, each the ErrorResponse shape with examples."""
    specs: dict[int, ResponseSpec] = {}
    for status in statuses:
        description, codes = _CODES[status]
        specs[status] = ResponseSpec(
            data_container=ErrorResponse,
            description=description,
            generate_examples=False,
            examples=[_example(*c) for c in codes],
        )
    return specs


#: Statuses every authenticated JSON route can answer.
AUTHED = (400, 401, 405, 503)
#: And every route of one space (non-members get 404).
SPACE = (*AUTHED, 404)


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Concord",
        version="1",
        description=(
            "Concord sync protocol v1, HTTP half (docs/protocol.md section 6). Errors are "
            '`{"error": {"code", "message", "retryable"}}`; see docs/http-api.md.'
        ),
        path="/schema",
        use_handler_docstrings=True,
        create_examples=False,
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description="An access token from /v1/auth/login, register or refresh",
                ),
                "admin": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="CONCORD_ADMIN_TOKEN (operator routes only)",
                ),
            }
        ),
    )
