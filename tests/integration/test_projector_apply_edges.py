"""``projector.apply`` at its edges, where the other projector tests leave it open: tests
written against the survivors of the ``projector`` mutation target (docs/development.md,
Mutation testing). They hold the module to what its docstring promises: no event applied
twice, skipped or set aside for a failure that is not its own.

Each test works on a database of its own, where no projector runs: the test alone
decides what is projected (``apply_space``), so every seq is known. Failures PostgreSQL
raises on cue come from a trigger on that database's ``entity_states``.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

import asyncpg
import pytest

from eventstore.rows import Conn
from eventstore.testing import forge, new_id, op
from projector.apply import apply_space
from projector.rebuild import prepare_shadow
from projector.tables import LIVE, SHADOW
from tests.conftest import FreshStore, sample
from tests.integration.test_projector_support import (
    append_unchecked,
    checkpoint,
    head,
    new_space,
    push,
)


async def _quarantine(pool: asyncpg.Pool, table: str = "projector_quarantine") -> list[Any]:
    return [
        (r[0], r[1], r[2])
        for r in await pool.fetch(f"SELECT seq, error_type, error FROM {table} ORDER BY seq")
    ]


async def _unreadable(fresh_store: FreshStore, space: str, owner: str, entity_id: str) -> int:
    """An event the projector cannot decode (a number out of range); its seq."""
    return await append_unchecked(
        fresh_store.store, owner, space, entity_id=entity_id, value="n", value_json=b"1e999"
    )


async def _fail_task_writes(pool: asyncpg.Pool, *codes: str) -> None:
    """The n-th write of a task's state fails with SQLSTATE ``codes[n-1]`` (a sequence
    counts the writes, so a failure rolled back still counts); later ones go through."""
    await pool.execute("CREATE SEQUENCE task_writes")
    await pool.execute(
        """
        CREATE FUNCTION fail_task_write() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE n bigint := nextval('task_writes');
        BEGIN
            IF n <= coalesce(array_length(TG_ARGV, 1), 0) THEN
                RAISE EXCEPTION 'task write % fails on cue', n USING ERRCODE = TG_ARGV[n - 1];
            END IF;
            RETURN NEW;
        END $$
        """
    )
    args = ", ".join(f"'{c}'" for c in codes)
    await pool.execute(
        "CREATE TRIGGER fail_task_write BEFORE INSERT ON entity_states FOR EACH ROW "
        f"WHEN (NEW.entity_type = 'task') EXECUTE FUNCTION fail_task_write({args})"
    )


# ------------------------------------------------------------------ transient failures


async def test_a_transient_failure_is_raised_and_the_batch_retried_whole(
    fresh_store: FreshStore,
) -> None:
    """A serialization failure of a batch is the caller's to retry: raised, nothing
    committed, nothing isolated; the retry applies the batch. (Kills ``apply_space``
    82: the failure taken for a bad event and the batch isolated at once.)"""
    pool = fresh_store.pool
    space, owner = await new_space(fresh_store.store)
    await push(fresh_store.store, owner, new_id(), [op(space, entity_id="t-1", lamport=1)])
    await _fail_task_writes(pool, "40001")
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.SerializationError):
            await apply_space(conn, space)
        assert await checkpoint(pool, space) == 0
        applied = await apply_space(conn, space)
    assert applied is not None
    assert (applied.seq, applied.count, applied.quarantined) == (2, 2, 0)
    assert await _quarantine(pool) == []


async def test_a_transient_failure_while_isolating_quarantines_nothing(
    fresh_store: FreshStore,
) -> None:
    """A batch fails for a bad event's sake, then, while it is isolated, for a transient
    reason: raised, and no event set aside for it; the event is applied once the failure
    is gone. (Kills ``_bisect`` 13: a transient failure blamed on the one event of a
    part, which is quarantined.)"""
    pool = fresh_store.pool
    space, owner = await new_space(fresh_store.store)
    await push(fresh_store.store, owner, new_id(), [op(space, entity_id="t-1", lamport=1)])
    # the batch (non-transient), then the isolating try of it and of its one task
    await _fail_task_writes(pool, "P0001", "40001", "40001")
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.SerializationError):
            await apply_space(conn, space)
        assert (await checkpoint(pool, space), await _quarantine(pool)) == (0, [])
        with pytest.raises(asyncpg.SerializationError):
            await apply_space(conn, space)  # the third write fails (transient) too
        applied = await apply_space(conn, space)
    assert applied is not None
    assert (applied.seq, applied.count, applied.quarantined) == (2, 2, 0)
    assert await _quarantine(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM entity_states WHERE entity_id = 't-1'") == 1


# ----------------------------------------------------------------------- quarantine


async def test_a_rebuild_quarantines_without_counting_for_the_live_projector(
    fresh_store: FreshStore,
) -> None:
    """Events quarantined into the shadow tables (a rebuild's) are not counted by
    ``concord_projector_quarantined_total``: the live projector counted them when it set
    them aside. (Kills ``apply_space`` 104 and 105, the condition's ``and`` made ``or``.)"""
    pool = fresh_store.pool
    space, owner = await new_space(fresh_store.store)
    bad = await _unreadable(fresh_store, space, owner, "t-1")
    await push(fresh_store.store, owner, new_id(), [op(space, entity_id="t-2", lamport=2)])
    before = sample("concord_projector_quarantined_total")
    async with pool.acquire() as conn:
        await prepare_shadow(conn)
        applied = await apply_space(conn, space, tables=SHADOW)
    assert applied is not None
    assert (applied.seq, applied.count, applied.quarantined) == (3, 2, 1)
    assert [r[0] for r in await _quarantine(pool, SHADOW.quarantine)] == [bad]
    assert await _quarantine(pool) == []
    assert sample("concord_projector_quarantined_total") == before


async def test_an_unreadable_event_is_quarantined_with_its_seq_and_the_reason(
    fresh_store: FreshStore,
) -> None:
    """The quarantine row of an event that does not decode says which event and why.
    (Kills ``_ops`` 2: the ``Unreadable`` error without its message.)"""
    pool = fresh_store.pool
    space, owner = await new_space(fresh_store.store)
    bad = await _unreadable(fresh_store, space, owner, "t-1")
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space)
    assert applied is not None
    [(seq, error_type, error)] = await _quarantine(pool)
    assert (seq, error_type) == (bad, "Unreadable")
    assert error.startswith(f"event {bad} cannot be read: ")


async def test_the_isolating_way_reports_reminder_changes_of_its_own_space(
    fresh_store: FreshStore,
) -> None:
    """A batch isolated around a bad event reports the reminder changes of the parts it
    applied with the space they belong to, in either half. (Kills ``_bisect`` 36 and 48:
    the first or the second half applied under no space id.)"""
    pool = fresh_store.pool
    space, owner = await new_space(fresh_store.store)
    when = "2030-01-01T09:00:00Z"
    first = op(space, entity_id="t-1", field="remind_at", value=when, lamport=1)
    await push(fresh_store.store, owner, new_id(), [first])  # seq 2: the first half, 1..2
    await _unreadable(fresh_store, space, owner, "t-2")  # seq 3: the second half, 3..4
    second = op(space, entity_id="t-3", field="remind_at", value=when, lamport=3)
    await push(fresh_store.store, owner, new_id(), [second])  # seq 4
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space)
    assert applied is not None
    assert (applied.seq, applied.count, applied.quarantined) == (4, 3, 1)
    assert [(r.space_id, r.entity_id, r.reminder_id) for r in applied.reminders] == [
        (space, "t-1", first["op_id"]),
        (space, "t-3", second["op_id"]),
    ]


# ---------------------------------------------------------------------------- bounds


async def test_up_to_zero_applies_nothing(fresh_store: FreshStore) -> None:
    """``up_to=0`` (nothing is due yet) applies nothing, not everything: 0 is a bound,
    not "no bound". (Kills ``apply_space`` 50 and 51, the ``up_to`` comparisons.)"""
    pool = fresh_store.pool
    space, owner = await new_space(fresh_store.store)
    await push(fresh_store.store, owner, new_id(), [op(space, entity_id="t-1", lamport=1)])
    async with pool.acquire() as conn:
        assert await apply_space(conn, space, up_to=0) is None
        assert await checkpoint(pool, space) == 0
        applied = await apply_space(conn, space, up_to=1)
        assert applied is not None
        assert (applied.seq, applied.count) == (1, 1)
        assert await apply_space(conn, space, up_to=1) is None
        assert await apply_space(conn, space, up_to=0) is None
    assert await checkpoint(pool, space) == 1


async def test_a_gap_in_what_was_delivered_is_read_at_most_max_events_at_a_time(
    fresh_store: FreshStore,
) -> None:
    """Delivered events that do not continue the checkpoint: the range is read from the
    log, ``max_events`` at most. (Kills ``apply_space`` 42: that read unbounded.)"""
    pool, store = fresh_store.pool, fresh_store.store
    space, owner = await new_space(store)
    ops = [op(space, entity_id=f"t-{i}", lamport=i + 1) for i in range(5)]
    await push(store, owner, new_id(), ops)  # seqs 2..6
    last = (await store.read(space, 0, 100))[-1:]
    async with pool.acquire() as conn:
        applied = await apply_space(conn, space, delivered=last, max_events=2)
        assert applied is not None
        assert (applied.seq, applied.count) == (2, 2)
        applied = await apply_space(conn, space, delivered=last, max_events=2)
        assert applied is not None
        assert (applied.seq, applied.count) == (4, 2)
    assert await checkpoint(pool, space) == 4


async def test_a_batch_holds_at_most_5000_events_by_default(fresh_store: FreshStore) -> None:
    """One transaction applies at most 5000 events unless told otherwise: a space far
    behind catches up in bounded batches. (Kills ``apply_space`` 1, the default bound.)
    The log's 5001 increments are copies of one pushed event, made in SQL."""
    pool = fresh_store.pool
    space, owner = await new_space(fresh_store.store)
    inc = op(space, entity_id="t-1", kind="inc", field="pomodoros", value=1, lamport=1)
    await push(fresh_store.store, owner, new_id(), [inc])  # seq 2
    await forge(
        pool,
        "INSERT INTO events SELECT space_id, seq + g, gen_random_uuid(), entity_type,"
        " entity_id, kind, field, value, pred, lamport + g, device_id, user_id, client_time,"
        " recorded_at, schema_version, payload_hash, chain_hash"
        " FROM events, generate_series(1, 5000) AS g WHERE space_id = $1 AND seq = 2",
        space,
    )
    async with pool.acquire() as conn:
        first = await apply_space(conn, space)
        assert first is not None
        assert (first.seq, first.count) == (5000, 5000)
        rest = await apply_space(conn, space)
    assert rest is not None
    assert (rest.seq, rest.count) == (5002, 2)


async def test_a_hole_in_the_log_stops_the_space_after_what_precedes_it(
    fresh_store: FreshStore,
) -> None:
    """A log missing seq 4 (removed behind the store's back, what ``verify`` finds): the
    events before the hole are applied, a bad one among them quarantined, and the
    checkpoint stops at 3. (Kills ``read_events`` 18 and ``_items`` 7: the events before
    the hole dropped with it, and the space stuck at 0.)"""
    pool, store = fresh_store.pool, fresh_store.store
    plain, owner = await new_space(store)
    poisoned, other = await new_space(store)
    for space, user in ((plain, owner), (poisoned, other)):
        await push(store, user, new_id(), [op(space, entity_id="t-1", lamport=1)])  # 2
        if space == poisoned:
            assert await _unreadable(fresh_store, space, user, "t-2") == 3
        else:
            await push(store, user, new_id(), [op(space, entity_id="t-2", lamport=2)])
        ops = [op(space, entity_id=f"t-{i}", lamport=i) for i in range(3, 6)]  # 4..6
        await push(store, user, new_id(), ops)
        await forge(pool, "DELETE FROM events WHERE space_id = $1 AND seq = 4", space)
        assert await head(pool, space) == 6
    async with pool.acquire() as conn:
        applied = await apply_space(conn, plain)
        assert applied is not None
        assert (applied.seq, applied.count, applied.quarantined) == (3, 3, 0)
        applied = await apply_space(conn, poisoned)
        assert applied is not None
        assert (applied.seq, applied.count, applied.quarantined) == (3, 2, 1)
    assert [r[0] for r in await _quarantine(pool)] == [3]
    assert (await checkpoint(pool, plain), await checkpoint(pool, poisoned)) == (3, 3)


# ------------------------------------------------------------- stored state reloaded


async def test_a_done_task_edited_again_reports_no_reminder_change(fresh_store: FreshStore) -> None:
    """A task marked done, then retitled: its stored ``done`` is loaded with its state,
    so the edit is no reminder change. (Kills ``_apply_batch`` 26 and 32: the stored
    ``done`` read as None, or as ``deleted``.)"""
    pool = fresh_store.pool
    space, owner = await new_space(fresh_store.store)
    device = new_id()
    done = op(space, entity_id="t-1", field="done", value=True, lamport=1)
    await push(fresh_store.store, owner, device, [done])
    async with pool.acquire() as conn:
        first = await apply_space(conn, space)
        assert first is not None
        assert [(r.entity_id, r.done) for r in first.reminders] == [("t-1", True)]
        await push(fresh_store.store, owner, device, [op(space, entity_id="t-1", lamport=2)])
        second = await apply_space(conn, space)
    assert second is not None
    assert (second.count, second.reminders) == (1, [])


# ----------------------------------------------------------------------- checkpoint row


class _Statements:
    """A connection that records the statements it is sent."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.sent: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def execute(self, query: str, *args: object) -> str:
        self.sent.append(query)
        return await self.conn.execute(query, *args)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        self.sent.append(query)
        return await self.conn.fetch(query, *args)

    async def fetchval(self, query: str, *args: object) -> Any:
        self.sent.append(query)
        return await self.conn.fetchval(query, *args)


async def test_the_checkpoint_row_is_created_once_then_only_locked(fresh_store: FreshStore) -> None:
    """A space's first batch creates its checkpoint row; a later batch locks the row it
    finds, with no insert. (Kills ``lock_checkpoint`` 1 and 3: the row not looked for,
    so every batch of every space pays an insert that does nothing.)"""
    pool = fresh_store.pool
    space, owner = await new_space(fresh_store.store)
    device = new_id()
    await push(fresh_store.store, owner, device, [op(space, entity_id="t-1", lamport=1)])
    async with pool.acquire() as raw:
        conn = _Statements(raw)
        assert await apply_space(cast(Conn, conn), space) is not None
        assert conn.sent.count(LIVE.create_checkpoint) == 1
        await push(fresh_store.store, owner, device, [op(space, entity_id="t-1", lamport=2)])
        conn.sent.clear()
        applied = await apply_space(cast(Conn, conn), space)
        assert applied is not None
        assert applied.seq == 3
        assert conn.sent.count(LIVE.lock_checkpoint) == 1
        assert LIVE.create_checkpoint not in conn.sent
    row = await pool.fetchrow(
        "SELECT count(*), max(seq) FROM projector_checkpoints WHERE space_id = $1",
        uuid.UUID(space),
    )
    assert row is not None
    assert tuple(row) == (1, 3)
