"""The bearer check and the sign-in routes at their edges (docs/auth.md): which
``Authorization`` headers count as a bearer token, every refusal's answer and the reason
it is counted under (``/v1/diagnostics``), passwords checked for length only when one is
chosen, a blank device name, a sign-in that forgets earlier failures, and the devices
list's times."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import Api, Session, StartGateway

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}


def _failures(api: Api, reason: str) -> int:
    """Authentication failures counted under ``reason`` so far."""
    figures = api.http.get("/v1/diagnostics", headers=ADMIN).json()
    count: int = figures["auth_failures_by_reason"].get(reason, 0)
    return count


def _refused(r: httpx.Response, status: int, code: str, message: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"] == {"code": code, "message": message, "retryable": False}


def test_the_bearer_scheme_is_case_insensitive_and_spaces_around_the_token_are_ignored(
    api: Api,
) -> None:
    token = api.register().access_token
    for header in (f"bearer {token}", f"BEARER {token}", f"Bearer  {token}"):
        r = api.http.get("/v1/spaces", headers={"Authorization": header})
        assert r.status_code == 200, (header, r.text)


def test_a_request_without_a_bearer_token_is_refused_and_counted(api: Api) -> None:
    token = api.register().access_token
    before = _failures(api, "missing_token")
    headers: list[dict[str, str]] = [
        {},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Token {token}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer\t{token}"},
    ]
    for header in headers:
        r = api.http.get("/v1/spaces", headers=header)
        _refused(r, 401, "unauthenticated", "a bearer access token is required")
    assert _failures(api, "missing_token") == before + len(headers)


def test_a_revoked_session_is_refused_and_counted(api: Api) -> None:
    user = api.register()
    assert api.http.post("/v1/auth/logout", headers=user.headers).status_code == 204
    before = _failures(api, "revoked")
    r = api.http.get("/v1/spaces", headers=user.headers)
    _refused(r, 401, "unauthenticated", "this session was revoked")
    assert _failures(api, "revoked") == before + 1


def test_an_expired_token_is_refused_as_auth_expired_and_counted(
    start_gateway: StartGateway,
) -> None:
    api = Api(start_gateway({}, env={"CONCORD_ACCESS_TOKEN_TTL": "1"}).base_url)
    try:
        user = api.register()
        time.sleep(2.1)  # expiry is checked to the second
        before = _failures(api, "expired")
        r = api.http.get("/v1/spaces", headers=user.headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "auth_expired"
        assert r.json()["error"]["retryable"] is True
        assert _failures(api, "expired") == before + 1
    finally:
        api.close()


def test_wrong_credentials_are_refused_and_counted(api: Api) -> None:
    user = api.register()
    before = _failures(api, "bad_credentials")
    for email, password in ((user.email, "not the password"), ("nobody@example.test", "x" * 12)):
        r = api.http.post(
            "/v1/auth/login", json={"email": email, "password": password, "device_name": "x"}
        )
        _refused(r, 401, "unauthenticated", "wrong email or password")
    assert _failures(api, "bad_credentials") == before + 2


def test_a_short_password_is_refused_when_chosen_and_only_wrong_at_login(api: Api) -> None:
    r = api.http.post(
        "/v1/auth/register",
        json={"email": "short-pw@example.test", "password": "short", "device_name": "x"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("password: ")
    user = api.register()
    r = api.http.post(
        "/v1/auth/login", json={"email": user.email, "password": "short", "device_name": "x"}
    )
    _refused(r, 401, "unauthenticated", "wrong email or password")


def _devices(api: Api, user: Session) -> list[dict[str, Any]]:
    r = api.http.get("/v1/devices", headers=user.headers)
    assert r.status_code == 200, r.text
    devices: list[dict[str, Any]] = r.json()["devices"]
    return devices


def test_a_blank_device_name_is_unnamed(api: Api) -> None:
    user = api.register(device_name="   ")
    assert [d["name"] for d in _devices(api, user)] == ["Unnamed device"]
    r = api.http.post(
        "/v1/auth/login",
        json={"email": user.email, "password": user.password, "device_name": ""},
    )
    assert r.status_code == 200, r.text
    assert [d["name"] for d in _devices(api, user)] == ["Unnamed device", "Unnamed device"]


def test_devices_are_listed_with_their_times_and_unknown_ones_are_named(api: Api) -> None:
    user = api.register()
    (device,) = _devices(api, user)
    assert device["current"] is True
    created = device["created_at"]
    assert created.endswith("Z"), created
    assert datetime.fromisoformat(created).tzinfo is not None
    seen = device["last_seen_at"]
    assert seen is None or seen.endswith("Z"), seen
    api.refresh(user.refresh_token)  # a refresh marks the device seen
    (device,) = _devices(api, user)
    assert device["last_seen_at"] is not None
    assert device["last_seen_at"].endswith("Z")
    for device_id in ("not-a-uuid", user.user_id):
        r = api.http.delete(f"/v1/devices/{device_id}", headers=user.headers)
        _refused(r, 404, "not_found", "no such device")


def test_a_sign_in_forgets_the_failures_of_its_email_and_address(
    start_gateway: StartGateway,
) -> None:
    """Three failures of one email from one address make the next attempt wait; a
    success in between starts the count again."""
    options = {
        "login_pair_failures": 3,
        "login_account_failures": 1000,
        "login_delay_base_seconds": 0.0,
    }
    api = Api(start_gateway(options).base_url)
    try:
        user = api.register()

        def login(password: str) -> int:
            body = {"email": user.email, "password": password, "device_name": "x"}
            status: int = api.http.post("/v1/auth/login", json=body).status_code
            return status

        for _ in range(2):
            assert [login("wrong password"), login("wrong password")] == [401, 401]
            assert login(user.password) == 200
        assert [login("wrong password") for _ in range(3)] == [401, 401, 401]
        assert login(user.password) == 429
    finally:
        api.close()
