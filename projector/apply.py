"""Apply a space's next events to the read model: one transaction per batch.

The states of the touched entities AND the space's checkpoint are written in the same
transaction, with the checkpoint row locked (``FOR UPDATE``) from the start. Hence:

* a crash before COMMIT leaves nothing, a crash after it leaves everything, and a retry
  starts from the committed checkpoint: no event is ever applied twice or skipped;
* two projector instances (or a rebuild's swap) never apply the same space at once: the
  second waits for the lock, then sees the advanced checkpoint and skips what is done;
* only events ``checkpoint + 1, checkpoint + 2, ...`` are applied, in seq order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.events import ReminderChange
from core.ops import op_from_event
from core.wire import Event
from crdt import EntityState, Op, decode_state, encode_state
from eventstore.rows import Conn
from projector.tables import LIVE, READ_EVENTS, Tables, columns_of, op_from_row
from projector.typed import TASK, ReminderKey, derive, reminder_key

BIG = 2**62
Key = tuple[str, str]


@dataclass
class Applied:
    """What one committed batch did: the space now reflects ``seq``."""

    space_id: str
    seq: int
    count: int
    entities: list[Key] = field(default_factory=list)
    reminders: list[ReminderChange] = field(default_factory=list)


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
    rows = await conn.fetch(READ_EVENTS, space_id, after, up_to, limit)
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
    """
    sid = uuid.UUID(space_id)
    async with conn.transaction():
        checkpoint = await lock_checkpoint(conn, tables, sid)
        batch: list[tuple[int, Op]] | None = None
        if delivered:
            batch = usable(delivered, checkpoint)
            if batch is None:
                top = max(e.seq for e in delivered)
                batch = await read_events(conn, sid, checkpoint, top, max_events)
        elif up_to is None or up_to > checkpoint:
            batch = await read_events(conn, sid, checkpoint, up_to or BIG, max_events)
        if not batch:
            return None
        applied = await _apply_batch(conn, tables, sid, space_id, batch)
        await conn.execute(tables.set_checkpoint, sid, applied.seq)
    return applied


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
    last: dict[Key, int] = {}
    for seq, op in batch:
        key = (op.entity_type, op.entity_id)
        state = states.get(key)
        if state is None:
            state = states[key] = EntityState.new(*key)
        state.apply(op)
        last[key] = seq
    seq = batch[-1][0]
    applied = Applied(space_id=space_id, seq=seq, count=len(batch), entities=keys)
    out: list[tuple[object, ...]] = []
    for key in keys:
        state = states[key]
        typed, remind_at = derive(state)
        out.append((key[0], key[1], encode_state(state), last[key], *typed))
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
    await conn.execute(tables.upsert_states, sid, *columns_of(out))
    return applied
