"""Apply the delivered events of several spaces in ONE transaction (the stream's batches).

A fetch from the stream carries events of many spaces. Applying each space in its own
transaction costs about six round trips per space; here the whole fetch is one
transaction with one statement per step, whatever the number of spaces:

1. create the missing checkpoint rows, then lock every space's checkpoint row
   (``FOR UPDATE SKIP LOCKED``: a space another writer holds right now, the tick or
   another instance, is left out and reported ``busy``, instead of being waited for
   while the batch holds every other space's lock);
2. keep each space's delivered events that continue its checkpoint; read the spaces
   with a gap from the log, all in one query (at most ``max_events`` each);
3. load the stored states of every touched entity of every space in one query;
4. fold each space's events (``projector.apply.fold_batch``, the code ``apply_space``
   runs), upsert every state in one statement, and move every checkpoint in one
   statement, in the same transaction as the states: COMMIT makes them all visible
   together, a failure leaves none.

The caller applies the ``busy`` spaces on their own (``apply_space`` waits for the
lock). This is the fast path only. When the transaction fails for a reason that is not
transient (an event that cannot be folded, a value PostgreSQL refuses), the caller
applies the spaces one by one with ``apply_space``, which isolates and quarantines the
event to blame (docs/projector.md, "Quarantine").
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.ops import op_from_row
from core.wire import Event
from crdt import EntityState, Op, decode_state
from eventstore.reads import op_rows_of_ranges
from eventstore.rows import Conn
from projector.apply import Applied, Key, fold_batch, usable
from projector.tables import LIVE, Tables
from projector.typed import ReminderKey, reminder_key

#: A space with a gap: its events ``after < seq <= up_to`` are read from the log.
Gap = tuple[str, int, int]


@dataclass
class Batched:
    """What one transaction did: ``applied`` per space that moved; ``busy`` the spaces
    whose checkpoint another writer held (nothing done for them)."""

    applied: list[Applied] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)


async def apply_spaces(
    conn: Conn,
    delivered: Mapping[str, Sequence[Event]],
    *,
    tables: Tables = LIVE,
    max_events: int = 5000,
) -> Batched:
    """Apply the delivered events of every space in ``delivered`` (ids as canonical
    UUID text) in one transaction. A space may end below its last delivered seq
    (``max_events``, or a gap in the log), or be busy: the caller continues it alone."""
    ids = sorted(delivered)
    done = Batched()
    if not ids:
        return done
    out = done.applied
    async with conn.transaction():
        await conn.execute(tables.create_checkpoints, ids)
        checkpoints = {r[0]: r[1] for r in await conn.fetch(tables.lock_checkpoints, ids)}
        done.busy = [sid for sid in ids if sid not in checkpoints]
        batches: dict[str, list[tuple[int, Op]]] = {}
        gaps: list[Gap] = []
        for sid in checkpoints:
            events, checkpoint = delivered[sid], checkpoints[sid]
            batch = usable(events, checkpoint)
            if batch is None:
                gaps.append((sid, checkpoint, max(e.seq for e in events)))
            elif batch:
                batches[sid] = batch
        if gaps:
            batches.update(await read_gaps(conn, gaps, max_events))
        if not batches:
            return done
        states, before = await _load(conn, tables, batches)
        rows: list[tuple[object, ...]] = []
        for sid, batch in batches.items():
            applied, upserts = fold_batch(sid, batch, states.get(sid, {}), before.get(sid, {}))
            out.append(applied)
            rows += [(sid, *row) for row in upserts]
        await conn.execute(tables.upsert_states_of_spaces, *_columns(rows))
        # The checkpoints share the transaction with the states (module docstring).
        await conn.execute(tables.set_checkpoints, [a.space_id for a in out], [a.seq for a in out])
    return done


async def _load(
    conn: Conn, tables: Tables, batches: Mapping[str, list[tuple[int, Op]]]
) -> tuple[dict[str, dict[Key, EntityState]], dict[str, dict[Key, ReminderKey]]]:
    """The stored states (and reminder keys) of every entity the batches touch."""
    keys = [
        (sid, *key)
        for sid, batch in batches.items()
        for key in dict.fromkeys((op.entity_type, op.entity_id) for _, op in batch)
    ]
    rows = await conn.fetch(
        tables.load_states_of_spaces,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    states: dict[str, dict[Key, EntityState]] = {}
    before: dict[str, dict[Key, ReminderKey]] = {}
    for sid, etype, eid, state, done, deleted, remind_op in rows:
        states.setdefault(sid, {})[(etype, eid)] = decode_state(bytes(state))
        before.setdefault(sid, {})[(etype, eid)] = reminder_key(remind_op, done, deleted)
    return states, before


def _columns(rows: list[tuple[object, ...]]) -> list[list[object]]:
    return [list(column) for column in zip(*rows, strict=True)]


async def read_gaps(
    conn: Conn, gaps: Sequence[Gap], max_events: int
) -> dict[str, list[tuple[int, Op]]]:
    """Each gap's events from the log (at most ``max_events`` per space), in one query,
    each space's cut at its first missing seq like ``apply.read_events``."""
    rows = await op_rows_of_ranges(
        conn,
        [uuid.UUID(g[0]) for g in gaps],
        [g[1] for g in gaps],
        [g[2] for g in gaps],
        max_events,
    )
    after = {g[0]: g[1] for g in gaps}
    out: dict[str, list[tuple[int, Op]]] = {}
    for row in rows:
        *event, sid = row
        batch = out.setdefault(sid, [])
        if event[0] != after[sid] + len(batch) + 1:
            continue  # past a gap: the rest of this space waits
        batch.append((event[0], op_from_row(event)))
    return {sid: batch for sid, batch in out.items() if batch}
