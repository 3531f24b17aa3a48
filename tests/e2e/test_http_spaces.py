"""The spaces routes' answers field by field (docs/protocol.md section 6): the list of a
user's spaces in pages, what a new space is, and errors that name what is wrong."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conftest import Api, Session


def _spaces(api: Api, user: Session, **params: Any) -> dict[str, Any]:
    r = api.http.get("/v1/spaces", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _error(r: httpx.Response, status: int) -> tuple[str, str]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    return error["code"], error["message"]


def test_a_new_space_is_shared_and_named_and_its_creator_owns_it(api: Api) -> None:
    user = api.register()
    space_id = api.create_space(user, "  groceries  ")
    listed = {s["space_id"]: s for s in _spaces(api, user)["spaces"]}
    assert listed[space_id] == {
        "space_id": space_id,
        "name": "groceries",  # trimmed
        "role": "owner",
        "personal": False,
    }
    assert listed[user.personal_space_id]["personal"] is True


def test_spaces_are_listed_by_id_in_pages(api: Api) -> None:
    user = api.register()
    for i in range(5):
        api.create_space(user, f"space {i}")
    whole = _spaces(api, user)
    assert whole["next"] is None
    ids = [s["space_id"] for s in whole["spaces"]]
    assert len(ids) == 6  # the personal space and five
    assert ids == sorted(ids)

    first = _spaces(api, user, limit=4)
    assert [s["space_id"] for s in first["spaces"]] == ids[:4]
    assert first["next"] == ids[3]
    # the last page is exactly full: no next
    second = _spaces(api, user, limit=2, after=first["next"])
    assert [s["space_id"] for s in second["spaces"]] == ids[4:]
    assert second["next"] is None
    # a cursor names the last space seen: the next page starts after it
    third = _spaces(api, user, limit=2, after=ids[1])
    assert [s["space_id"] for s in third["spaces"]] == ids[2:4]
    assert third["next"] == ids[3]


def test_a_malformed_cursor_or_name_is_400_naming_the_field(api: Api) -> None:
    user = api.register()
    r = api.http.get("/v1/spaces", params={"after": "not-an-id"}, headers=user.headers)
    assert _error(r, 400) == ("bad_message", "after: not a valid cursor")
    r = api.http.post("/v1/spaces", json={"name": "a\u0007b"}, headers=user.headers)
    code, message = _error(r, 400)
    assert code == "bad_message"
    assert message.startswith("name: ")


def test_missing_spaces_members_and_invitations_are_named(api: Api) -> None:
    owner, editor, stranger = api.register(), api.register(), api.register()
    space_id = api.create_space(owner, "team")
    api.add_member(owner, space_id, editor, "editor")
    base = f"/v1/spaces/{space_id}"
    for path in ("/v1/spaces/not-a-uuid/invitations", f"/v1/spaces/{space_id[:-1]}/members/x"):
        r = api.http.request(
            "GET" if path.endswith("invitations") else "DELETE", path, headers=owner.headers
        )
        assert _error(r, 404) == ("not_found", "no such space")
    for member in ("not-a-uuid", stranger.user_id):
        r = api.http.delete(f"{base}/members/{member}", headers=owner.headers)
        assert _error(r, 404) == ("not_found", "no such member")
    for invitation in ("not-a-uuid", stranger.user_id):
        r = api.http.delete(f"{base}/invitations/{invitation}", headers=owner.headers)
        assert _error(r, 404) == ("not_found", "no such invitation")


def test_refusals_to_non_owners_say_why(api: Api) -> None:
    owner, editor = api.register(), api.register()
    space_id = api.create_space(owner, "team")
    api.add_member(owner, space_id, editor, "editor")
    base = f"/v1/spaces/{space_id}"
    for method, path in (
        ("DELETE", f"{base}/members/{owner.user_id}"),
        ("GET", f"{base}/invitations"),
    ):
        r = api.http.request(method, path, headers=editor.headers)
        assert _error(r, 403) == ("forbidden", "only owners manage members")


def test_options_on_the_spaces_list_names_both_methods(api: Api) -> None:
    r = api.http.options("/v1/spaces")
    assert r.status_code == 204
    assert r.headers["allow"] == "GET, OPTIONS, POST"
    assert r.content == b""
