"""Who sees what: every space route answers a non-member 404 with nothing of the space,
readers cannot push, removed members lose access at once, operator routes refuse users."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import Api, Session, set_op


@dataclass
class Team:
    owner: Session
    editor: Session
    reader: Session
    outsider: Session
    space_id: str


@pytest.fixture
def team(api: Api) -> Team:
    owner, editor, reader, outsider = (api.register() for _ in range(4))
    space_id = api.create_space(owner, "team")
    api.add_member(owner, space_id, editor, "editor")
    api.add_member(owner, space_id, reader, "reader")
    r = api.push(owner, [set_op(space_id, "t-secret", "the secret title")])
    assert r.json()["results"][0]["status"] == "applied"
    return Team(owner, editor, reader, outsider, space_id)


def _space_requests(space_id: str, owner_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route of one space: (method, path, httpx kwargs)."""
    base = f"/v1/spaces/{space_id}"
    return [
        ("GET", "/v1/sync/pull", {"params": {"space_id": space_id}}),
        ("POST", "/v1/sync/push", {"json": {"batch_id": "b", "ops": [set_op(space_id, "t", "x")]}}),
        ("GET", f"{base}/entities", {}),
        ("GET", f"{base}/entities/task/t-secret", {}),
        ("GET", f"{base}/entities/task/t-secret", {"params": {"as_of_seq": 5}}),
        ("GET", f"{base}/entities/task/t-secret/history", {}),
        ("GET", f"{base}/reminders", {}),
        ("POST", f"{base}/members", {"json": {"email": "x@example.test", "role": "editor"}}),
        ("DELETE", f"{base}/members/{owner_id}", {}),
        ("GET", f"{base}/invitations", {}),
        ("DELETE", f"{base}/invitations/{uuid.uuid4()}", {}),
    ]


def _call(
    api: Api, user: Session, method: str, path: str, kwargs: dict[str, Any]
) -> httpx.Response:
    return api.http.request(method, path, headers=user.headers, **kwargs)


def test_non_members_get_404_and_nothing_else_on_every_space_route(api: Api, team: Team) -> None:
    missing = str(uuid.uuid4())
    for method, path, kwargs in _space_requests(team.space_id, team.owner.user_id):
        r = _call(api, team.outsider, method, path, kwargs)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json() == {
            "error": {"code": "not_found", "message": "no such space", "retryable": False}
        }, (method, path)
        assert "secret" not in r.text
    # A space that does not exist answers exactly the same: existence is private.
    for method, path, kwargs in _space_requests(missing, team.owner.user_id):
        r = _call(api, team.outsider, method, path, kwargs)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["message"] == "no such space"
    listed = api.http.get("/v1/spaces", headers=team.outsider.headers).json()["spaces"]
    assert team.space_id not in {s["space_id"] for s in listed}
    # Nothing of the outsider's push was stored.
    head = api.http.get(
        "/v1/sync/pull", params={"space_id": team.space_id}, headers=team.owner.headers
    ).json()["head"]
    assert head == 4  # creator, editor, reader added; one task title


def test_members_read_and_readers_cannot_push(api: Api, team: Team) -> None:
    for user in (team.owner, team.editor, team.reader):
        for method, path, kwargs in _space_requests(team.space_id, team.owner.user_id)[2:7]:
            r = _call(api, user, method, path, kwargs)
            assert r.status_code == 200, (method, path, r.text)
    r = api.push(team.reader, [set_op(team.space_id, "t-reader", "nope")])
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    r = api.push(team.editor, [set_op(team.space_id, "t-editor", "yes", lamport=2)])
    assert r.status_code == 200
    assert r.json()["results"][0]["status"] == "applied"
    r = api.http.get(
        f"/v1/spaces/{team.space_id}/entities/task/t-reader", headers=team.owner.headers
    )
    assert r.status_code == 404


def test_only_owners_manage_members(api: Api, team: Team) -> None:
    newcomer = api.register()
    for user in (team.editor, team.reader):
        r = api.http.post(
            f"/v1/spaces/{team.space_id}/members",
            json={"email": newcomer.email, "role": "reader"},
            headers=user.headers,
        )
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "forbidden"
        r = api.http.delete(
            f"/v1/spaces/{team.space_id}/members/{team.owner.user_id}", headers=user.headers
        )
        assert r.status_code == 403
    # The last owner cannot go, by their own hand or anyone's.
    r = api.http.delete(
        f"/v1/spaces/{team.space_id}/members/{team.owner.user_id}", headers=team.owner.headers
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    r = api.http.delete(
        f"/v1/spaces/{team.space_id}/members/{newcomer.user_id}", headers=team.owner.headers
    )
    assert r.status_code == 404  # not a member
    r = api.http.delete(
        f"/v1/spaces/{team.space_id}/members/not-a-uuid", headers=team.owner.headers
    )
    assert r.status_code == 404


def test_a_removed_member_loses_access_at_once(api: Api, team: Team) -> None:
    r = api.http.delete(
        f"/v1/spaces/{team.space_id}/members/{team.editor.user_id}", headers=team.owner.headers
    )
    assert r.status_code == 204
    for method, path, kwargs in _space_requests(team.space_id, team.owner.user_id):
        r = _call(api, team.editor, method, path, kwargs)
        assert r.status_code == 404, (method, path, r.text)
    listed = api.http.get("/v1/spaces", headers=team.editor.headers).json()["spaces"]
    assert team.space_id not in {s["space_id"] for s in listed}
    events = api.http.get(
        "/v1/sync/pull", params={"space_id": team.space_id}, headers=team.owner.headers
    ).json()["events"]
    removal = events[-1]
    assert removal["kind"] == "member_removed"
    assert removal["entity_id"] == team.editor.user_id
    assert removal["value"]["by"] == team.owner.user_id


def test_a_member_may_leave(api: Api, team: Team) -> None:
    r = api.http.delete(
        f"/v1/spaces/{team.space_id}/members/{team.reader.user_id}", headers=team.reader.headers
    )
    assert r.status_code == 204
    r = api.http.get(f"/v1/spaces/{team.space_id}/entities", headers=team.reader.headers)
    assert r.status_code == 404


def test_role_changes_take_effect(api: Api, team: Team) -> None:
    api.add_member(team.owner, team.space_id, team.reader, "editor")
    r = api.push(team.reader, [set_op(team.space_id, "t-promoted", "now I can", lamport=3)])
    assert r.status_code == 200
    assert r.json()["results"][0]["status"] == "applied"
    events = api.http.get(
        "/v1/sync/pull", params={"space_id": team.space_id, "after": 4}, headers=team.owner.headers
    ).json()["events"]
    assert events[0]["kind"] == "member_role_changed"
    assert events[0]["value"]["previous_role"] == "reader"


@pytest.mark.parametrize("path", ["/metrics", "/v1/diagnostics", "/diagnostics"])
def test_operator_routes_refuse_user_tokens(api: Api, path: str) -> None:
    user = api.register()
    for headers in ({}, user.headers, {"Authorization": "Bearer wrong-admin-token"}):
        r = api.http.get(path, headers=headers)
        assert r.status_code == 401, (path, headers)
        assert r.json()["error"]["code"] == "unauthenticated"
    admin = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
    r = api.http.get(path, headers=admin)
    assert r.status_code == 200
    if path == "/metrics":
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "concord_ops_total" in r.text
        assert "concord_projector_quarantined_events" in r.text
    elif path == "/v1/diagnostics":
        figures = r.json()
        assert {"ops_by_status", "auth_failures_by_reason", "ws_connections"} <= set(figures)
        assert isinstance(figures["projector_quarantined_events"], int)
        assert isinstance(figures["quarantined_events"], list)
        # The figures are live: three requests with a forged user token count three.
        before = figures["auth_failures_by_reason"].get("invalid_token", 0)
        for _ in range(3):
            forged = {"Authorization": "Bearer not.a.token"}
            assert api.http.get("/v1/spaces", headers=forged).status_code == 401
        after = api.http.get(path, headers=admin).json()["auth_failures_by_reason"]
        assert after.get("invalid_token", 0) - before == 3
    else:
        assert r.headers["content-type"].startswith("text/html")
