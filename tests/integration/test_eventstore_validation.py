"""Per-op validation through ``append``: every code of docs/protocol.md section 4 an op can get."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from core.errors import ErrorBody, Unavailable
from core.wire import DEFAULT_LIMITS, Limits
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from tests.conftest import TEST_SECRET

Raw = dict[str, Any]


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


def _without(key: str) -> Callable[[Raw], Raw]:
    return lambda raw: {k: v for k, v in raw.items() if k != key}


def _with(**changes: Any) -> Callable[[Raw], Raw]:
    return lambda raw: {**raw, **changes}


CASES: list[tuple[str, Callable[[Raw], Any], str]] = [
    ("non-object", lambda raw: [raw], "invalid_op"),
    ("bad op_id", _with(op_id="not-a-uuid"), "invalid_op"),
    ("op_id not a string", _with(op_id=7), "invalid_op"),
    ("no op_id", _without("op_id"), "invalid_op"),
    ("no entity_id", _without("entity_id"), "invalid_op"),
    ("bad entity_id", _with(entity_id="has space"), "invalid_op"),
    ("unknown kind", _with(kind="frob"), "invalid_op"),
    ("lamport 0", _with(lamport=0), "invalid_op"),
    ("lamport float", _with(lamport=1.0), "invalid_op"),
    ("lamport bool", _with(lamport=True), "invalid_op"),
    ("lamport too big", _with(lamport=2**53), "invalid_op"),
    ("lamport beyond headroom", _with(lamport=DEFAULT_LIMITS.lamport_headroom + 10), "invalid_op"),
    ("lamport 2^20 + 1 above 0", _with(lamport=2**20 + 1), "invalid_op"),
    ("pred unknown", _with(pred=["5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"]), "invalid_op"),
    ("pred not a list", _with(pred="x"), "invalid_op"),
    ("pred not uuids", _with(pred=["x"]), "invalid_op"),
    ("other space", _with(space_id="5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"), "invalid_op"),
    ("client_time too long", _with(client_time="x" * 65), "invalid_op"),
    ("client_time NUL", _with(client_time="a\x00b"), "invalid_op"),
    ("client_time not text", _with(client_time=5), "invalid_op"),
    ("non-finite value", _with(value=float("nan")), "invalid_op"),
    ("other device", _with(device_id="5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01"), "device_mismatch"),
    ("unknown entity type", _with(entity_type="boat"), "unknown_entity_type"),
    ("member entity type", _with(entity_type="_member"), "unknown_entity_type"),
    ("unknown field", _with(field="colour"), "unknown_field"),
    ("wrong type", _with(value=5), "type_mismatch"),
    ("kind not allowed", _with(kind="inc", value=1), "type_mismatch"),
    (
        "timestamp without Z",
        _with(field="due_at", value="2030-01-01T00:00:00+01:00"),
        "type_mismatch",
    ),
    ("title too long", _with(value="x" * 501), "too_large"),
]
# docs/protocol.md section 2: no string a client sends may hold a NUL or an unpaired surrogate;
# such an op is invalid_op, whichever string it is (and before anything reaches SQL).
for _what, _bad in (("NUL", "a\x00b"), ("lone surrogate", "a\ud800b")):
    CASES += [
        (f"{_what} in a value", _with(value=_bad), "invalid_op"),
        (f"{_what} in a field", _with(field=_bad), "invalid_op"),
        (f"{_what} in an entity_type", _with(entity_type=_bad), "invalid_op"),
        (f"{_what} in an entity_id", _with(entity_id=_bad), "invalid_op"),
        (f"{_what} in a set element", _with(kind="add", field="tags", value=_bad), "invalid_op"),
        (f"{_what} in a nested value", _with(value={"a": [1, {"b": _bad}]}), "invalid_op"),
        (f"{_what} in a nested key", _with(value={_bad: True}), "invalid_op"),
        (f"{_what} in client_time", _with(client_time=_bad), "invalid_op"),
        (f"{_what} in device_id", _with(device_id=_bad), "invalid_op"),
    ]


@pytest.mark.parametrize(("name", "mutate", "code"), CASES, ids=[c[0] for c in CASES])
async def test_rejected_op_gets_its_code(
    store: PostgresEventStore, name: str, mutate: Callable[[Raw], Any], code: str
) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="v", creator_user_id=user, personal=True)
    good = op(space, entity_id="ok", lamport=1)
    bad = mutate(op(space, lamport=2))
    out = await store.append(user_id=user, device_id=device, ops=[good, bad])
    assert out.results[0].status == "applied"
    result = out.results[1]
    assert result.status == "rejected", name
    assert result.error is not None
    assert result.error.code == code, result.error
    assert result.error.retryable is False
    assert await store.head(space) == 2  # only the good op


async def test_own_device_id_is_accepted(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="v", creator_user_id=user, personal=True)
    out = await store.append(
        user_id=user, device_id=device, ops=[op(space, device_id=device.upper())]
    )
    assert out.results[0].status == "applied"


async def test_nul_in_a_value_is_refused_and_nothing_stored(store: PostgresEventStore) -> None:
    # It used to be stored (the log's json column takes \u0000), and then no read model
    # could hold it: docs/protocol.md section 2 now refuses it with the op.
    user, device = new_id(), new_id()
    space = await store.create_space(name="v", creator_user_id=user, personal=True)
    out = await store.append(user_id=user, device_id=device, ops=[op(space, value="a\x00b")])
    assert out.results[0].error is not None
    assert out.results[0].error == ErrorBody(
        code="invalid_op",
        message="strings in a value must not contain NUL or an unpaired surrogate",
        retryable=False,
    )
    assert await store.head(space) == 1
    assert await store.verify(space) is None


async def test_nul_in_a_set_field_name_is_invalid_op_not_a_database_error(
    store: PostgresEventStore,
) -> None:
    # A set's field is looked up in SQL (its heads) before the schema check: a NUL there
    # used to reach PostgreSQL, which refused the whole push.
    user, device = new_id(), new_id()
    space = await store.create_space(name="v", creator_user_id=user, personal=True)
    ops = [op(space, entity_id="ok", lamport=1), op(space, field="ti\x00tle", lamport=2)]
    out = await store.append(user_id=user, device_id=device, ops=ops)
    assert [r.status for r in out.results] == ["applied", "rejected"]
    assert out.results[1].error is not None
    assert out.results[1].error.code == "invalid_op"


async def test_lamport_headroom_boundary_and_message(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="v", creator_user_id=user, personal=True)
    await store.append(user_id=user, device_id=device, ops=[op(space, lamport=12)])
    out = await store.append(
        user_id=user,
        device_id=device,
        ops=[op(space, lamport=5_000_000), op(space, lamport=12 + 2**20 + 1)],
    )
    assert [r.error for r in out.results] == [
        ErrorBody(
            code="invalid_op",
            message="lamport 5000000 is more than 1048576 above the space's highest stored "
            "lamport 12; at most 1048588",
            retryable=False,
        ),
        ErrorBody(
            code="invalid_op",
            message="lamport 1048589 is more than 1048576 above the space's highest stored "
            "lamport 12; at most 1048588",
            retryable=False,
        ),
    ]
    at_most = await store.append(
        user_id=user, device_id=device, ops=[op(space, lamport=12 + 2**20)]
    )
    assert at_most.results[0].status == "applied"
    assert at_most.server_lamport == 12 + 2**20


async def test_op_id_conflict_is_about_the_payload(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="v", creator_user_id=user, personal=True)
    first = op(space, lamport=3, client_time="a")
    await store.append(user_id=user, device_id=device, ops=[first])
    # client_time and device_id are not payload: same op; lamport is: conflict.
    out = await store.append(
        user_id=user,
        device_id=device,
        ops=[{**first, "client_time": "b"}, {**first, "lamport": 4}, {**first, "pred": []}],
    )
    assert [r.status for r in out.results] == ["duplicate", "rejected", "duplicate"]
    assert out.results[1].error is not None
    assert out.results[1].error.code == "op_id_conflict"


async def test_push_without_space(store: PostgresEventStore) -> None:
    user = new_id()
    space = await store.create_space(name="v", creator_user_id=user, personal=True)
    for ops in ([5, op(space)], [op("junk"), op(space)], [{"space_id": 3}]):
        out = await store.append(user_id=user, device_id=new_id(), ops=ops)
        assert out.space_id is None
        assert out.server_lamport == 0
        assert {r.error.code for r in out.results if r.error} == {"invalid_op"}
        assert all(r.status == "rejected" for r in out.results)
    assert await store.head(space) == 1


async def test_reader_is_forbidden_and_stranger_not_found(store: PostgresEventStore) -> None:
    owner, reader, stranger = new_id(), new_id(), new_id()
    space = await store.create_space(name="v", creator_user_id=owner, personal=False)
    await store.change_member(space_id=space, user_id=reader, role="reader", by=owner)
    await store.append(user_id=owner, device_id=new_id(), ops=[op(space, lamport=9)])
    ops = [op(space, lamport=10), op(space, kind="frob"), 17]
    as_reader = await store.append(user_id=reader, device_id=new_id(), ops=ops)
    assert [r.error.code for r in as_reader.results if r.error] == ["forbidden"] * 3
    assert as_reader.server_lamport == 9
    as_stranger = await store.append(user_id=stranger, device_id=new_id(), ops=ops)
    assert [r.error.code for r in as_stranger.results if r.error] == ["not_found"] * 3
    assert as_stranger.server_lamport == 0
    assert as_stranger.head == 0
    unknown = await store.append(user_id=owner, device_id=new_id(), ops=[op(new_id())])
    assert [r.error.code for r in unknown.results if r.error] == ["not_found"]
    assert await store.head(space) == 3


async def test_dead_pool_is_unavailable(database_url: str) -> None:
    dead = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    async with PostgresEventStore(dead, secret_key=TEST_SECRET) as store:
        user = new_id()
        space = await store.create_space(name="v", creator_user_id=user, personal=True)
        await dead.close()
        with pytest.raises(Unavailable):
            await store.append(user_id=user, device_id=new_id(), ops=[op(space)])
        with pytest.raises(Unavailable):
            await store.read(space, 0, 10)
        with pytest.raises(Unavailable):
            await store.create_space(name="x", creator_user_id=user, personal=False)
    unreachable = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:1/none", min_size=0, max_size=1
    )
    async with PostgresEventStore(unreachable, secret_key=TEST_SECRET) as store:
        with pytest.raises(Unavailable):
            await store.append(user_id=new_id(), device_id=new_id(), ops=[op(new_id())])
        with pytest.raises(Unavailable):
            await store.head(new_id())
    await unreachable.close()


async def test_reused_op_id_with_a_higher_lamport_is_a_conflict(
    store: PostgresEventStore,
) -> None:
    # An op_id above the space's highest lamport is not looked up (it cannot be a
    # duplicate); reusing a stored op_id that way is caught by UNIQUE and rerun.
    user, device = new_id(), new_id()
    space = await store.create_space(name="v", creator_user_id=user, personal=True)
    first = op(space, lamport=1)
    await store.append(user_id=user, device_id=device, ops=[first])
    out = await store.append(
        user_id=user, device_id=device, ops=[op(space, lamport=2), {**first, "lamport": 50}]
    )
    assert out.results[0].status == "applied"
    assert out.results[1].error is not None
    assert out.results[1].error.code == "op_id_conflict"
    assert await store.head(space) == 3


async def test_pred_naming_a_stored_op_reused_in_the_push(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="v", creator_user_id=user, personal=True)
    first = op(space, lamport=1)
    await store.append(user_id=user, device_id=device, ops=[first])
    reused = {**first, "lamport": 10, "field": "colour"}  # invalid, same op_id
    follow = op(space, lamport=5, pred=[first["op_id"]])
    out = await store.append(user_id=user, device_id=device, ops=[reused, follow])
    assert out.results[0].error is not None
    assert out.results[0].error.code == "unknown_field"
    assert out.results[1].status == "applied"  # its pred names the stored op


def _error(code: str, message: str) -> ErrorBody:
    return ErrorBody(code=code, message=message, retryable=False)


async def test_refused_pushes_echo_every_op_id_and_store_nothing(
    store: PostgresEventStore,
) -> None:
    """A push refused as a whole (docs/protocol.md section 2: the caller's role first)
    answers every op, echoing its op_id (canonical when it is a UUID, None when there
    is none), with the same error; the outcome names the space and holds no event."""
    owner, reader, stranger = new_id(), new_id(), new_id()
    space = await store.create_space(name="r", creator_user_id=owner, personal=False)
    await store.change_member(space_id=space, user_id=reader, role="reader", by=owner)
    await store.append(user_id=owner, device_id=new_id(), ops=[op(space, lamport=4)])
    shouty = new_id()
    fine = op(space, lamport=5)
    ops: list[Any] = [fine, op(space, op_id=shouty.upper(), kind="frob"), 17]
    echoes = [fine["op_id"], shouty, None]
    for user, error, lamport, head in (
        (reader, _error("forbidden", "a reader may not push"), 4, 3),
        (stranger, _error("not_found", "no such space"), 0, 0),
        ("not-a-uuid", _error("not_found", "no such space"), 0, 0),
    ):
        out = await store.append(user_id=user, device_id=new_id(), ops=ops)
        assert [(r.op_id, r.status, r.error, r.seq) for r in out.results] == [
            (echo, "rejected", error, None) for echo in echoes
        ], user
        assert (out.space_id, out.events, out.server_lamport, out.head) == (
            space,
            [],
            lamport,
            head,
        )
    assert await store.head(space) == 3  # the owner, the reader, the owner's op


async def test_each_refused_op_echoes_its_op_id_and_error(store: PostgresEventStore) -> None:
    """Per op: the op_id echoed, the code and its message, in the results' order."""
    user, device = new_id(), new_id()
    space = await store.create_space(name="e", creator_user_id=user, personal=True)
    stored = op(space, lamport=2, value="first")
    await store.append(user_id=user, device_id=device, ops=[stored])
    other_device = op(space, lamport=3, device_id=new_id())
    conflict = {**stored, "value": "second"}
    fine = op(space, lamport=3)
    out = await store.append(user_id=user, device_id=device, ops=[other_device, conflict, fine])
    assert [(r.op_id, r.status, r.error) for r in out.results] == [
        (
            other_device["op_id"],
            "rejected",
            _error("device_mismatch", "the op names another device"),
        ),
        (
            stored["op_id"],
            "rejected",
            _error("op_id_conflict", "op_id already stored in this space with a different payload"),
        ),
        (fine["op_id"], "applied", None),
    ]
    assert [e.op_id for e in out.events] == [fine["op_id"]]


async def test_the_store_keeps_its_own_lamport_headroom(pool: asyncpg.Pool) -> None:
    """``Limits.lamport_headroom`` is the store's, not the protocol default's."""
    limits = Limits(lamport_headroom=10)
    async with PostgresEventStore(pool, secret_key=TEST_SECRET, limits=limits) as store:
        user, device = new_id(), new_id()
        space = await store.create_space(name="h", creator_user_id=user, personal=True)
        await store.append(user_id=user, device_id=device, ops=[op(space, lamport=5)])
        out = await store.append(
            user_id=user, device_id=device, ops=[op(space, lamport=16), op(space, lamport=15)]
        )
        assert [r.error for r in out.results] == [
            _error(
                "invalid_op",
                "lamport 16 is more than 10 above the space's highest stored lamport 5; at most 15",
            ),
            None,
        ]


async def test_an_op_at_the_headroom_still_has_its_pred_checked(store: PostgresEventStore) -> None:
    user, device = new_id(), new_id()
    space = await store.create_space(name="c", creator_user_id=user, personal=True)
    cap = DEFAULT_LIMITS.lamport_headroom
    nowhere = new_id()
    out = await store.append(
        user_id=user, device_id=device, ops=[op(space, lamport=cap, pred=[nowhere])]
    )
    assert [r.error for r in out.results] == [
        _error("invalid_op", f"pred entry {nowhere} names no stored op")
    ]
    assert await store.head(space) == 1


async def test_ops_refused_after_the_role_check_echo_their_op_ids(
    store: PostgresEventStore,
) -> None:
    """The refusals the transaction makes (headroom, pred, the schema's late verdict)
    echo the op_id of the op they refuse, among applied ops."""
    user, device = new_id(), new_id()
    space = await store.create_space(name="x", creator_user_id=user, personal=True)
    ops = [
        op(space, lamport=DEFAULT_LIMITS.lamport_headroom + 1),
        op(space, lamport=1),
        op(space, lamport=2, pred=[new_id()]),
        op(space, lamport=2, field="colour"),
        op(space, lamport=2),
    ]
    out = await store.append(user_id=user, device_id=device, ops=ops)
    assert [(r.op_id, r.error.code if r.error else r.status) for r in out.results] == [
        (ops[0]["op_id"], "invalid_op"),
        (ops[1]["op_id"], "applied"),
        (ops[2]["op_id"], "invalid_op"),
        (ops[3]["op_id"], "unknown_field"),
        (ops[4]["op_id"], "applied"),
    ]


async def test_max_value_bytes_counts_the_values_canonical_json(pool: asyncpg.Pool) -> None:
    """``Limits.max_value_bytes`` bounds the canonical JSON of a value (after the
    schema's own verdict, which comes first)."""
    limits = Limits(max_value_bytes=20)
    async with PostgresEventStore(pool, secret_key=TEST_SECRET, limits=limits) as store:
        user, device = new_id(), new_id()
        space = await store.create_space(name="b", creator_user_id=user, personal=True)
        ops = [
            op(space, value="x" * 18),  # "xx...x": 20 bytes, at the limit
            op(space, value="x" * 19),
            op(space, value=["x" * 30]),  # too large, and no text: the schema speaks
        ]
        out = await store.append(user_id=user, device_id=device, ops=ops)
        assert [r.error for r in out.results] == [
            None,
            _error("too_large", "the value is 21 bytes of JSON; at most 20"),
            out.results[2].error,
        ]
        assert out.results[2].error is not None
        assert out.results[2].error.code == "type_mismatch"
