"""OpenAPI: the document at ``/schema/openapi.json``, error responses and examples.

Every route lists the error statuses it can answer, each with the ``ErrorResponse``
schema and an example per code, so generated clients and schemathesis see the real
contract (docs/protocol.md section 4's table).
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, Example, Link, OpenAPI, SecurityScheme

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


_SPACE_READS = (
    ("get", "/v1/spaces/{space_id}/entities"),
    ("get", "/v1/spaces/{space_id}/entities/{entity_type}/{entity_id}"),
    ("get", "/v1/spaces/{space_id}/entities/{entity_type}/{entity_id}/history"),
    ("get", "/v1/spaces/{space_id}/reminders"),
    ("get", "/v1/spaces/{space_id}/invitations"),
    ("post", "/v1/spaces/{space_id}/members"),
    ("get", "/v1/sync/pull"),
)

#: OpenAPI links: where an answer's ids can be used next ((method, path), status,
#: (method, path) of the target, its parameters as runtime expressions). Schemathesis's
#: stateful phase follows them; generated clients and readers see what leads where.
LINKS: list[tuple[tuple[str, str], str, tuple[str, str], dict[str, str]]] = [
    *(
        (("post", "/v1/spaces"), "201", target, {"space_id": "$response.body#/space_id"})
        for target in _SPACE_READS
    ),
    (
        ("post", "/v1/spaces/{space_id}/members"),
        "202",
        ("delete", "/v1/spaces/{space_id}/invitations/{invitation_id}"),
        {
            "space_id": "$request.path.space_id",
            "invitation_id": "$response.body#/invitation_id",
        },
    ),
    (
        ("post", "/v1/spaces/{space_id}/members"),
        "200",
        ("delete", "/v1/spaces/{space_id}/members/{user_id}"),
        {"space_id": "$response.body#/space_id", "user_id": "$response.body#/user_id"},
    ),
]


def _operation(document: OpenAPI, method: str, path: str) -> Any:
    item = (document.paths or {}).get(path)
    operation = getattr(item, method, None)
    if operation is None:
        raise LookupError(f"no operation {method.upper()} {path} for an OpenAPI link")
    return operation


def add_links(app: Litestar) -> None:
    """Write ``LINKS`` into ``app``'s OpenAPI document (built now, served as built)."""
    document = app.openapi_schema
    for (method, path), status, (to_method, to_path), parameters in LINKS:
        response = (_operation(document, method, path).responses or {})[status]
        target = _operation(document, to_method, to_path)
        name = target.operation_id
        response.links = {
            **(response.links or {}),
            name: Link(operation_id=name, parameters=parameters),
        }
