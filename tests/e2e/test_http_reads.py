"""Reads over HTTP: merged entities, conflicts, ``as_of_seq``, history, lists, schema."""

from __future__ import annotations

import uuid
from typing import Any

from tests.e2e.conftest import Api, Session, set_op


def _applied(api: Api, user: Session, ops: list[dict[str, Any]]) -> list[int]:
    r = api.push(user, ops)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert all(x["status"] == "applied" for x in results), results
    return [x["seq"] for x in results]


def _lifecycle(space: str, entity_id: str, kind: str, lamport: int) -> dict[str, Any]:
    return {
        "op_id": str(uuid.uuid4()),
        "space_id": space,
        "entity_type": "task",
        "entity_id": entity_id,
        "kind": kind,
        "lamport": lamport,
    }


def test_a_conflicted_field_lists_its_heads(api: Api) -> None:
    laptop = api.register(device_name="laptop")
    phone = api.login(laptop, name="phone")
    space = laptop.personal_space_id
    first = set_op(space, "t1", "draft")
    (first_seq,) = _applied(api, laptop, [first])
    a = set_op(space, "t1", "from laptop", lamport=2, pred=[first["op_id"]])
    b = set_op(space, "t1", "from phone", lamport=2, pred=[first["op_id"]])
    _applied(api, laptop, [a])
    _applied(api, phone, [b])
    _applied(api, phone, [{**set_op(space, "t1", "ada", field="assignee", lamport=3)}])
    r = api.http.get(f"/v1/spaces/{space}/entities/task/t1", headers=laptop.headers)
    assert r.status_code == 200
    entity = r.json()
    assert entity["entity_type"] == "task"
    assert entity["entity_id"] == "t1"
    assert entity["seq"] == 5
    assert entity["deleted"] is False
    title = entity["fields"]["title"]
    assert title["conflicted"] is True
    winner = max((a, b), key=lambda op: (op["lamport"], op["op_id"]))
    assert title["value"] == winner["value"]
    assert [h["op_id"] for h in title["heads"]] == [
        op["op_id"] for op in sorted((a, b), key=lambda op: op["op_id"], reverse=True)
    ]
    assert {h["device_id"] for h in title["heads"]} == {laptop.device_id, phone.device_id}
    assert entity["fields"]["assignee"]["value"] == ["ada"]  # mv: a list
    assert "notes" not in entity["fields"]  # never written

    old = api.http.get(
        f"/v1/spaces/{space}/entities/task/t1",
        params={"as_of_seq": first_seq},
        headers=laptop.headers,
    ).json()
    assert old["seq"] == first_seq
    assert old["fields"]["title"] == {
        "value": "draft",
        "heads": [
            {"op_id": first["op_id"], "value": "draft", "device_id": laptop.device_id, "lamport": 1}
        ],
        "conflicted": False,
    }
    before = api.http.get(
        f"/v1/spaces/{space}/entities/task/t1", params={"as_of_seq": 1}, headers=laptop.headers
    )
    assert before.status_code == 404


def test_missing_entities_and_member_entities_are_404(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    base = f"/v1/spaces/{space}/entities"
    for path in (
        f"{base}/task/never-written",
        f"{base}/_member/{user.user_id}",
        f"{base}/_member/{user.user_id}/history",
        f"{base}/nosuchtype/x",
        f"{base}/task/bad%20id",
    ):
        r = api.http.get(path, headers=user.headers)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"


def test_entity_lists_filter_and_page(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    _applied(
        api,
        user,
        [
            set_op(space, "t1", "one"),
            set_op(space, "t2", "two"),
            set_op(space, "t3", "three"),
            {**set_op(space, "l1", "groceries", field="name"), "entity_type": "list"},
            _lifecycle(space, "t2", "delete", 2),
        ],
    )
    base = f"/v1/spaces/{space}/entities"

    def ids(**params: Any) -> tuple[list[str], dict[str, Any]]:
        r = api.http.get(base, params=params, headers=user.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return [e["entity_id"] for e in body["entities"]], body

    assert ids(type="task")[0] == ["t1", "t3"]
    listed, body = ids(type="task", include_deleted=True)
    assert listed == ["t1", "t2", "t3"]
    assert body["seq"] == 6
    assert [e["deleted"] for e in body["entities"]] == [False, True, False]
    assert ids(type="list")[0] == ["l1"]
    assert ids()[0] == ["l1", "t1", "t3"]
    first, body = ids(limit=2)
    assert first == ["l1", "t1"]
    assert body["next"]
    rest, body = ids(limit=2, after=body["next"])
    assert rest == ["t3"]
    assert body["next"] is None
    for bad in ("_member", "nosuchtype"):
        r = api.http.get(base, params={"type": bad}, headers=user.headers)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "bad_message"


def test_history_pages_in_seq_order(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    seqs = _applied(
        api, user, [set_op(space, "t1", f"v{i}", lamport=i + 1, field="notes") for i in range(3)]
    )
    path = f"/v1/spaces/{space}/entities/task/t1/history"
    page = api.http.get(path, params={"limit": 2}, headers=user.headers).json()
    assert [e["seq"] for e in page["events"]] == seqs[:2]
    assert page["next"] == str(seqs[1])
    rest = api.http.get(path, params={"after": page["next"]}, headers=user.headers).json()
    assert [e["seq"] for e in rest["events"]] == seqs[2:]
    assert rest["next"] is None
    event = rest["events"][0]
    assert event["user_id"] == user.user_id
    assert event["device_id"] == user.device_id
    assert event["schema_version"] == 1
    assert event["recorded_at"].endswith("Z")
    empty = api.http.get(
        f"/v1/spaces/{space}/entities/task/other/history", headers=user.headers
    ).json()
    assert empty == {"events": [], "next": None}


def test_schema_and_reminders(api: Api) -> None:
    schema = api.http.get("/v1/schema").json()
    assert schema["version"] == 1
    assert set(schema["entity_types"]) == {"task", "list"}
    assert schema["entity_types"]["task"]["fields"]["assignee"]["type"] == "mv"
    user = api.register()
    r = api.http.get(f"/v1/spaces/{user.personal_space_id}/reminders", headers=user.headers)
    assert r.status_code == 200
    assert r.json() == {"reminders": [], "next": None}
