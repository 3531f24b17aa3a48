"""Authentication for a hand run of the schemathesis CLI against a live server.

``SCHEMATHESIS_HOOKS=tests.e2e.schemathesis_hooks schemathesis run <url>/schema/openapi.json
-c all --seed 4242`` (docs/http-api.md, "Checking the document"). The run signs up one
user on its first request and sends that user's access token; ``POST /v1/auth/logout``
gets a fresh session of a second user each time, so logging out never revokes the
token the other operations use. A 401 (the session revoked some other way) signs up
again. The operator routes get ``CONCORD_ADMIN_TOKEN`` when it is set.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
import schemathesis

PASSWORD = "correct horse battery"


def _register(base_url: str, device_name: str) -> tuple[str, str]:
    """A new account: (email, access token)."""
    email = f"st-{uuid.uuid4().hex[:12]}@example.com"
    r = httpx.post(
        f"{base_url}/v1/auth/register",
        json={"email": email, "password": PASSWORD, "device_name": device_name},
        timeout=30,
    )
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return email, token


@schemathesis.auth()
class ConcordAuth:
    """A bearer token of the run's user; a throwaway session for logout."""

    def __init__(self) -> None:
        self.spare_email: str | None = None

    def get(self, case: Any, context: Any) -> str:
        _, token = _register(case.operation.schema.get_base_url(), "schemathesis")
        return token

    def set(self, case: Any, data: str, context: Any) -> None:
        token = data
        admin = os.environ.get("CONCORD_ADMIN_TOKEN")
        if case.operation.path == "/v1/auth/logout":
            token = self._spare_session(case.operation.schema.get_base_url())
        elif admin and {"admin": []} in (case.operation.definition.raw.get("security") or []):
            token = admin
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}

    def _spare_session(self, base_url: str) -> str:
        if self.spare_email is None:
            self.spare_email, token = _register(base_url, "spare")
            return token
        r = httpx.post(
            f"{base_url}/v1/auth/login",
            json={"email": self.spare_email, "password": PASSWORD, "device_name": "spare"},
            timeout=30,
        )
        r.raise_for_status()
        token = r.json()["access_token"]
        assert isinstance(token, str)
        return token
