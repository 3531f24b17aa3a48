"""The read routes' two paths and their edges (docs/protocol.md section 6.3).

An entity list is served from the projector's read model once that has reached the
space's head, else folded from the log; one entity is the read model's state brought up
to the head with the entity's later events. Only the gateway runs here (no projector),
so a test brings the read model up to date itself by calling the projector's
``apply_space`` on the run's database, and the scheduler's ``apply_states`` for
reminders. The answers must be the same either way (docs/architecture.md invariant 4):
entities, fields, ``seq``, ``next`` cursors, paging with ``limit`` and ``after``,
``include_deleted``, the ``type`` filter. Also: history paging, the reminder list's
``status`` filter and cursor, and the exact error of each refusal.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from projector.apply import apply_space
from scheduler.store import apply_states, space_states
from tests.e2e.conftest import Api, Session

Json = dict[str, Any]
#: Page walks stop here: a cursor that never ends the listing is a failure, not a hang.
MAX_PAGES = 20


# --------------------------------------------------------------------------- helpers


def _op(
    space: str,
    entity_type: str,
    entity_id: str,
    kind: str,
    field: str | None = None,
    value: Any = None,
    *,
    lamport: int = 1,
    pred: Json | None = None,
) -> Json:
    """One op; ``pred`` names the op it supersedes (none: the first of its field or of
    the entity's lifecycle)."""
    op: Json = {
        "op_id": str(uuid.uuid4()),
        "space_id": space,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "kind": kind,
        "lamport": lamport,
        "pred": [] if pred is None else [pred["op_id"]],
    }
    if field is not None:
        op["field"] = field
        op["value"] = value
    return op


def _applied(api: Api, user: Session, ops: list[Json]) -> int:
    """Push ``ops``, insist each was applied; the last seq (the space's head)."""
    r = api.push(user, ops)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["applied"] * len(ops), results
    last: int = results[-1]["seq"]
    return last


def _get(api: Api, user: Session, path: str, **params: Any) -> Json:
    r = api.http.get(path, params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    body: Json = r.json()
    return body


def _error(r: httpx.Response) -> tuple[int, Json]:
    body: Json = r.json()
    return r.status_code, body["error"]


def _walk(api: Api, user: Session, space: str, query: Json) -> list[Json]:
    """Every page of the entity list for ``query``, following ``next`` to the end."""
    pages: list[Json] = []
    after: str | None = None
    while True:
        params = query if after is None else {**query, "after": after}
        pages.append(_get(api, user, f"/v1/spaces/{space}/entities", **params))
        after = pages[-1]["next"]
        if after is None:
            return pages
        assert len(pages) < MAX_PAGES, pages


def _shape(pages: list[Json]) -> list[tuple[list[str], str | None]]:
    """The ids and ``next`` of each page."""
    return [([e["entity_id"] for e in page["entities"]], page["next"]) for page in pages]


async def _checkpoint(pool: asyncpg.Pool, space: str) -> int | None:
    seq: int | None = await pool.fetchval(
        "SELECT seq FROM projector_checkpoints WHERE space_id = $1", space
    )
    return seq


async def _project(pool: asyncpg.Pool, space: str, head: int) -> None:
    """Bring the space's read model up to ``head``, as the projector would."""
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space)
    assert applied is not None
    assert (applied.seq, applied.quarantined) == (head, 0)
    assert await _checkpoint(pool, space) == head


# --------------------------------------------------------------------------- entity lists

LIVE = ["l1", "a:b:c", "t1", "t3", "t4"]
EVERY = ["l1", "l2", "a:b:c", "t1", "t2", "t3", "t4"]

#: Each query of the entity list, and the ids and ``next`` of each of its pages.
LISTINGS: list[tuple[Json, list[tuple[list[str], str | None]]]] = [
    ({}, [(LIVE, None)]),
    ({"include_deleted": True}, [(EVERY, None)]),
    ({"include_deleted": False}, [(LIVE, None)]),
    ({"type": "task"}, [(["a:b:c", "t1", "t3", "t4"], None)]),
    ({"type": "list"}, [(["l1"], None)]),
    ({"type": "list", "include_deleted": True}, [(["l1", "l2"], None)]),
    (
        {"limit": 2},
        [(["l1", "a:b:c"], "task/a:b:c"), (["t1", "t3"], "task/t3"), (["t4"], None)],
    ),
    (
        {"limit": 3, "include_deleted": True},
        [(["l1", "l2", "a:b:c"], "task/a:b:c"), (["t1", "t2", "t3"], "task/t3"), (["t4"], None)],
    ),
    ({"limit": 5}, [(LIVE, None)]),  # exactly full: no next page
    ({"limit": 4}, [(["l1", "a:b:c", "t1", "t3"], "task/t3"), (["t4"], None)]),
    (
        {"type": "task", "include_deleted": True, "limit": 4},
        [(["a:b:c", "t1", "t2", "t3"], "task/t3"), (["t4"], None)],
    ),
    ({"type": "task", "limit": 2}, [(["a:b:c", "t1"], "task/t1"), (["t3", "t4"], None)]),
    (
        {"type": "task", "limit": 1},
        [
            (["a:b:c"], "task/a:b:c"),
            (["t1"], "task/t1"),
            (["t3"], "task/t3"),
            (["t4"], None),
        ],
    ),
    (
        {"type": "list", "include_deleted": True, "limit": 1},
        [(["l1"], "list/l1"), (["l2"], None)],
    ),
    # a cursor names a position, whether or not an entity is there
    ({"after": "task/b"}, [(["t1", "t3", "t4"], None)]),
    (
        {"after": "list/l1", "include_deleted": True},
        [(["l2", "a:b:c", "t1", "t2", "t3", "t4"], None)],
    ),
    (
        {"after": "list/zz", "type": "task", "limit": 3},
        [(["a:b:c", "t1", "t3"], "task/t3"), (["t4"], None)],
    ),
    ({"after": "task/t4"}, [([], None)]),
]


def _world(api: Api, user: Session, space: str) -> int:
    """Two lists (one deleted) and five tasks (one deleted, then edited), with fields of
    every merge rule; the head."""
    return _applied(
        api,
        user,
        [
            _op(space, "list", "l1", "set", "name", "groceries"),
            _op(space, "list", "l2", "set", "name", "errands"),
            _op(space, "list", "l2", "delete", lamport=2),
            _op(space, "task", "a:b:c", "set", "title", "colons"),
            _op(space, "task", "a:b:c", "set", "assignee", "ada"),
            _op(space, "task", "t1", "set", "title", "one"),
            _op(space, "task", "t1", "inc", "pomodoros", 3),
            _op(space, "task", "t2", "set", "title", "two"),
            _op(space, "task", "t2", "delete", lamport=2),
            _op(space, "task", "t2", "set", "notes", "after the delete", lamport=3),
            _op(space, "task", "t3", "set", "title", "three"),
            _op(space, "task", "t3", "add", "tags", "x"),
            _op(space, "task", "t4", "set", "title", "four"),
            _op(space, "task", "t4", "set", "done", True),
        ],
    )


def _listings(api: Api, user: Session, space: str, head: int) -> list[list[Json]]:
    """Every query of ``LISTINGS``, each page checked against the table; the pages."""
    walks = []
    for query, expected in LISTINGS:
        pages = _walk(api, user, space, query)
        assert _shape(pages) == expected, query
        for page in pages:
            assert page["seq"] == head, query
            assert [e["seq"] for e in page["entities"]] == [head] * len(page["entities"])
        walks.append(pages)
    return walks


def _check_entities(api: Api, user: Session, space: str, head: int) -> None:
    """Every entity as listed: flags and values of every merge rule, and the same as its
    own read."""
    (page,) = _walk(api, user, space, {"include_deleted": True})
    listed = {e["entity_id"]: e for e in page["entities"]}
    flags = {
        i: (e["entity_type"], e["deleted"], e["edited_while_deleted"]) for i, e in listed.items()
    }
    assert flags == {
        "l1": ("list", False, False),
        "l2": ("list", True, False),
        "a:b:c": ("task", False, False),
        "t1": ("task", False, False),
        "t2": ("task", True, True),
        "t3": ("task", False, False),
        "t4": ("task", False, False),
    }
    values = {i: {f: v["value"] for f, v in e["fields"].items()} for i, e in listed.items()}
    assert values == {
        "l1": {"name": "groceries"},
        "l2": {"name": "errands"},
        "a:b:c": {"title": "colons", "assignee": ["ada"]},  # mv: a list
        "t1": {"title": "one", "pomodoros": 3},
        "t2": {"title": "two", "notes": "after the delete"},
        "t3": {"title": "three", "tags": ["x"]},
        "t4": {"title": "four", "done": True},
    }
    assert listed["a:b:c"]["fields"]["assignee"]["conflicted"] is False
    assert listed["t1"]["fields"]["pomodoros"] == {"value": 3}  # no heads for a counter
    for entity in listed.values():
        one = _get(
            api, user, f"/v1/spaces/{space}/entities/{entity['entity_type']}/{entity['entity_id']}"
        )
        assert one == entity
        assert one["seq"] == head


async def test_a_listing_from_the_read_model_pages_like_one_from_the_log(
    api: Api, pool: asyncpg.Pool
) -> None:
    user = api.register()
    space = user.personal_space_id
    head = _world(api, user, space)
    assert await _checkpoint(pool, space) is None  # nothing projected: the log is folded
    from_log = _listings(api, user, space, head)
    _check_entities(api, user, space, head)

    await _project(pool, space, head)
    from_read_model = _listings(api, user, space, head)
    _check_entities(api, user, space, head)
    assert from_read_model == from_log


async def test_a_listing_from_the_read_model_folds_in_later_writes(
    api: Api, pool: asyncpg.Pool
) -> None:
    """Writes after the read model's seq are listed at once, at the new head."""
    user = api.register()
    space = user.personal_space_id
    await _project(pool, space, _world(api, user, space))
    history = _get(api, user, f"/v1/spaces/{space}/entities/list/l2/history")
    deleted = history["events"][-1]
    assert deleted["kind"] == "delete"
    head = _applied(
        api,
        user,
        [
            _op(space, "task", "t4", "delete", lamport=5),
            _op(space, "task", "t0", "set", "title", "zero"),
            _op(space, "list", "l2", "restore", lamport=5, pred=deleted),
        ],
    )
    pages = _walk(api, user, space, {"limit": 3})
    assert _shape(pages) == [
        (["l1", "l2", "a:b:c"], "task/a:b:c"),
        (["t0", "t1", "t3"], None),  # exactly full
    ]
    assert {p["seq"] for p in pages} == {head}
    assert _shape(_walk(api, user, space, {"type": "task", "include_deleted": True})) == [
        (["a:b:c", "t0", "t1", "t2", "t3", "t4"], None)
    ]


async def test_answers_come_from_the_read_model_once_it_has_reached_the_head(
    api: Api, pool: asyncpg.Pool
) -> None:
    """Where an answer comes from shows only when the read model and the log disagree,
    so one stored state is removed behind the projector's back. Once the read model has
    reached the head, the list and the entity are read from it; an entity's later
    events are then applied to what it holds (for the removed one: nothing)."""
    user = api.register()
    space = user.personal_space_id
    head = _applied(
        api,
        user,
        [
            _op(space, "task", "kept", "set", "title", "kept"),
            _op(space, "task", "lost", "set", "title", "lost"),
        ],
    )
    await _project(pool, space, head)
    await pool.execute(
        "DELETE FROM entity_states WHERE space_id = $1 AND entity_id = 'lost'", space
    )
    listed = _get(api, user, f"/v1/spaces/{space}/entities")
    assert (listed["seq"], [e["entity_id"] for e in listed["entities"]]) == (head, ["kept"])
    r = api.http.get(f"/v1/spaces/{space}/entities/task/lost", headers=user.headers)
    assert _error(r) == (
        404,
        {"code": "not_found", "message": "no such entity", "retryable": False},
    )

    later = _applied(
        api,
        user,
        [
            _op(space, "task", "lost", "set", "notes", "later", lamport=2),
            _op(space, "task", "kept", "set", "notes", "later", lamport=2),
        ],
    )
    lost = _get(api, user, f"/v1/spaces/{space}/entities/task/lost")
    assert (lost["seq"], {f: v["value"] for f, v in lost["fields"].items()}) == (
        later,
        {"notes": "later"},
    )
    kept = _get(api, user, f"/v1/spaces/{space}/entities/task/kept")
    assert (kept["seq"], {f: v["value"] for f, v in kept["fields"].items()}) == (
        later,
        {"title": "kept", "notes": "later"},
    )


# --------------------------------------------------------------------------- one entity


async def test_an_entity_read_applies_every_page_of_its_later_events(
    api: Api, pool: asyncpg.Pool
) -> None:
    """The events after the read model's seq are read in pages of 1000 (``_TAIL_PAGE``):
    1002 of them take two pages, and all are applied once, on top of the stored state."""
    user = api.register()
    space = user.personal_space_id
    before = _op(space, "task", "busy", "set", "title", "before")
    base = _applied(
        api,
        user,
        [
            before,
            _op(space, "task", "busy", "set", "notes", "kept"),
            _op(space, "task", "busy", "inc", "pomodoros", 1),
        ],
    )
    await _project(pool, space, base)
    bumps = [_op(space, "task", "busy", "inc", "pomodoros", 1) for _ in range(1000)]
    assert _applied(api, user, bumps) == base + 1000
    head = _applied(
        api,
        user,
        [
            _op(space, "task", "busy", "inc", "pomodoros", 2),
            _op(space, "task", "busy", "set", "title", "after", lamport=2, pred=before),
        ],
    )
    assert head == base + 1002
    path = f"/v1/spaces/{space}/entities/task/busy"
    entity = _get(api, user, path)
    assert entity["seq"] == head
    assert {f: v["value"] for f, v in entity["fields"].items()} == {
        "title": "after",
        "notes": "kept",
        "pomodoros": 1003,
    }
    assert entity["fields"]["title"]["conflicted"] is False  # "after" replaced "before"
    assert entity == _get(api, user, path, as_of_seq=head)  # the log folded: the same
    (page,) = _walk(api, user, space, {})
    assert page["entities"] == [entity]


async def test_an_entity_read_applies_a_page_of_exactly_1000_later_events(
    api: Api, pool: asyncpg.Pool
) -> None:
    """A first page that is full is followed by a read of the next, empty here."""
    user = api.register()
    space = user.personal_space_id
    base = _applied(api, user, [_op(space, "task", "full", "set", "title", "t")])
    await _project(pool, space, base)
    bumps = [_op(space, "task", "full", "inc", "pomodoros", 1) for _ in range(1000)]
    head = _applied(api, user, bumps)
    path = f"/v1/spaces/{space}/entities/task/full"
    entity = _get(api, user, path)
    assert (entity["seq"], entity["fields"]["pomodoros"]) == (head, {"value": 1000})
    assert entity == _get(api, user, path, as_of_seq=head)


# --------------------------------------------------------------------------- history


def test_history_pages_end_where_the_events_end(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    ops = [_op(space, "task", "h", "set", "notes", "v0")]
    for i in range(1, 6):
        ops.append(_op(space, "task", "h", "set", "notes", f"v{i}", lamport=i + 1, pred=ops[-1]))
    head = _applied(api, user, ops)
    seqs = list(range(head - 5, head + 1))
    path = f"/v1/spaces/{space}/entities/task/h/history"

    def page(**params: Any) -> tuple[list[int], str | None]:
        body = _get(api, user, path, **params)
        return [e["seq"] for e in body["events"]], body["next"]

    assert page() == (seqs, None)  # from the first event by default
    assert page(limit=6) == (seqs, None)  # exactly full: no next page
    assert page(limit=4) == (seqs[:4], str(seqs[3]))
    assert page(limit=3) == (seqs[:3], str(seqs[2]))
    assert page(limit=3, after=seqs[2]) == (seqs[3:], None)  # exactly full again
    assert page(limit=5, after=seqs[0]) == (seqs[1:], None)
    assert page(after=head) == ([], None)


# --------------------------------------------------------------------------- refusals


def test_reads_name_what_they_refuse(api: Api) -> None:
    user = api.register()
    space = user.personal_space_id
    _applied(api, user, [_op(space, "task", "t1", "set", "title", "one")])
    base = f"/v1/spaces/{space}/entities"

    def refused(path: str, **params: Any) -> tuple[int, Json]:
        return _error(api.http.get(path, params=params, headers=user.headers))

    def error(status: int, code: str, message: str) -> tuple[int, Json]:
        return status, {"code": code, "message": message, "retryable": False}

    no_type = error(404, "not_found", "no such entity type")
    for path in (f"{base}/nosuchtype/t1", f"{base}/_member/{user.user_id}"):
        assert refused(path) == no_type
        assert refused(f"{path}/history") == no_type
    no_entity = error(404, "not_found", "no such entity")
    assert refused(f"{base}/task/never-written") == no_entity
    assert refused(f"{base}/task/t1", as_of_seq=1) == no_entity  # not yet written
    assert refused(f"{base}/list/t1") == no_entity
    not_a_type = error(400, "bad_message", "type: not an entity type of the schema")
    for bad in ("_member", "nosuchtype", "", "null"):
        assert refused(base, type=bad) == not_a_type
    assert refused(base, after="task") == error(400, "bad_message", "after: not a valid cursor")


# --------------------------------------------------------------------------- reminders


async def test_reminders_are_listed_by_due_time_and_status_in_pages(
    api: Api, pool: asyncpg.Pool
) -> None:
    user = api.register()
    space = user.personal_space_id
    sets = {
        entity_id: _op(space, "task", entity_id, "set", "remind_at", f"2099-01-0{day}T08:00:00Z")
        for day, entity_id in ((3, "r3"), (1, "r1"), (4, "r4"), (2, "r2"))
    }
    head = _applied(api, user, [*sets.values(), _op(space, "task", "r3", "set", "done", True)])
    path = f"/v1/spaces/{space}/reminders"
    assert _get(api, user, path) == {"reminders": [], "next": None}  # none made yet
    await _project(pool, space, head)
    async with pool.acquire() as conn:
        _, states = await space_states(conn, space, 0)
        await apply_states(conn, states, datetime.now(UTC))

    def reminder(entity_id: str, day: int, status: str) -> Json:
        return {
            "reminder_id": sets[entity_id]["op_id"],
            "entity_type": "task",
            "entity_id": entity_id,
            "fire_at": f"2099-01-0{day}T08:00:00Z",
            "status": status,
            "attempts": 0,
            "lateness_ms": None,
            "last_error": None,
        }

    every = [
        reminder("r1", 1, "scheduled"),
        reminder("r2", 2, "scheduled"),
        reminder("r3", 3, "cancelled"),  # its task is done
        reminder("r4", 4, "scheduled"),
    ]
    assert _get(api, user, path) == {"reminders": every, "next": None}
    assert _get(api, user, path, status="cancelled") == {"reminders": every[2:3], "next": None}
    scheduled = _get(api, user, path, status="scheduled", limit=2)
    assert scheduled["reminders"] == every[:2]
    assert scheduled["next"] is not None
    rest = _get(api, user, path, status="scheduled", limit=2, after=scheduled["next"])
    assert rest == {"reminders": every[3:], "next": None}
    first = _get(api, user, path, limit=3)
    assert first["reminders"] == every[:3]
    assert _get(api, user, path, limit=3, after=first["next"]) == {
        "reminders": every[3:],
        "next": None,
    }
    assert _get(api, user, path, limit=4) == {"reminders": every, "next": None}  # full
    assert _get(api, user, path, status="fired") == {"reminders": [], "next": None}
    r = api.http.get(path, params={"status": "null"}, headers=user.headers)  # read as None
    assert _error(r) == (
        400,
        {"code": "bad_message", "message": "status: not a valid value", "retryable": False},
    )
