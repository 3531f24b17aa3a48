"""The read model on real PostgreSQL and NATS: batches, reads, downstream changes, and the
property that it always equals a replay of the log (docs/architecture.md invariant 4)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import nats
import pytest
from hypothesis import HealthCheck, given, settings

import projector.readmodel
import projector.service as service_module
from core.events import ReminderChange
from core.settings import Settings
from crdt import EntityState, encode_state
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from projector.apply import apply_space
from projector.readmodel import (
    InvalidCursor,
    get_entity,
    lag_by_space,
    lag_totals,
    list_entities,
    quarantine_count,
)
from projector.runner import Running, running
from projector.service import ProjectorOptions
from projector.stream import Names
from tests.conftest import TEST_SECRET
from tests.integration.test_projector_support import (
    assert_matches_replay,
    caught_up,
    delete_stream,
    histories,
    new_space,
    push,
    wire,
)


@pytest.fixture(scope="module")
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


@pytest.fixture(scope="module")
async def service(settings: Settings) -> AsyncIterator[Running]:
    options = ProjectorOptions(tick_interval=0.3)
    async with running(settings, options=options, relay_interval=0.05) as parts:
        yield parts
    await delete_stream(settings.nats_url or "", Names(settings.nats_prefix))


async def _stored_size(pool: asyncpg.Pool, space: str, entity_id: str) -> int:
    size = await pool.fetchval(
        "SELECT octet_length(state) FROM entity_states WHERE space_id = $1 AND entity_id = $2",
        space,
        entity_id,
    )
    assert size is not None
    return int(size)


async def test_a_stored_state_does_not_grow_with_its_history(
    pool: asyncpg.Pool, store: PostgresEventStore, service: Running
) -> None:
    """Issue 17's "a field's cost grows with its history", on the read model's side: an
    entity whose title was set 600 times and counter bumped 600 times, applied over
    several batches, is stored in about the bytes of one set and one inc (settled, see
    crdt.encode_state), so loading and writing it back costs the same as for a new one."""
    space, owner = await new_space(store)
    device = new_id()
    head: str | None = None
    for round_ in range(6):
        ops = []
        for i in range(100):
            n = round_ * 100 + i + 1
            pred = [head] if head else None
            title = op(space, entity_id="long", value=f"t{n}", lamport=2 * n, pred=pred)
            head = title["op_id"]
            ops.append(title)
            ops.append(
                op(
                    space,
                    entity_id="long",
                    kind="inc",
                    field="pomodoros",
                    value=1,
                    lamport=2 * n + 1,
                )
            )
        await push(store, owner, device, ops)
        await caught_up(pool, [space])  # one batch (or more) per round
    await push(
        store,
        owner,
        device,
        [
            op(space, entity_id="new", value="t600", lamport=5000),
            op(space, entity_id="new", kind="inc", field="pomodoros", value=600, lamport=5001),
        ],
    )
    await caught_up(pool, [space])
    long_state, _ = await get_entity(pool, space, "task", "long")
    assert long_state is not None
    assert long_state.view().fields["pomodoros"].value == 600
    assert long_state.view().fields["title"].value == "t600"
    # the same parts; the long one's lamports are a few bytes longer
    assert await _stored_size(pool, space, "long") <= await _stored_size(pool, space, "new") + 8
    await assert_matches_replay(pool, store, [space])


async def test_batch_updates_states_and_checkpoint_together(
    pool: asyncpg.Pool, store: PostgresEventStore, service: Running
) -> None:
    space, owner = await new_space(store)
    device = new_id()
    title = op(space, entity_id="t-1", field="title", value="Buy milk", lamport=1)
    fields = {"done": False, "due_at": "2030-01-02T03:04:05Z", "list_id": "groceries"}
    await push(
        store,
        owner,
        device,
        [title]
        + [
            op(space, entity_id="t-1", field=name, value=value, lamport=2 + n)
            for n, (name, value) in enumerate(fields.items())
        ],
    )
    await caught_up(pool, [space])
    state, seq = await get_entity(pool, space, "task", "t-1")
    assert seq == 5
    assert state is not None
    assert state.view().fields["title"].value == "Buy milk"
    # every typed column, as operators' SQL reads it (docs/projector.md, Read model)
    row = await pool.fetchrow(
        "SELECT applied_seq, title, done, due_at, list_id, remind_at, has_client_events "
        "FROM entity_states WHERE space_id = $1 AND entity_id = 't-1'",
        space,
    )
    assert row is not None
    due = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert tuple(row) == (5, "Buy milk", False, due, "groceries", None, True)
    assert await get_entity(pool, space, "task", "nope") == (None, 5)
    # The creator's member_added is projected, but `_member` is never readable.
    assert (await get_entity(pool, space, "_member", owner))[0] is None
    await assert_matches_replay(pool, store, [space])


async def test_a_batch_reports_a_reminder_change_only_when_there_is_one(
    fresh_database: Callable[..., Awaitable[str]],
) -> None:
    """``apply_space`` on a database no service projects: setting remind_at is a change
    for the scheduler; a later title-only edit of the same task (its stored reminder key
    loaded with its state) is none."""
    scratch = await asyncpg.create_pool(await fresh_database(), min_size=1, max_size=3)
    try:
        async with PostgresEventStore(scratch, secret_key=TEST_SECRET) as own:
            space, owner = await new_space(own)
            device = new_id()
            when = "2030-01-01T09:00:00Z"
            remind = op(space, entity_id="t-9", field="remind_at", value=when, lamport=1)
            await push(own, owner, device, [remind])
            title = op(space, entity_id="t-9", field="title", value="x", lamport=2)
            async with scratch.acquire() as conn:
                first = await apply_space(conn, space)
                assert first is not None
                changes = [(r.entity_id, r.reminder_id, r.remind_at) for r in first.reminders]
                assert changes == [("t-9", remind["op_id"], when)]
                await push(own, owner, device, [title])
                second = await apply_space(conn, space)
                assert second is not None
                assert (second.count, second.reminders) == (1, [])
    finally:
        await scratch.close()


async def test_gap_is_read_from_postgres(fresh_database: Callable[..., Awaitable[str]]) -> None:
    """On a database no service projects: deliver seq 1, then seq 5 alone (a gap)."""
    scratch = await asyncpg.create_pool(await fresh_database(), min_size=1, max_size=3)
    try:
        async with PostgresEventStore(scratch, secret_key=TEST_SECRET) as own:
            space, owner = await new_space(own)
            ops = [
                op(space, entity_id="t-1", kind="inc", field="pomodoros", value=2, lamport=i + 1)
                for i in range(4)
            ]
            await push(own, owner, new_id(), ops)
            events = await own.read(space, 0, 100)
            async with scratch.acquire() as conn:
                first = await apply_space(conn, space, delivered=events[:1])
                assert first is not None
                assert (first.seq, first.count) == (1, 1)
                applied = await apply_space(conn, space, delivered=events[4:])
                assert applied is not None
                assert (applied.seq, applied.count) == (5, 4)
                assert await apply_space(conn, space, delivered=events) is None  # repeats
                assert await apply_space(conn, space) is None  # nothing new in the log
            state, seq = await get_entity(scratch, space, "task", "t-1")
            assert seq == 5
            assert state is not None
            assert state.view().fields["pomodoros"].value == 8
            await assert_matches_replay(scratch, own, [space])
    finally:
        await scratch.close()


async def test_downstream_changes_are_published(
    pool: asyncpg.Pool, store: PostgresEventStore, service: Running, settings: Settings
) -> None:
    space, owner = await new_space(store)
    names = Names(settings.nats_prefix)
    nc = await nats.connect(settings.nats_url or "")
    got: dict[str, list[bytes]] = {"reminders": []}

    async def collect(msg: Any) -> None:
        got[msg.subject.split(".")[1]].append(msg.data)

    await nc.subscribe(names.reminders_subject(space), cb=collect)
    await nc.flush()
    try:
        device = new_id()
        remind = op(
            space, entity_id="t-9", field="remind_at", value="2030-01-01T09:00:00Z", lamport=1
        )
        await push(
            store,
            owner,
            device,
            [remind, op(space, entity_id="t-9", field="title", value="x", lamport=2)],
        )
        await caught_up(pool, [space])
        await push(
            store, owner, device, [op(space, entity_id="t-9", field="done", value=True, lamport=3)]
        )
        await caught_up(pool, [space])
        await push(
            store, owner, device, [op(space, entity_id="t-9", field="title", value="y", lamport=4)]
        )
        await caught_up(pool, [space])
        await asyncio.sleep(0.3)
    finally:
        await nc.close()
    reminders = [msgspec.json.decode(d, type=ReminderChange) for d in got["reminders"]]
    # Setting remind_at made one; done made another; the title-only edit made none.
    assert [(r.reminder_id, r.remind_at, r.done) for r in reminders] == [
        (remind["op_id"], "2030-01-01T09:00:00Z", False),
        (remind["op_id"], "2030-01-01T09:00:00Z", True),
    ]
    row = await pool.fetchrow(
        "SELECT remind_at_op_id::text, remind_at, done FROM entity_states "
        "WHERE space_id = $1 AND entity_id = 't-9'",
        space,
    )
    assert row is not None
    assert row[0] == remind["op_id"]
    assert row[1].year == 2030
    assert row[2] is True


async def test_list_entities_pages_and_filters(
    pool: asyncpg.Pool, store: PostgresEventStore, service: Running
) -> None:
    space, owner = await new_space(store)
    device = new_id()
    ops = [
        op(space, entity_id=f"t-{i:02}", field="title", value=str(i), lamport=i + 1)
        for i in range(7)
    ]
    ops.append(
        op(space, entity_type="list", entity_id="l-1", field="name", value="home", lamport=20)
    )
    ops.append(op(space, entity_id="t-03", kind="delete", field=None, lamport=21))
    await push(store, owner, device, ops)
    await caught_up(pool, [space])
    seen: list[str] = []
    after = None
    for _ in range(10):
        page, seq, after = await list_entities(pool, space, "task", False, 2, after)
        assert seq == 10
        seen.extend(s.entity_id for s in page)
        if after is None:
            break
    assert seen == [f"t-{i:02}" for i in range(7) if i != 3]
    everything, _, more = await list_entities(pool, space, None, True, 100, None)
    assert more is None
    assert [(s.entity_type, s.entity_id) for s in everything][:2] == [
        ("list", "l-1"),
        ("task", "t-00"),
    ]
    assert len(everything) == 8
    with pytest.raises(InvalidCursor):
        await list_entities(pool, space, None, True, 10, "garbage")
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        snapshot: Any = conn  # both reads see one snapshot while the projector runs on
        totals, lags = await lag_totals(snapshot), await lag_by_space(snapshot, 1_000_000)
    assert totals == (sum(x.projector_lag for x in lags), sum(x.outbox_lag for x in lags))
    assert all(lag.space_id != space for lag in await lag_by_space(pool))


async def _all_pages(
    pool: asyncpg.Pool, space: str, entity_type: str | None, deleted: bool, size: int
) -> tuple[list[tuple[str, str, bytes]], set[int]]:
    """Every page of a listing: (type, id, settled state) in order, and the seqs seen."""
    listed: list[tuple[str, str, bytes]] = []
    seqs: set[int] = set()
    after = None
    for _ in range(100):
        page, seq, after = await list_entities(pool, space, entity_type, deleted, size, after)
        seqs.add(seq)
        listed += [(e.entity_type, e.entity_id, encode_state(e, settled=True)) for e in page]
        if after is None:
            return listed, seqs
    raise AssertionError("the listing did not end")


def _expected(
    replayed: dict[tuple[str, str], EntityState], entity_type: str | None, deleted: bool
) -> list[tuple[str, str, bytes]]:
    """The listing docs/protocol.md describes, from a replay of the log."""
    return [
        (key[0], key[1], encode_state(state, settled=True))
        for key, state in sorted(replayed.items())
        if state.has_client_events
        and not key[0].startswith("_")
        and entity_type in (None, key[0])
        and (deleted or state.deleted_by() is None)
    ]


async def test_a_listing_folds_in_the_events_the_projector_has_not_applied_yet(
    fresh_database: Callable[..., Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a database no service projects, the read model stops at seq 12; then come an
    edit, a new task, a deletion, a restore, a new list and a task edited twice. Every
    listing (types, deleted or not, pages of 1 to 20) answers at the head, equal to a
    replay of the log, without replaying it; the lag, not the space's history, is read.
    Further behind than LIST_TAIL_MAX it answers at the checkpoint (the caller replays)."""
    scratch = await asyncpg.create_pool(await fresh_database(), min_size=1, max_size=3)
    try:
        async with PostgresEventStore(scratch, secret_key=TEST_SECRET) as own:
            space, owner = await new_space(own)
            device = new_id()
            first = [op(space, entity_id=f"t-{i}", value=f"v{i}", lamport=i + 1) for i in range(10)]
            first.append(op(space, entity_id="t-8", kind="delete", field=None, lamport=20))
            await push(own, owner, device, first)  # seqs 2..12
            async with scratch.acquire() as conn:
                applied = await apply_space(conn, space)
            assert applied is not None
            assert applied.seq == 12
            tail = [
                op(space, entity_id="t-1", value="edited", lamport=30, pred=[first[1]["op_id"]]),
                op(space, entity_id="t-10", value="new", lamport=31),
                op(space, entity_id="t-2", kind="delete", field=None, lamport=32),
                op(space, entity_id="t-8", kind="restore", field=None, lamport=33,
                   pred=[first[10]["op_id"]]),
                op(space, entity_type="list", entity_id="l-1", field="name", value="x",
                   lamport=34),
                op(space, entity_id="t-05", value="a", lamport=35),
            ]  # fmt: skip
            tail.append(
                op(space, entity_id="t-05", value="b", lamport=36, pred=[tail[-1]["op_id"]])
            )
            await push(own, owner, device, tail)  # seqs 13..19
            replayed, head = await own.replay_space(space)
            assert head == 19
            for entity_type, deleted in itertools.product((None, "task", "list"), (False, True)):
                want = _expected(replayed, entity_type, deleted)
                for size in (1, 2, 3, 20):
                    got, seqs = await _all_pages(scratch, space, entity_type, deleted, size)
                    assert (got, seqs) == (want, {19}), (entity_type, deleted, size)
            monkeypatch.setattr(projector.readmodel, "LIST_TAIL_MAX", 6)
            _, seqs = await _all_pages(scratch, space, None, True, 20)
            assert seqs == {12}  # 7 events behind: the read model's own page
    finally:
        await scratch.close()


# --------------------------------------------------------------------------- property


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(history=histories())
async def test_read_model_equals_replay(
    pool: asyncpg.Pool, store: PostgresEventStore, service: Running, history: list[Any]
) -> None:
    space, owner = await new_space(store)
    # One push per run of consecutive ops of a device, in log order (preds stay valid).
    for device, run in itertools.groupby(history, key=lambda o: o.device_id):
        await push(store, owner, device, [wire(space, o) for o in run])
    await caught_up(pool, [space])
    await assert_matches_replay(pool, store, [space])
    replayed, _ = await store.replay_space(space)
    for key, state in replayed.items():
        got, _ = await get_entity(pool, space, *key)
        if state.has_client_events and not key[0].startswith("_"):
            assert got is not None
            assert encode_state(got, settled=True) == encode_state(state, settled=True)
            assert got.view() == state.view()


async def test_the_tick_reads_the_gauges_on_its_first_run_and_every_tenth(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lag totals scan every space, so the tick reads them (and sets the gauges) on
    its first run and every ``GAUGE_EVERY`` after it; ``CONCORD_PROJECTOR_TICK_SECONDS``
    sets the tick of a projector started from the settings."""
    calls: list[None] = []
    real = lag_totals

    async def counted(pool: asyncpg.Pool) -> tuple[int, int]:
        calls.append(None)
        return await real(pool)

    # The first tick's end: its last read. Waiting for its lag read alone raced: a tick
    # made while the first was still reading the quarantine count was numbered 0 too.
    first_done = asyncio.Event()
    real_count = quarantine_count

    async def count_then_tell(pool: asyncpg.Pool) -> int:
        count = await real_count(pool)
        first_done.set()
        return count

    monkeypatch.setattr(service_module, "lag_totals", counted)
    monkeypatch.setattr(service_module, "quarantine_count", count_then_tell)
    slow = msgspec.structs.replace(settings, projector_tick_seconds=3600)
    async with running(slow, relay=False) as parts:
        assert parts.projector.options.tick_interval == 3600
        await asyncio.wait_for(first_done.wait(), 10.0)  # the first tick runs at start
        assert len(calls) == 1
        for _ in range(2 * service_module.GAUGE_EVERY):
            await parts.projector.tick()
    # ticks 0..2*GAUGE_EVERY: the first, the GAUGE_EVERY-th and the 2*GAUGE_EVERY-th
    assert len(calls) == 3
