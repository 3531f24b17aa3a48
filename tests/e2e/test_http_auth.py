"""Accounts and sessions over HTTP against a real gateway (docs/protocol.md 6.4, docs/auth.md)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest

from core.keys import Purpose, derive
from core.settings import Settings
from tests.conftest import TEST_SECRET
from tests.e2e.conftest import Api, Session, StartGateway, set_op


def _error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def _spaces_status(api: Api, user: Session) -> int:
    return api.http.get("/v1/spaces", headers=user.headers).status_code


def test_register_gives_a_session_and_a_personal_space(api: Api) -> None:
    user = api.register()
    r = api.http.get("/v1/spaces", headers=user.headers)
    assert r.status_code == 200
    (space,) = r.json()["spaces"]
    assert space == {
        "space_id": user.personal_space_id,
        "name": "Personal",
        "role": "owner",
        "personal": True,
    }
    events = api.http.get(
        "/v1/sync/pull", params={"space_id": user.personal_space_id}, headers=user.headers
    ).json()["events"]
    assert events[0]["kind"] == "member_added"
    assert events[0]["seq"] == 1


def test_taken_email_is_409_and_emails_are_normalised(api: Api) -> None:
    user = api.register()
    shouted = f"  {user.email.upper()}  "
    r = api.http.post(
        "/v1/auth/register",
        json={"email": shouted, "password": "another password", "device_name": "x"},
    )
    assert r.status_code == 409
    assert _error(r)["code"] == "conflict"
    r = api.http.post(
        "/v1/auth/login",
        json={"email": shouted, "password": user.password, "device_name": "phone"},
    )
    assert r.status_code == 200
    assert r.json()["user_id"] == user.user_id


def test_unknown_email_and_wrong_password_answer_alike(api: Api) -> None:
    user = api.register()
    wrong = api.http.post(
        "/v1/auth/login",
        json={"email": user.email, "password": "not the password", "device_name": "x"},
    )
    unknown = api.http.post(
        "/v1/auth/login",
        json={
            "email": f"nobody-{uuid.uuid4().hex}@example.test",
            "password": "not the password",
            "device_name": "x",
        },
    )
    assert wrong.status_code == 401
    assert unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert _error(wrong) == {
        "code": "unauthenticated",
        "message": "wrong email or password",
        "retryable": False,
    }


def test_refresh_reuse_revokes_only_that_device(api: Api) -> None:
    laptop = api.register(device_name="laptop")
    phone = api.login(laptop, name="phone")
    assert phone.device_id != laptop.device_id
    first = phone.refresh_token
    r = api.refresh(first)
    assert r.status_code == 200
    phone.update(r.json())
    r = api.refresh(phone.refresh_token)  # the in-between token is itself refreshed
    assert r.status_code == 200
    phone.update(r.json())
    assert _spaces_status(api, phone) == 200

    stolen = api.refresh(first)  # spent, and not the grace case: theft
    assert stolen.status_code == 401
    assert _error(stolen) == {
        "code": "refresh_reused",
        "message": "this refresh token was already used; the session is revoked",
        "retryable": False,
    }
    # The phone's session is over: its unexpired access token and its newest refresh token.
    assert _spaces_status(api, phone) == 401
    assert _error(api.http.get("/v1/spaces", headers=phone.headers))["code"] == "unauthenticated"
    assert _error(api.refresh(phone.refresh_token))["code"] == "unauthenticated"
    # The laptop is untouched.
    assert _spaces_status(api, laptop) == 200
    r = api.refresh(laptop.refresh_token)
    assert r.status_code == 200
    laptop.update(r.json())
    assert _spaces_status(api, laptop) == 200


# The grace rule of refresh, row by row: tests/e2e/test_http_refresh_grace.py.


def test_login_naming_the_device_keeps_it_and_queued_ops_are_accepted(api: Api) -> None:
    user = api.register(device_name="laptop")
    space = user.personal_space_id
    queued = [
        {**set_op(space, "t-queued", "written offline"), "device_id": user.device_id},
        set_op(space, "t-queued", True, field="done", lamport=2),
    ]
    old_headers = user.headers
    again = api.login(user, device_id=user.device_id, name="laptop")
    assert again.device_id == user.device_id
    # One installation, one session: the earlier session of the device is over.
    assert api.http.get("/v1/spaces", headers=old_headers).status_code == 401
    r = api.push(again, queued)
    assert r.status_code == 200
    assert [x["status"] for x in r.json()["results"]] == ["applied", "applied"]
    devices = api.http.get("/v1/devices", headers=again.headers).json()["devices"]
    assert [d["device_id"] for d in devices] == [user.device_id]
    assert devices[0]["current"] is True


def test_login_naming_a_foreign_or_revoked_device_gets_a_new_one(api: Api) -> None:
    alice, bob = api.register(), api.register()
    r = api.login(alice, device_id=bob.device_id)
    assert r.device_id not in (alice.device_id, bob.device_id)
    phone = api.login(alice, name="phone")
    assert (
        api.http.delete(f"/v1/devices/{phone.device_id}", headers=alice.headers).status_code == 204
    )
    again = api.login(alice, device_id=phone.device_id)
    assert again.device_id != phone.device_id


def test_logout_ends_the_session_at_once(api: Api) -> None:
    user = api.register()
    other = api.login(user)
    r = api.http.post("/v1/auth/logout", headers=user.headers)
    assert r.status_code == 204
    assert r.content == b""
    assert _spaces_status(api, user) == 401
    assert _error(api.refresh(user.refresh_token))["code"] == "unauthenticated"
    assert _spaces_status(api, other) == 200


def test_devices_list_and_revoke(api: Api) -> None:
    laptop = api.register(device_name="laptop")
    phone = api.login(laptop, name="phone")
    stranger = api.register()
    listed = api.http.get("/v1/devices", headers=laptop.headers).json()
    assert [(d["name"], d["current"], d["revoked"]) for d in listed["devices"]] == [
        ("laptop", True, False),
        ("phone", False, False),
    ]
    assert listed["next"] is None
    assert set(listed["devices"][0]) == {
        "device_id", "name", "created_at", "last_seen_at", "current", "revoked",
    }  # fmt: skip
    page = api.http.get("/v1/devices", params={"limit": 1}, headers=laptop.headers).json()
    assert len(page["devices"]) == 1
    assert page["next"]
    rest = api.http.get(
        "/v1/devices", params={"limit": 1, "after": page["next"]}, headers=laptop.headers
    ).json()
    assert rest["devices"][0]["name"] == "phone"
    assert rest["next"] is None

    foreign = api.http.delete(f"/v1/devices/{laptop.device_id}", headers=stranger.headers)
    assert foreign.status_code == 404
    assert _error(foreign)["code"] == "not_found"
    assert api.http.delete("/v1/devices/not-a-uuid", headers=laptop.headers).status_code == 404
    assert _spaces_status(api, laptop) == 200

    r = api.http.delete(f"/v1/devices/{phone.device_id}", headers=laptop.headers)
    assert r.status_code == 204
    assert _spaces_status(api, phone) == 401  # its unexpired access token is refused
    assert _error(api.refresh(phone.refresh_token))["code"] == "unauthenticated"
    listed = api.http.get("/v1/devices", headers=laptop.headers).json()["devices"]
    assert [d["revoked"] for d in listed] == [False, True]


def _expired_copy(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 5
    return jwt.encode(claims, derive(TEST_SECRET, Purpose.ACCESS_TOKEN), algorithm="HS256")


def test_an_expired_access_token_is_auth_expired_and_nothing_is_stored(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    expired = {"Authorization": f"Bearer {_expired_copy(user.access_token)}"}
    r = api.http.post(
        "/v1/sync/push",
        json={"batch_id": "b1", "ops": [set_op(space, "t-exp", "x")]},
        headers=expired,
    )
    assert r.status_code == 401
    assert _error(r) == {
        "code": "auth_expired",
        "message": "access token expired; refresh and resend",
        "retryable": True,
    }
    head = api.http.get("/v1/sync/pull", params={"space_id": space}, headers=user.headers)
    assert head.json()["head"] == 1  # only the member_added event


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer " + jwt.encode({"sub": "x", "exp": 9999999999}, "another-key-" * 4, "HS256"),
    ],
)
def test_bad_access_tokens_are_unauthenticated(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = api.http.get("/v1/spaces", headers=headers)
    assert r.status_code == 401
    assert _error(r)["code"] == "unauthenticated"


def test_login_throttle_per_account_and_address(api: Api) -> None:
    """Ten failures from one address: that address is refused for the account, even with
    the right password; the account itself is only slowed down (tests/e2e/
    test_http_auth_hardening.py has the other addresses' side)."""
    user = api.register()
    bystander = api.register()
    wrong = {"email": user.email, "password": "wrong password", "device_name": "x"}
    for _ in range(10):
        assert api.http.post("/v1/auth/login", json=wrong).status_code == 401
    right = {"email": user.email, "password": user.password, "device_name": "x"}
    r = api.http.post("/v1/auth/login", json=right)
    assert r.status_code == 429
    error = _error(r)
    assert error["code"] == "rate_limited"
    assert error["retryable"] is True
    assert error["retry_after_ms"] > 0
    assert int(r.headers["retry-after"]) >= 1
    assert api.login(bystander).user_id == bystander.user_id


def test_request_ids(api: Api) -> None:
    r = api.http.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = api.http.get("/no/such/route", headers={"X-Request-Id": "bad id with spaces"})
    assert r.status_code == 404
    assert len(r.headers["x-request-id"]) == 32


def _refused_within(api: Api, headers: dict[str, str], seconds: float) -> float:
    """Seconds until ``headers`` are refused by ``api``'s gateway (fails after ``seconds``)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if api.http.get("/v1/spaces", headers=headers).status_code == 401:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"still accepted after {seconds}s")


def test_other_gateways_learn_revocations_by_nats(api: Api, start_gateway: StartGateway) -> None:
    """A gateway that never re-reads PostgreSQL still refuses at once: the broadcast."""
    deaf = Api(start_gateway({"revocation_refresh_seconds": 3600.0}).base_url)
    try:
        user = api.register()
        assert deaf.http.get("/v1/spaces", headers=user.headers).status_code == 200
        assert api.http.post("/v1/auth/logout", headers=user.headers).status_code == 204
        assert _refused_within(deaf, user.headers, 2.0) < 2.0
    finally:
        deaf.close()


def test_other_gateways_learn_revocations_from_postgres_within_a_second(
    api: Api, start_gateway: StartGateway, settings: Settings
) -> None:
    """No broadcast reaches a gateway on another NATS prefix: the re-read still does."""
    isolated = start_gateway({}, env={"CONCORD_NATS_PREFIX": f"{settings.nats_prefix}x"})
    other = Api(isolated.base_url)
    try:
        user = api.register()
        phone = api.login(user)
        assert other.http.get("/v1/spaces", headers=phone.headers).status_code == 200
        r = api.http.delete(f"/v1/devices/{phone.device_id}", headers=user.headers)
        assert r.status_code == 204
        assert _refused_within(other, phone.headers, 3.0) < 3.0
        assert other.http.get("/v1/spaces", headers=user.headers).status_code == 200
    finally:
        other.close()
