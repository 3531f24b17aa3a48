"""``POST /v1/sync/push`` and ``GET /v1/sync/pull`` against a real gateway."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import msgspec
import nats

from core.settings import Settings
from core.wire import DEFAULT_LIMITS
from lab.metrics import parse
from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import Api, GatewayProcess, Session, StartGateway, set_op


def _results(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def _head(api: Api, user: Session, space_id: str) -> int:
    r = api.http.get("/v1/sync/pull", params={"space_id": space_id}, headers=user.headers)
    head: int = r.json()["head"]
    return head


def test_replaying_a_batch_reports_duplicates_with_the_original_seqs(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    ops = [set_op(space, "t1", "one"), set_op(space, "t2", "two", lamport=2)]
    first = _results(api.push(user, ops, batch_id="batch-1"))
    assert [r["status"] for r in first] == ["applied", "applied"]
    again = api.push(user, ops, batch_id="batch-1")
    assert again.json()["batch_id"] == "batch-1"
    replay = _results(again)
    assert [(r["op_id"], r["status"], r["seq"]) for r in replay] == [
        (op["op_id"], "duplicate", r["seq"]) for op, r in zip(ops, first, strict=True)
    ]
    # Another device of the same user replaying it: still the same events.
    phone = api.login(user)
    assert [r["status"] for r in _results(api.push(phone, ops))] == ["duplicate", "duplicate"]
    assert _head(api, user, space) == 3


def test_same_op_id_with_another_payload_is_op_id_conflict(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    op = set_op(space, "t1", "original")
    assert _results(api.push(user, [op]))[0]["status"] == "applied"
    (result,) = _results(api.push(user, [{**op, "value": "changed"}]))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "op_id_conflict"
    entity = api.http.get(f"/v1/spaces/{space}/entities/task/t1", headers=user.headers).json()
    assert entity["fields"]["title"]["value"] == "original"


def test_one_invalid_op_is_rejected_and_the_valid_ones_stored(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    ops = [
        set_op(space, "t1", "valid"),
        set_op(space, "t1", "not a boolean", field="done", lamport=2),
        set_op(space, "t1", "x", field="no_such_field", lamport=3),
        {**set_op(space, "t1", "x", lamport=4), "entity_type": "nope"},
        {**set_op(space, "t1", "x", lamport=5), "device_id": str(uuid.uuid4())},
        set_op(space, "t1", "x" * 501, lamport=6),
        {"not": "an op"},
        set_op(space, "t2", "also valid", lamport=7),
    ]
    results = _results(api.push(user, ops))
    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("applied", None),
        ("rejected", "type_mismatch"),
        ("rejected", "unknown_field"),
        ("rejected", "unknown_entity_type"),
        ("rejected", "device_mismatch"),
        ("rejected", "too_large"),
        ("rejected", "invalid_op"),
        ("applied", None),
    ]
    assert [r["seq"] for r in results if r["status"] == "applied"] == [2, 3]
    assert _head(api, user, space) == 3


def test_too_many_ops_is_413_and_nothing_is_stored(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    ops = [set_op(space, f"t{i}", "x") for i in range(1001)]
    r = api.push(user, ops)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
    assert _head(api, user, space) == 1


def test_a_body_over_max_message_bytes_is_413(api: Api) -> None:
    user = api.register()
    body = json.dumps({"batch_id": "big", "ops": [{"pad": "x" * (1_048_576 + 10)}]})
    r = api.http.post(
        "/v1/sync/push",
        content=body,
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"


def test_pull_pages_until_the_head(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    _results(api.push(user, [set_op(space, f"t{i}", "x", lamport=i + 1) for i in range(5)]))
    after, seen = 0, []
    while True:
        r = api.http.get(
            "/v1/sync/pull",
            params={"space_id": space, "after": after, "limit": 2},
            headers=user.headers,
        )
        page = r.json()
        assert len(page["events"]) <= 2
        seen += [e["seq"] for e in page["events"]]
        if not page["events"] or page["events"][-1]["seq"] == page["head"]:
            break
        after = page["events"][-1]["seq"]
    assert seen == [1, 2, 3, 4, 5, 6]
    big = api.http.get(
        "/v1/sync/pull", params={"space_id": space, "limit": 10**6}, headers=user.headers
    )
    assert big.status_code == 200
    assert len(big.json()["events"]) == 6


def test_push_rate_limit_per_device(
    start_gateway: StartGateway,
) -> None:
    limited = start_gateway({"push_burst": 3, "push_rate": 0.2})
    api = Api(limited.base_url)
    try:
        user = api.register()
        other = api.login(user)
        space = user.personal_space_id
        for i in range(3):
            assert api.push(user, [set_op(space, f"t{i}", "x", lamport=i + 1)]).status_code == 200
        r = api.push(user, [set_op(space, "t-late", "x", lamport=9)])
        assert r.status_code == 429
        error = r.json()["error"]
        assert error["code"] == "rate_limited"
        assert error["retryable"] is True
        assert error["retry_after_ms"] > 0
        assert api.push(other, [set_op(space, "t-other", "x", lamport=9)]).status_code == 200
    finally:
        api.close()


async def test_a_committed_push_is_hinted_on_nats(
    gateway: GatewayProcess, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
        r = await http.post(
            "/v1/auth/register",
            json={
                "email": f"hint-{uuid.uuid4().hex[:8]}@example.test",
                "password": "hint password",
                "device_name": "x",
            },
        )
        body = r.json()
        space = body["personal_space_id"]
        assert settings.nats_url is not None
        nc = await nats.connect(settings.nats_url)
        try:
            sub = await nc.subscribe(f"{settings.nats_prefix}.space.{space}")
            await nc.flush()
            ops = [set_op(space, "t1", "a"), set_op(space, "t2", "b", lamport=2)]
            r = await http.post(
                "/v1/sync/push",
                json={"batch_id": "h", "ops": ops},
                headers={"Authorization": f"Bearer {body['access_token']}"},
            )
            assert r.status_code == 200
            message = await asyncio.wait_for(sub.next_msg(), 5)
            hint = json.loads(message.data)
            assert {k: hint[k] for k in ("space_id", "first_seq", "last_seq")} == {
                "space_id": space,
                "first_seq": 2,
                "last_seq": 3,
            }
        finally:
            await nc.close()


def _sample(api: Api, name: str, **labels: str) -> float:
    """The value of one sample of the gateway's ``/metrics`` (0 when it has none yet)."""
    admin = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
    scrape = parse(api.http.get("/metrics", headers=admin).text)
    return scrape.values.get((name, tuple(sorted(labels.items()))), 0.0)


def test_pull_starts_at_the_first_event_and_is_empty_at_the_head(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    _results(api.push(user, [set_op(space, "t1", "x")]))
    r = api.http.get("/v1/sync/pull", params={"space_id": space}, headers=user.headers)
    assert [e["seq"] for e in r.json()["events"]] == [1, 2]  # member_added, then the set
    assert r.json()["head"] == 2
    r = api.http.get("/v1/sync/pull", params={"space_id": space, "after": 2}, headers=user.headers)
    assert r.json() == {"events": [], "head": 2}


def test_a_pull_is_clamped_to_max_pull_limit(start_gateway: StartGateway) -> None:
    limits = msgspec.to_builtins(DEFAULT_LIMITS)
    api = Api(start_gateway({"limits": {**limits, "max_pull_limit": 3}}).base_url)
    try:
        user = api.register()
        space = user.personal_space_id
        _results(api.push(user, [set_op(space, f"t{i}", "x", lamport=i + 1) for i in range(5)]))
        r = api.http.get(
            "/v1/sync/pull", params={"space_id": space, "limit": 100}, headers=user.headers
        )
        assert [e["seq"] for e in r.json()["events"]] == [1, 2, 3]
        assert r.json()["head"] == 6
    finally:
        api.close()


def test_a_push_answers_the_servers_lamport(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    r = api.push(user, [set_op(space, "t1", "x", lamport=41)])
    assert r.json()["server_lamport"] >= 41


def test_replays_are_counted_as_idempotency_hits_of_http(api: Api) -> None:
    user = api.register()
    ops = [set_op(user.personal_space_id, f"t{i}", "x", lamport=i + 1) for i in range(3)]
    _results(api.push(user, ops))
    before = _sample(api, "concord_idempotency_hits_total", route="http")
    assert {r["status"] for r in _results(api.push(user, ops))} == {"duplicate"}
    assert _sample(api, "concord_idempotency_hits_total", route="http") == before + 3


def test_a_readers_or_strangers_push_is_refused_before_the_store(api: Api) -> None:
    """Over HTTP the role is checked before the push reaches the store: refused as a
    whole, and no push is timed (``concord_push_seconds`` counts what the store saw)."""
    owner, reader, stranger = api.register(), api.register(), api.register()
    space = api.create_space(owner, "shared")
    api.add_member(owner, space, reader, "reader")
    before = _sample(api, "concord_push_seconds_count")
    r = api.push(reader, [set_op(space, "t1", "x")])
    assert r.status_code == 403, r.text
    assert r.json()["error"] == {
        "code": "forbidden",
        "message": "readers may not push",
        "retryable": False,
    }
    r = api.push(stranger, [set_op(space, "t1", "x")])
    assert r.status_code == 404, r.text
    assert r.json()["error"]["message"] == "no such space"
    assert _sample(api, "concord_push_seconds_count") == before
    assert _results(api.push(owner, [set_op(space, "t1", "x")]))[0]["status"] == "applied"
    assert _sample(api, "concord_push_seconds_count") == before + 1
