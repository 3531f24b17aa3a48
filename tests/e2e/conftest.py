"""A real gateway process on a port it binds itself, on this run's PostgreSQL and NATS.

``gateway`` is the session's server (``python -m concord.cli gateway``) with light argon2
parameters and loose address throttles, so the suite stays fast on two cores; the
protocol's defaults (the 30 s refresh grace window, per-account login throttling) are
kept. ``start_gateway(options)`` starts another one with other options (a short grace
window, a small push bucket) for the tests that need them. ``Api`` wraps httpx with the
few steps every test repeats.

With ``CONCORD_TEST_GATEWAY=in-process`` (what ``make mutation`` sets for the targets
that run these tests) both serve the same app on a thread of the test process instead,
still on a port of their own (``InProcessGateway``, tests/e2e/harness.py): mutmut sees
only code that runs in its test process. The tests that need the process itself (its
log) are marked ``gateway_process`` and left out in that mode.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from concord.child import ConcordProcess
from core.settings import Settings
from tests.conftest import service_env
from tests.e2e.harness import InProcessGateway, in_process

#: Fast hashing and no address throttle: tests register many users from 127.0.0.1.
BASE_OPTIONS: dict[str, Any] = {
    "argon2_time_cost": 1,
    "argon2_memory_cost": 8192,
    "argon2_parallelism": 1,
    "login_address_attempts": 1_000_000,
    "push_rate": 1000.0,
    "push_burst": 1000,
}


class GatewayProcess(ConcordProcess):
    """One ``concord gateway`` subprocess, on a port it binds itself, with ``options``
    (``concord.child``, the one harness)."""

    def __init__(
        self,
        settings: Settings,
        options: dict[str, Any],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
    ) -> None:
        environment = service_env(settings)
        environment["CONCORD_TEST_GATEWAY_OPTIONS"] = json.dumps(options)
        environment["CONCORD_LOG_LEVEL"] = "warning"
        environment.update(env or {})
        super().__init__(["gateway"], environment, log_path)
        self.settings = settings
        self.options = options

    @property
    def base_url(self) -> str:
        return self.url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In-process mode leaves out the tests marked ``gateway_process`` (they read the
    process's log, or stop and restart it)."""
    if not in_process():
        return
    chosen = [item for item in items if item.get_closest_marker("gateway_process") is None]
    if len(chosen) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
        items[:] = chosen


Gateway = GatewayProcess | InProcessGateway


class StartGateway(Protocol):
    def __call__(self, options: dict[str, Any], env: dict[str, str] | None = None) -> Gateway: ...


@pytest.fixture(scope="session")
def start_gateway(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartGateway]:
    """Start gateway processes with extra options (and environment); all are stopped at
    the end of the session."""
    started: list[Gateway] = []
    logs = tmp_path_factory.mktemp("gateway-logs")

    def start(options: dict[str, Any], env: dict[str, str] | None = None) -> Gateway:
        if in_process():
            served = InProcessGateway(settings, {**BASE_OPTIONS, **options}, env)
            started.append(served)
            return served.start()
        process = GatewayProcess(
            settings,
            {**BASE_OPTIONS, **options},
            logs / f"gateway-{len(started)}.log",
            env=dict(env or {}),
        )
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def gateway(start_gateway: StartGateway) -> Gateway:
    gateway: Gateway = start_gateway({})
    return gateway


# --------------------------------------------------------------------------- client helpers


@dataclass
class Session:
    """A signed-in device as the tests see it."""

    email: str
    password: str
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str
    personal_space_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def update(self, body: dict[str, Any]) -> Session:
        self.access_token = body["access_token"]
        self.refresh_token = body["refresh_token"]
        self.device_id = body["device_id"]
        return self


class Api:
    """httpx against one gateway, plus the steps tests repeat."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def close(self) -> None:
        self.http.close()

    def register(self, *, device_name: str = "laptop", password: str = "correct horse") -> Session:
        email = f"user-{uuid.uuid4().hex[:12]}@example.test"
        r = self.http.post(
            "/v1/auth/register",
            json={"email": email, "password": password, "device_name": device_name},
        )
        assert r.status_code == 201, r.text
        body = r.json()
        return Session(email=email, password=password, **_session_fields(body))

    def login(self, user: Session, *, device_id: str | None = None, name: str = "phone") -> Session:
        payload: dict[str, Any] = {"email": user.email, "password": user.password}
        payload["device_name"] = name
        if device_id is not None:
            payload["device_id"] = device_id
        r = self.http.post("/v1/auth/login", json=payload)
        assert r.status_code == 200, r.text
        return Session(email=user.email, password=user.password, **_session_fields(r.json()))

    def refresh(self, token: str) -> httpx.Response:
        return self.http.post("/v1/auth/refresh", json={"refresh_token": token})

    def create_space(self, user: Session, name: str = "shared") -> str:
        r = self.http.post("/v1/spaces", json={"name": name}, headers=user.headers)
        assert r.status_code == 201, r.text
        space_id: str = r.json()["space_id"]
        return space_id

    def invite(self, owner: Session, space_id: str, email: str, role: str) -> httpx.Response:
        return self.http.post(
            f"/v1/spaces/{space_id}/members",
            json={"email": email, "role": role},
            headers=owner.headers,
        )

    def accept(self, user: Session, code: str) -> httpx.Response:
        return self.http.post("/v1/invitations/accept", json={"code": code}, headers=user.headers)

    def add_member(self, owner: Session, space_id: str, member: Session, role: str) -> None:
        """Invite ``member``'s email and accept the code as them; for a member already,
        the invitation sets the role at once (200)."""
        r = self.invite(owner, space_id, member.email, role)
        if r.status_code == 200:
            assert r.json() == {"space_id": space_id, "user_id": member.user_id, "role": role}
            return
        assert r.status_code == 202, r.text
        accepted = self.accept(member, r.json()["code"])
        assert accepted.status_code == 200, accepted.text

    def push(self, user: Session, ops: list[Any], batch_id: str | None = None) -> httpx.Response:
        return self.http.post(
            "/v1/sync/push",
            json={"batch_id": batch_id or uuid.uuid4().hex, "ops": ops},
            headers=user.headers,
        )


def _session_fields(body: dict[str, Any]) -> dict[str, str]:
    keys = ("user_id", "device_id", "access_token", "refresh_token", "personal_space_id")
    return {k: body[k] for k in keys}


def set_op(
    space_id: str,
    entity_id: str,
    value: Any,
    *,
    field: str = "title",
    lamport: int = 1,
    pred: list[str] | None = None,
    op_id: str | None = None,
) -> dict[str, Any]:
    """A ``set`` of a task field (a valid op unless the arguments make it invalid)."""
    return {
        "op_id": op_id or str(uuid.uuid4()),
        "space_id": space_id,
        "entity_type": "task",
        "entity_id": entity_id,
        "kind": "set",
        "field": field,
        "value": value,
        "pred": pred or [],
        "lamport": lamport,
    }


@pytest.fixture
def api(gateway: Gateway) -> Iterator[Api]:
    client = Api(gateway.base_url)
    yield client
    client.close()
