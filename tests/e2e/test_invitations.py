"""Invitations are capabilities (docs/protocol.md section 6), against a real gateway process.

An owner's ``POST /members`` gives a code, nothing more; whoever presents the code at
``/v1/invitations/accept`` joins, once, within 7 days, while the inviter is an owner.
Regressions: an invitation used to go to whoever registered the email first, and an
owner removed after inviting got back in through that invitation.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import Api, GatewayProcess, Session, set_op

CODE_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


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
    return Team(owner, editor, reader, outsider, space_id)


def _email() -> str:
    return f"invitee-{uuid.uuid4().hex[:10]}@example.test"


def _invite(api: Api, owner: Session, space_id: str, email: str, role: str) -> dict[str, Any]:
    r = api.invite(owner, space_id, email, role)
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def _events(api: Api, user: Session, space_id: str, after: int = 0) -> list[dict[str, Any]]:
    r = api.http.get(
        "/v1/sync/pull", params={"space_id": space_id, "after": after}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def _head(api: Api, user: Session, space_id: str) -> int:
    r = api.http.get("/v1/sync/pull", params={"space_id": space_id}, headers=user.headers)
    head: int = r.json()["head"]
    return head


def _spaces(api: Api, user: Session) -> dict[str, str]:
    r = api.http.get("/v1/spaces", headers=user.headers)
    assert r.status_code == 200, r.text
    return {s["space_id"]: s["role"] for s in r.json()["spaces"]}


def _pending(api: Api, owner: Session, space_id: str, **params: Any) -> dict[str, Any]:
    r = api.http.get(f"/v1/spaces/{space_id}/invitations", params=params, headers=owner.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _register(api: Api, email: str) -> Session:
    r = api.http.post(
        "/v1/auth/register",
        json={"email": email, "password": "invited password", "device_name": "new"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    keys = ("user_id", "device_id", "access_token", "refresh_token", "personal_space_id")
    return Session(email=email, password="invited password", **{k: body[k] for k in keys})


# --------------------------------------------------------------------------- the code flow


async def test_a_code_lets_its_holder_in_as_the_inviter(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    before = datetime.now(UTC)
    invitation = _invite(api, team.owner, team.space_id, team.outsider.email.upper(), "editor")
    assert set(invitation) == {"invitation_id", "code", "expires_at"}
    code = invitation["code"]
    assert len(code) == 43
    assert set(code) <= CODE_CHARS
    expires = datetime.fromisoformat(invitation["expires_at"].replace("Z", "+00:00"))
    assert before + timedelta(days=7) - timedelta(minutes=1) < expires
    assert expires < datetime.now(UTC) + timedelta(days=7, minutes=1)
    # Nothing is granted yet, even though the email has an account.
    assert team.space_id not in _spaces(api, team.outsider)
    head = _head(api, team.owner, team.space_id)
    # Owners see it, without its code; the database holds only the code's digest.
    listed = _pending(api, team.owner, team.space_id)
    assert listed["next"] is None
    [pending] = listed["invitations"]
    assert pending["invitation_id"] == invitation["invitation_id"]
    assert pending["email"] == team.outsider.email
    assert (pending["role"], pending["invited_by"]) == ("editor", team.owner.user_id)
    assert pending["expires_at"] == invitation["expires_at"]
    row = await pool.fetchrow(
        "SELECT * FROM invitations WHERE invitation_id = $1", invitation["invitation_id"]
    )
    assert row is not None
    assert row["code_hash"] == hashlib.sha256(code.encode()).digest()
    assert code not in str(dict(row))

    r = api.accept(team.outsider, code)
    assert r.status_code == 200, r.text
    assert r.json() == {"space_id": team.space_id, "role": "editor"}
    assert _spaces(api, team.outsider)[team.space_id] == "editor"
    [added] = _events(api, team.outsider, team.space_id, after=head)
    assert (added["kind"], added["entity_type"], added["entity_id"]) == (
        "member_added",
        "_member",
        team.outsider.user_id,
    )
    assert added["value"] == {
        "user_id": team.outsider.user_id,
        "role": "editor",
        "previous_role": None,
        "by": team.owner.user_id,
    }
    assert added["user_id"] is None
    r = api.push(team.outsider, [set_op(team.space_id, "t-joined", "hello", lamport=5)])
    assert r.json()["results"][0]["status"] == "applied"
    assert _pending(api, team.owner, team.space_id)["invitations"] == []


def test_an_invitation_is_not_applied_at_registration(api: Api, team: Team) -> None:
    """Regression: the invitation went to whoever registered the email first."""
    email = _email()
    r = api.invite(team.owner, team.space_id, email, "editor")
    assert r.status_code == 202, r.text
    newcomer = _register(api, email)
    assert team.space_id not in _spaces(api, newcomer)
    members = {e["entity_id"] for e in _events(api, team.owner, team.space_id)}
    assert newcomer.user_id not in members
    r = api.http.get(f"/v1/spaces/{team.space_id}/entities", headers=newcomer.headers)
    assert r.status_code == 404
    # The code is what grants, to whoever holds it: here, someone with another email.
    code = api.invite(team.owner, team.space_id, email, "reader").json()["code"]
    r = api.accept(team.outsider, code)
    assert r.status_code == 200, r.text
    assert team.space_id not in _spaces(api, newcomer)


def test_a_removed_owner_cannot_come_back_through_an_earlier_invitation(
    api: Api, team: Team
) -> None:
    """Regression: owner A invites a second address as owner, owner B removes A, and
    the invitation (sent by A while an owner) let A back in as owner."""
    a, b = team.owner, api.register()
    api.add_member(a, team.space_id, b, "owner")
    second_address = _email()
    invited = api.invite(a, team.space_id, second_address, "owner")
    assert invited.status_code == 202, invited.text
    also = api.invite(a, team.space_id, _email(), "editor")
    assert also.status_code == 202, also.text
    r = api.http.delete(f"/v1/spaces/{team.space_id}/members/{a.user_id}", headers=b.headers)
    assert r.status_code == 204, r.text
    a_again = _register(api, second_address)
    assert team.space_id not in _spaces(api, a_again)
    # A's invitations went with A's role: gone from the list, and their codes are dead.
    assert _pending(api, b, team.space_id)["invitations"] == []
    for code in (invited.json()["code"], also.json()["code"]):
        refused = api.accept(a_again, code)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "not_found"
    assert team.space_id not in _spaces(api, a_again)
    assert team.space_id not in _spaces(api, a)


def test_a_demoted_owner_loses_every_invitation_they_sent(api: Api, team: Team) -> None:
    a, b = team.owner, api.register()
    api.add_member(a, team.space_id, b, "owner")
    from_a = _invite(api, a, team.space_id, _email(), "reader")
    from_b = _invite(api, b, team.space_id, _email(), "reader")
    r = api.invite(b, team.space_id, a.email, "editor")
    assert r.status_code == 200, r.text
    assert r.json() == {"space_id": team.space_id, "user_id": a.user_id, "role": "editor"}
    listed = _pending(api, b, team.space_id)["invitations"]
    assert [i["invitation_id"] for i in listed] == [from_b["invitation_id"]]
    assert api.accept(team.outsider, from_a["code"]).status_code == 404
    assert api.accept(team.outsider, from_b["code"]).status_code == 200
    # A demoted owner is no longer an owner: 403 on the owner routes.
    r = api.http.get(f"/v1/spaces/{team.space_id}/invitations", headers=a.headers)
    assert r.status_code == 403


async def test_acceptance_rechecks_the_inviter_under_the_lock(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """Even a row that escaped the withdrawal (written here behind the server's back)
    grants nothing unless its inviter is an owner when it is used."""
    invitation = _invite(api, team.owner, team.space_id, _email(), "owner")
    await pool.execute(
        "UPDATE invitations SET invited_by = $2 WHERE invitation_id = $1",
        invitation["invitation_id"],
        team.editor.user_id,
    )
    assert api.accept(team.outsider, invitation["code"]).status_code == 404
    assert team.space_id not in _spaces(api, team.outsider)


# ------------------------------------------------------------------ one use, expiry, cancel


def test_a_code_is_accepted_once(api: Api, team: Team) -> None:
    invitation = _invite(api, team.owner, team.space_id, team.outsider.email, "reader")
    assert api.accept(team.outsider, invitation["code"]).status_code == 200
    head = _head(api, team.owner, team.space_id)
    other = api.register()
    for user in (team.outsider, other):
        r = api.accept(user, invitation["code"])
        assert r.status_code == 404, r.text
        assert r.json() == {
            "error": {"code": "not_found", "message": "no such invitation", "retryable": False}
        }
    assert _head(api, team.owner, team.space_id) == head
    assert team.space_id not in _spaces(api, other)


async def test_an_expired_code_is_404(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    invitation = _invite(api, team.owner, team.space_id, _email(), "editor")
    await pool.execute(
        "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE invitation_id = $1",
        invitation["invitation_id"],
    )
    assert _pending(api, team.owner, team.space_id)["invitations"] == []
    r = api.accept(team.outsider, invitation["code"])
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert team.space_id not in _spaces(api, team.outsider)
    r = api.http.delete(
        f"/v1/spaces/{team.space_id}/invitations/{invitation['invitation_id']}",
        headers=team.owner.headers,
    )
    assert r.status_code == 404


def test_a_cancelled_code_is_404(api: Api, team: Team) -> None:
    invitation = _invite(api, team.owner, team.space_id, _email(), "editor")
    kept = _invite(api, team.owner, team.space_id, _email(), "reader")
    path = f"/v1/spaces/{team.space_id}/invitations/{invitation['invitation_id']}"
    r = api.http.delete(path, headers=team.owner.headers)
    assert r.status_code == 204, r.text
    assert api.http.delete(path, headers=team.owner.headers).status_code == 404
    missing = f"/v1/spaces/{team.space_id}/invitations/{uuid.uuid4()}"
    assert api.http.delete(missing, headers=team.owner.headers).status_code == 404
    listed = _pending(api, team.owner, team.space_id)["invitations"]
    assert [i["invitation_id"] for i in listed] == [kept["invitation_id"]]
    assert api.accept(team.outsider, invitation["code"]).status_code == 404
    assert team.space_id not in _spaces(api, team.outsider)


def test_inviting_an_email_again_replaces_its_invitation(api: Api, team: Team) -> None:
    email = _email()
    first = _invite(api, team.owner, team.space_id, email, "reader")
    second = _invite(api, team.owner, team.space_id, email.upper(), "editor")
    assert second["code"] != first["code"]
    listed = _pending(api, team.owner, team.space_id)["invitations"]
    assert [(i["invitation_id"], i["role"]) for i in listed] == [
        (second["invitation_id"], "editor")
    ]
    assert api.accept(team.outsider, first["code"]).status_code == 404
    assert api.accept(team.outsider, second["code"]).json()["role"] == "editor"


def test_invitations_are_listed_oldest_first_in_pages(api: Api, team: Team) -> None:
    made = [_invite(api, team.owner, team.space_id, _email(), "reader") for _ in range(6)]
    first = _pending(api, team.owner, team.space_id, limit=3)
    assert first["next"] is not None
    assert first["next"] == _pending(api, team.owner, team.space_id, limit=3)["next"]
    # the last page is exactly full: no next
    second = _pending(api, team.owner, team.space_id, limit=3, after=first["next"])
    assert second["next"] is None
    ids = [i["invitation_id"] for i in first["invitations"] + second["invitations"]]
    assert ids == [m["invitation_id"] for m in made]
    # a cursor is a position, not a page: any limit may follow it
    later = _pending(api, team.owner, team.space_id, limit=2, after=first["next"])
    assert [i["invitation_id"] for i in later["invitations"]] == ids[3:5]
    for listed in first["invitations"]:
        created, expires = listed["created_at"], listed["expires_at"]
        assert created.endswith("Z"), listed
        assert expires.endswith("Z"), listed
        span = datetime.fromisoformat(expires) - datetime.fromisoformat(created)
        assert span == timedelta(days=7)
    text = str(first) + str(second)
    assert all(m["code"] not in text for m in made)


# --------------------------------------------------------------------------- who may


def test_only_owners_list_and_cancel_invitations(api: Api, team: Team) -> None:
    invitation = _invite(api, team.owner, team.space_id, _email(), "editor")
    base = f"/v1/spaces/{team.space_id}/invitations"
    for user in (team.editor, team.reader):
        r = api.http.get(base, headers=user.headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden"
        r = api.http.delete(f"{base}/{invitation['invitation_id']}", headers=user.headers)
        assert r.status_code == 403
        assert api.invite(user, team.space_id, _email(), "reader").status_code == 403
    for path in (base, f"{base}/{invitation['invitation_id']}"):
        method = "GET" if path == base else "DELETE"
        r = api.http.request(method, path, headers=team.outsider.headers)
        assert r.status_code == 404
        assert r.json()["error"]["message"] == "no such space"
    assert len(_pending(api, team.owner, team.space_id)["invitations"]) == 1
    r = api.http.post("/v1/invitations/accept", json={"code": invitation["code"]})
    assert r.status_code == 401


def test_a_members_email_sets_the_role_at_once(api: Api, team: Team) -> None:
    head = _head(api, team.owner, team.space_id)
    r = api.invite(team.owner, team.space_id, team.reader.email, "editor")
    assert r.status_code == 200, r.text
    assert r.json() == {"space_id": team.space_id, "user_id": team.reader.user_id, "role": "editor"}
    [changed] = _events(api, team.owner, team.space_id, after=head)
    assert changed["kind"] == "member_role_changed"
    assert changed["value"]["previous_role"] == "reader"
    # The same role again: 200, nothing written. No invitation either way.
    r = api.invite(team.owner, team.space_id, team.reader.email, "editor")
    assert r.status_code == 200
    assert _head(api, team.owner, team.space_id) == head + 1
    assert _pending(api, team.owner, team.space_id)["invitations"] == []
    # Demoting the last owner through this route is refused like any demotion.
    r = api.invite(team.owner, team.space_id, team.owner.email, "editor")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"


def test_accepting_never_lowers_a_members_role(api: Api, team: Team) -> None:
    head = _head(api, team.owner, team.space_id)
    reader_code = _invite(api, team.owner, team.space_id, _email(), "reader")["code"]
    r = api.accept(team.editor, reader_code)
    assert r.status_code == 200
    assert r.json() == {"space_id": team.space_id, "role": "editor"}
    assert _head(api, team.owner, team.space_id) == head
    # A used code is used, whatever it changed.
    assert api.accept(team.outsider, reader_code).status_code == 404
    editor_code = _invite(api, team.owner, team.space_id, _email(), "editor")["code"]
    r = api.accept(team.reader, editor_code)
    assert r.json() == {"space_id": team.space_id, "role": "editor"}
    [raised] = _events(api, team.owner, team.space_id, after=head)
    assert raised["kind"] == "member_role_changed"
    assert raised["value"] == {
        "user_id": team.reader.user_id,
        "role": "editor",
        "previous_role": "reader",
        "by": team.owner.user_id,
    }


# --------------------------------------------------------------------------- atomicity


async def test_concurrent_acceptances_of_one_code_let_exactly_one_in(
    api: Api, team: Team, gateway: GatewayProcess
) -> None:
    users = [api.register() for _ in range(4)]
    for _ in range(3):
        code = _invite(api, team.owner, team.space_id, _email(), "reader")["code"]
        head = _head(api, team.owner, team.space_id)
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
            answers = await asyncio.gather(
                *(
                    http.post("/v1/invitations/accept", json={"code": code}, headers=u.headers)
                    for u in users
                )
            )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 404, 404, 404], [a.text for a in answers]
        [winner] = [u for u, a in zip(users, answers, strict=True) if a.status_code == 200]
        added = _events(api, team.owner, team.space_id, after=head)
        assert [(e["kind"], e["entity_id"]) for e in added] == [("member_added", winner.user_id)]
        users.remove(winner)
        users.append(api.register())


async def test_registration_is_one_transaction(
    api: Api, gateway: GatewayProcess, pool: asyncpg.Pool
) -> None:
    """A failure while creating the personal space leaves no account behind (it used to
    leave a user without a personal space, and the email taken)."""
    marker = f"atomic-{uuid.uuid4().hex[:10]}"
    email = f"{marker}@example.test"
    function = f"fail_{marker.replace('-', '_')}"
    # A real fault inside PostgreSQL: a trigger that refuses this user's personal space
    # with a serialization failure (a transient error: the gateway answers 503).
    await pool.execute(
        f"""
        CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM users WHERE user_id = NEW.created_by
                       AND email = '{email}') THEN
                RAISE EXCEPTION 'injected fault' USING ERRCODE = 'serialization_failure';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {function} BEFORE INSERT ON spaces
            FOR EACH ROW EXECUTE FUNCTION {function}();
        """
    )
    try:
        r = api.http.post(
            "/v1/auth/register",
            json={"email": email, "password": "correct horse", "device_name": "x"},
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "unavailable"
        assert await pool.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0
    finally:
        await pool.execute(f"DROP TRIGGER {function} ON spaces; DROP FUNCTION {function}()")
    # The email is free, and a retry gets a whole account.
    user = _register(api, email)
    assert _spaces(api, user) == {user.personal_space_id: "owner"}
    row = await pool.fetchrow(
        "SELECT personal_space_id::text AS space FROM users WHERE user_id = $1", user.user_id
    )
    assert row is not None
    assert row["space"] == user.personal_space_id
    [created] = _events(api, user, user.personal_space_id)
    assert (created["seq"], created["kind"]) == (1, "member_added")
