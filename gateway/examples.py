"""Examples for the OpenAPI document: request bodies and success answers.

Bodies are declared ``Annotated[Struct, <BODY>]`` in the handlers; success answers are
merged into a handler's ``responses`` with ``ok(...)``.
"""

from __future__ import annotations

from typing import Any

from litestar.enums import RequestEncodingType
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import BodyKwarg

USER = "6f1c2a9e-3b0d-4c3e-9a51-0f2d6c1b7e44"
DEVICE = "1d7e5b2c-88a4-4f0e-b1c9-5a3e2f6d9c10"
SPACE = "0d8c8e2a-1b2c-4d5e-8f90-123456789abc"
OP = "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"
ACCESS = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI2ZjFjMmE5ZSJ9.c2lnbmF0dXJl"
REFRESH = "QqFLV-8V0T7SlruW98ZXuE57aRs7bWM534lpOy5EDZQ"
INVITATION = "3f9a6c1e-27d4-4b8a-9e05-7c2d1b6a4f38"
CODE = "kq0cJm8Z5o2v4b3QwN6eHf1TjLr9sUxYaPdBgIiK7Mc"


def _body(summary: str, value: dict[str, Any]) -> BodyKwarg:
    return BodyKwarg(
        media_type=RequestEncodingType.JSON, examples=[Example(summary=summary, value=value)]
    )


def ok(status: int, container: Any, summary: str, value: Any) -> dict[int, ResponseSpec]:
    """The success response of a handler, with one example."""
    return {
        status: ResponseSpec(
            data_container=container,
            description=summary,
            generate_examples=False,
            examples=[Example(summary=summary, value=value)],
        )
    }


OPERATION: dict[str, Any] = {
    "op_id": OP,
    "space_id": SPACE,
    "entity_type": "task",
    "entity_id": "t-123",
    "kind": "set",
    "field": "title",
    "value": "Buy milk",
    "pred": [],
    "lamport": 42,
    "client_time": "2026-11-23T10:00:00Z",
}

REGISTER_BODY = _body(
    "a new account",
    {"email": "ada@example.com", "password": "correct horse battery", "device_name": "laptop"},
)
LOGIN_BODY = _body(
    "resume a known device",
    {
        "email": "ada@example.com",
        "password": "correct horse battery",
        "device_name": "laptop",
        "device_id": DEVICE,
    },
)
REFRESH_BODY = _body("rotate", {"refresh_token": REFRESH})
SPACE_BODY = _body("a shared space", {"name": "Family"})
MEMBER_BODY = _body("invite an editor", {"email": "grace@example.com", "role": "editor"})
ACCEPT_BODY = _body("a code handed over by an owner", {"code": CODE})
PUSH_BODY = _body("one set", {"batch_id": "b-7", "ops": [OPERATION]})

AUTH_ANSWER: dict[str, Any] = {
    "user_id": USER,
    "device_id": DEVICE,
    "access_token": ACCESS,
    "refresh_token": REFRESH,
    "access_expires_at": "2026-11-23T10:15:00Z",
    "personal_space_id": SPACE,
}
INVITATION_ANSWER: dict[str, Any] = {
    "invitation_id": INVITATION,
    "code": CODE,
    "expires_at": "2026-11-30T10:00:00.000000Z",
}
MEMBER_ROLE_ANSWER: dict[str, Any] = {"space_id": SPACE, "user_id": USER, "role": "editor"}
ACCEPT_ANSWER: dict[str, Any] = {"space_id": SPACE, "role": "editor"}
INVITATIONS_ANSWER: dict[str, Any] = {
    "invitations": [
        {
            "invitation_id": INVITATION,
            "email": "grace@example.com",
            "role": "editor",
            "invited_by": USER,
            "created_at": "2026-11-23T10:00:00.000000Z",
            "expires_at": "2026-11-30T10:00:00.000000Z",
        }
    ],
    "next": None,
}
PUSH_ANSWER: dict[str, Any] = {
    "batch_id": "b-7",
    "server_lamport": 42,
    "results": [{"op_id": OP, "status": "applied", "seq": 17}],
}
EVENT: dict[str, Any] = {
    **{k: v for k, v in OPERATION.items()},
    "seq": 17,
    "device_id": DEVICE,
    "user_id": USER,
    "recorded_at": "2026-11-23T10:00:01.123456Z",
    "schema_version": 1,
}
PULL_ANSWER: dict[str, Any] = {"events": [EVENT], "head": 17}
ENTITY_ANSWER: dict[str, Any] = {
    "entity_type": "task",
    "entity_id": "t-123",
    "seq": 17,
    "deleted": False,
    "edited_while_deleted": False,
    "fields": {
        "title": {
            "value": "Buy milk",
            "heads": [{"op_id": OP, "value": "Buy milk", "device_id": DEVICE, "lamport": 42}],
            "conflicted": False,
        }
    },
}
