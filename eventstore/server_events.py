"""Many server events in one transaction (``EventStore.append_server_events``): the
scheduler's batch of ``reminder_fired`` and ``reminder_skipped`` events.

Reminders due together are fired together (docs/scheduler.md, "Firing in batches"), so
their events are appended in ONE transaction: every touched space locked once (in
``space_id`` order, like every writer, eventstore/writer.py), one lookup of the op_ids
already stored, one COPY, one advance of the heads and the outbox, one COMMIT. An event
that cannot be stored for a reason of its own (its space does not exist) gets that
error back and the others are stored; a transient failure (connection lost) fails the
whole append, and nothing of it is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from core.errors import NotFound
from core.ids import canonical_id
from core.ports import ServerAppend, ServerEvent, ServerOutcome
from eventstore.reads import stored_server_events
from eventstore.rows import Conn
from eventstore.writer import Batch, NewEvent, legacy_server_op_id, lock_spaces, server_op_id


async def append_server_events(
    conn: Conn, *, secret_key: str, schema_version: int, events: Sequence[ServerEvent]
) -> list[ServerOutcome]:
    """Append ``events`` in one transaction on ``conn``; one outcome each, in input order."""
    if not events:
        return []
    sids = [canonical_id(e.space_id) for e in events]
    op_ids = [server_op_id(secret_key, e.key) for e in events]
    # Also the op_ids of before the key separation: their events may be stored already.
    legacy = [legacy_server_op_id(secret_key, e.key) for e in events]
    out: list[ServerOutcome] = []
    async with conn.transaction():
        cursors = await lock_spaces(conn, [s for s in sids if s is not None])
        pairs = [
            (sid, op_id)
            for sid, a, b in zip(sids, op_ids, legacy, strict=True)
            if sid in cursors
            for op_id in (a, b)
        ]
        stored = await stored_server_events(conn, pairs)
        batch = Batch(datetime.now(UTC), schema_version)
        for event, sid, op_id, old_id in zip(events, sids, op_ids, legacy, strict=True):
            cursor = None if sid is None else cursors.get(sid)
            if sid is None or cursor is None:
                out.append(NotFound(f"no such space: {event.space_id}"))
                continue
            known = stored.get((sid, op_id)) or stored.get((sid, old_id))
            if known is not None:
                out.append(ServerAppend(event=known, duplicate=True))
                continue
            new = NewEvent(
                op_id=op_id,
                entity_type=event.entity_type,
                entity_id=event.entity_id,
                kind=event.kind,
                value=event.value,
                lamport=cursor.max_lamport,
            )
            appended = batch.add_new(cursor, new)
            stored[(sid, op_id)] = appended  # the same key twice: one event
            out.append(ServerAppend(event=appended, duplicate=False))
        await batch.flush(conn)
    return out
