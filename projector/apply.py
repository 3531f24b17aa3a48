"""Apply a space's next events to the read model: one transaction per batch.

The states of the touched entities AND the space's checkpoint are written in the same
transaction, with the checkpoint row locked (``FOR UPDATE``) from the start. Hence:

* a crash before COMMIT leaves nothing, a crash after it leaves everything, and a retry
  starts from the committed checkpoint: no event is ever applied twice or skipped;
* two projector instances (or a rebuild's swap) never apply the same space at once: the
  second waits for the lock, then sees the advanced checkpoint and skips what is done;
* only events ``checkpoint + 1, checkpoint + 2, ...`` are applied, in seq order.

No one event can stop a space. When a batch fails for any reason but a transient one (a
value PostgreSQL refuses, an event that cannot be decoded or folded), the batch is
applied again in savepoints, halving the part that fails until the one event to blame is
left: that event is **quarantined** (a row in the quarantine table, in the same
transaction as the checkpoint that moves past it) and everything else is applied. A
transient failure (connection lost, timeout, serialization) is raised as before, and the
whole batch is retried later: nothing is quarantined for it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from core.breaks import broken
from core.events import ReminderChange
from core.metrics import PROJECTOR_QUARANTINED
from core.ops import op_from_event, op_from_row
from core.wire import Event
from crdt import EntityState, Op, decode_state, encode_state
from eventstore.errors import is_transient
from eventstore.reads import op_rows_between
from eventstore.rows import Conn
from projector.tables import LIVE, Tables, columns_of
from projector.typed import TASK, ReminderKey, derive, reminder_key

BIG = 2**62
Key = tuple[str, str]
#: Longest error text kept in a quarantine row.
ERROR_TEXT_MAX = 2000

log = logging.getLogger("concord.projector")


@dataclass
class Applied:
    """What one committed batch did: the space now reflects ``seq``. ``count`` events were
    applied and ``quarantined`` set aside (both within ``seq``)."""

    space_id: str
    seq: int
    count: int
    entities: list[Key] = field(default_factory=list)
    reminders: list[ReminderChange] = field(default_factory=list)
    quarantined: int = 0

    def merge(self, part: Applied) -> None:
        """Add what a later part of the same transaction did."""
        self.count += part.count
        self.entities = list(dict.fromkeys([*self.entities, *part.entities]))
        self.reminders.extend(part.reminders)


async def lock_checkpoint(conn: Conn, tables: Tables, space_id: uuid.UUID) -> int:
    """Lock the space's checkpoint row (creating it at 0) and return its seq."""
    seq: int | None = await conn.fetchval(tables.lock_checkpoint, space_id)
    if seq is None:
        await conn.execute(tables.create_checkpoint, space_id)
        seq = await conn.fetchval(tables.lock_checkpoint, space_id)
    assert seq is not None
    return seq


def usable(delivered: Sequence[Event], checkpoint: int) -> list[tuple[int, Op]] | None:
    """The delivered events after ``checkpoint`` when they continue it without a gap;
    None when there is a gap (the range is then read from PostgreSQL)."""
    out: list[tuple[int, Op]] = []
    expected = checkpoint + 1
    for event in sorted((e for e in delivered if e.seq > checkpoint), key=lambda e: e.seq):
        if event.seq < expected:  # delivered twice
            continue
        if event.seq > expected:
            return None
        out.append((event.seq, op_from_event(event)))
        expected += 1
    return out


async def read_events(
    conn: Conn, space_id: uuid.UUID, after: int, up_to: int, limit: int
) -> list[tuple[int, Op]]:
    """Events ``after < seq <= up_to`` from the log, cut at the first gap (none should
    exist: a space's seqs commit in order, under its row lock)."""
    rows = await op_rows_between(conn, space_id, after, up_to, limit)
    out: list[tuple[int, Op]] = []
    for row in rows:
        if row[0] != after + len(out) + 1:
            break
        out.append((row[0], op_from_row(row)))
    return out


async def apply_space(
    conn: Conn,
    space_id: str,
    *,
    tables: Tables = LIVE,
    delivered: Sequence[Event] = (),
    up_to: int | None = None,
    max_events: int = 5000,
) -> Applied | None:
    """Apply the space's next events (at most ``max_events``, none beyond ``up_to``) in
    one transaction; None when there was nothing to apply.

    ``delivered`` (events from the stream) are used as they are when they continue the
    checkpoint; otherwise the range up to the last delivered seq is read from the log.
    An event that cannot be applied is quarantined (see the module's docstring).
    """
    sid = uuid.UUID(space_id)
    top = max(e.seq for e in delivered) if delivered else up_to
    if broken("checkpoint") and tables == LIVE:
        return await _checkpoint_first(conn, sid, space_id, up_to=top, max_events=max_events)
    try:
        async with conn.transaction():
            checkpoint = await lock_checkpoint(conn, tables, sid)
            batch: list[tuple[int, Op]] | None = None
            if delivered:
                batch = usable(delivered, checkpoint)
                if batch is None:
                    batch = await read_events(conn, sid, checkpoint, top or BIG, max_events)
            elif up_to is None or up_to > checkpoint:
                batch = await read_events(conn, sid, checkpoint, up_to or BIG, max_events)
            if not batch:
                return None
            applied = await _apply_batch(conn, tables, sid, space_id, batch)
            await conn.execute(tables.set_checkpoint, sid, applied.seq)
        return applied
    except Exception as exc:
        if is_transient(exc):
            raise
        log.warning("a batch of space %s failed (%r): isolating the event to blame", space_id, exc)
    isolated = await _apply_isolating(conn, tables, sid, space_id, top, max_events)
    if isolated is not None and isolated.quarantined and tables == LIVE:
        PROJECTOR_QUARANTINED.inc(isolated.quarantined)  # after COMMIT: counted once
    return isolated


async def _checkpoint_first(
    conn: Conn, sid: uuid.UUID, space_id: str, *, up_to: int | None, max_events: int
) -> Applied | None:
    """The chaos lab's broken build (``CONCORD_TEST_BREAK=checkpoint``): the checkpoint
    commits on its own, then the states in a second transaction, so a crash between the
    two loses events from the read model. The pause widens that window."""
    async with conn.transaction():
        checkpoint = await lock_checkpoint(conn, LIVE, sid)
        batch = await read_events(conn, sid, checkpoint, up_to or BIG, max_events)
        if not batch:
            return None
        await conn.execute(LIVE.set_checkpoint, sid, batch[-1][0])
    await asyncio.sleep(0.2)
    async with conn.transaction():
        return await _apply_batch(conn, LIVE, sid, space_id, batch)


@dataclass(frozen=True)
class _Item:
    """One event of a batch being isolated: its row, and its op or why it has none."""

    seq: int
    row: asyncpg.Record
    op: Op | Exception


class Unreadable(Exception):
    """An event row the projector cannot turn into an op (its value does not decode)."""


def _items(rows: Sequence[asyncpg.Record], after: int) -> list[_Item]:
    """The rows as items, cut at the first gap like ``read_events``."""
    items: list[_Item] = []
    for row in rows:
        if row[0] != after + len(items) + 1:
            break
        op: Op | Exception
        try:
            op = op_from_row(row)
        except Exception as exc:
            op = exc
        items.append(_Item(row[0], row, op))
    return items


async def _apply_isolating(
    conn: Conn, tables: Tables, sid: uuid.UUID, space_id: str, up_to: int | None, max_events: int
) -> Applied | None:
    """The batch again, from the log, in one transaction: parts in savepoints, the events
    no part can hold quarantined; the checkpoint moves past them all."""
    async with conn.transaction():
        checkpoint = await lock_checkpoint(conn, tables, sid)
        rows = await op_rows_between(conn, sid, checkpoint, up_to or BIG, max_events)
        items = _items(rows, checkpoint)
        if not items:
            return None
        total = Applied(space_id=space_id, seq=items[-1].seq, count=0)
        await _bisect(conn, tables, sid, space_id, items, total)
        # The checkpoint shares the transaction with the states AND the quarantine rows.
        await conn.execute(tables.set_checkpoint, sid, total.seq)
    return total


async def _bisect(
    conn: Conn,
    tables: Tables,
    sid: uuid.UUID,
    space_id: str,
    items: list[_Item],
    total: Applied,
) -> None:
    """Apply ``items`` in a savepoint; when that fails, each half the same way, down to
    single events, which are quarantined. One bad event in n costs about 2·log2(n) tries."""
    try:
        async with conn.transaction():  # nested: a savepoint, undone alone on failure
            part = await _apply_batch(conn, tables, sid, space_id, _ops(items))
    except Exception as exc:
        if is_transient(exc):
            raise
        if len(items) == 1:
            await _quarantine(conn, tables, sid, items[0], exc)
            total.quarantined += 1
            return
        half = len(items) // 2
        await _bisect(conn, tables, sid, space_id, items[:half], total)
        await _bisect(conn, tables, sid, space_id, items[half:], total)
        return
    total.merge(part)


def _ops(items: list[_Item]) -> list[tuple[int, Op]]:
    out: list[tuple[int, Op]] = []
    for item in items:
        if isinstance(item.op, Exception):
            raise Unreadable(f"event {item.seq} cannot be read: {item.op!r}") from item.op
        out.append((item.seq, item.op))
    return out


def _plain(text: str) -> str:
    """``text`` as PostgreSQL can store it: NULs and unpaired surrogates escaped."""
    escaped = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return escaped[:ERROR_TEXT_MAX]


async def _quarantine(
    conn: Conn, tables: Tables, sid: uuid.UUID, item: _Item, exc: Exception
) -> None:
    """Set the event aside: a row in the quarantine table, and the detail in the log."""
    row = item.row
    sqlstate = getattr(exc, "sqlstate", None)
    error_type = type(exc).__name__ + (f" ({sqlstate})" if sqlstate else "")
    log.error(
        "event quarantined: space %s seq %d op %s (%s); the projector goes on without it",
        sid,
        item.seq,
        row[1],
        error_type,
        exc_info=exc,
    )
    await conn.execute(
        tables.add_quarantined, sid, item.seq, row[1], row[2], row[3], error_type, _plain(str(exc))
    )


async def _apply_batch(
    conn: Conn, tables: Tables, sid: uuid.UUID, space_id: str, batch: list[tuple[int, Op]]
) -> Applied:
    """Fold the batch into the stored states of its entities and write them back."""
    keys = list(dict.fromkeys((op.entity_type, op.entity_id) for _, op in batch))
    rows = await conn.fetch(tables.load_states, sid, [k[0] for k in keys], [k[1] for k in keys])
    states: dict[Key, EntityState] = {}
    before: dict[Key, ReminderKey] = {}
    for row in rows:
        key = (row[0], row[1])
        states[key] = decode_state(bytes(row[2]))
        before[key] = reminder_key(row[5], row[3], row[4])
    applied, out = fold_batch(space_id, batch, states, before)
    await conn.execute(tables.upsert_states, sid, *columns_of(out))
    return applied


def apply_in_order(
    states: dict[Key, EntityState], batch: Sequence[tuple[int, Op]]
) -> dict[Key, int]:
    """Apply a space's events in the order given (its seq order) to ``states``, in place
    (a new state for an entity without one); the last seq applied to each entity."""
    last: dict[Key, int] = {}
    for seq, op in batch:
        key = (op.entity_type, op.entity_id)
        state = states.get(key)
        if state is None:
            state = states[key] = EntityState.new(*key)
        state.apply(op)
        last[key] = seq
    return last


def fold_batch(
    space_id: str,
    batch: list[tuple[int, Op]],
    states: dict[Key, EntityState],
    before: dict[Key, ReminderKey],
) -> tuple[Applied, list[tuple[object, ...]]]:
    """Fold a space's batch into ``states`` (the stored states of its entities, updated
    in place; ``before`` their reminder keys); what it did, and the rows to upsert
    (``STATE_COLUMNS`` without space_id)."""
    last = apply_in_order(states, batch)
    keys = list(last)  # in the order of their first event
    seq = batch[-1][0]
    applied = Applied(space_id=space_id, seq=seq, count=len(batch), entities=keys)
    out: list[tuple[object, ...]] = []
    for key in keys:
        state = states[key]
        typed, remind_at = derive(state)
        data = encode_state(state, settled=True)  # its size does not grow with history
        out.append((key[0], key[1], data, last[key], *typed))
        now = reminder_key(typed.remind_at_op_id, typed.done, typed.deleted)
        if key[0] == TASK and now != before.get(key, reminder_key(None, None, False)):
            applied.reminders.append(
                ReminderChange(
                    space_id=space_id,
                    entity_type=key[0],
                    entity_id=key[1],
                    seq=seq,
                    reminder_id=now[0],
                    remind_at=remind_at,
                    done=now[1],
                    deleted=now[2],
                )
            )
    return applied, out
