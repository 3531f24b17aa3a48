"""Many server events in one append: the scheduler's batch of ``reminder_fired`` and
``reminder_skipped`` events.

Reminders due together are fired together (docs/scheduler.md, "Firing in batches"), so
their events are appended in ONE transaction: every touched space locked once (in
``space_id`` order, like every writer), one lookup of the op_ids already stored, one
COPY, one advance of the heads and the outbox, one COMMIT. A reminder whose event cannot
be stored for a reason of its own (its space does not exist) gets that error back and
the others are stored; a transient failure (connection lost) fails the whole append,
and nothing of it is committed.

:class:`PostgresServerEvents` does this on the event store's tables through
``eventstore.writer`` (the same numbering, chaining and outbox rows as every append).
:class:`PortServerEvents` does the same job through any ``core.ports.EventStore``, one
``append_server_event`` per event: the fallback for stores without a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from core.errors import ConcordError, NotFound
from core.ids import canonical_id
from core.ports import EventStore, ServerAppend
from core.wire import SERVER_DEVICE_ID
from crdt import DEFAULT_SCHEMA
from eventstore.errors import translated
from eventstore.reads import stored_server_events
from eventstore.rows import Conn
from eventstore.writer import Batch, NewEvent, legacy_server_op_id, lock_spaces, server_op_id


@dataclass(frozen=True)
class ServerEvent:
    """One server event to append; its op_id is an HMAC of ``key``."""

    space_id: str
    kind: str
    entity_type: str
    entity_id: str
    value: Any
    key: str


#: What appending one event gave: the stored event (new or a duplicate), or the
#: non-retryable error that kept it out (its space does not exist).
Outcome = ServerAppend | ConcordError


class ServerEvents(Protocol):
    """Appends server events as one batch; one outcome per event, in input order."""

    async def append_many(self, events: Sequence[ServerEvent]) -> list[Outcome]: ...


class PortServerEvents:
    """The batch through any ``EventStore``: one append per event, run concurrently."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def append_many(self, events: Sequence[ServerEvent]) -> list[Outcome]:
        results = await asyncio.gather(
            *(
                self.store.append_server_event(
                    space_id=e.space_id,
                    kind=e.kind,
                    entity_type=e.entity_type,
                    entity_id=e.entity_id,
                    value=e.value,
                    key=e.key,
                )
                for e in events
            ),
            return_exceptions=True,
        )
        out: list[Outcome] = []
        for result in results:
            if isinstance(result, ConcordError) and not result.retryable:
                out.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                out.append(result)
        return out


class PostgresServerEvents:
    """The batch in one PostgreSQL transaction (see the module's docstring)."""

    def __init__(
        self, pool: asyncpg.Pool, *, secret_key: str, schema_version: int = DEFAULT_SCHEMA.version
    ) -> None:
        if not secret_key:
            raise ValueError("secret_key is required (server event op_ids are keyed by it)")
        self.pool = pool
        self.secret_key = secret_key
        self.schema_version = schema_version

    async def append_many(self, events: Sequence[ServerEvent]) -> list[Outcome]:
        if not events:
            return []
        with translated():  # driver errors become core.errors (Unavailable when transient)
            async with self.pool.acquire() as conn:
                return await self._append(conn, events)

    async def _append(self, conn: Conn, events: Sequence[ServerEvent]) -> list[Outcome]:
        sids = [canonical_id(e.space_id) for e in events]
        op_ids = [server_op_id(self.secret_key, e.key) for e in events]
        # Also the op_ids of before the key separation: their events may be stored already.
        legacy = [legacy_server_op_id(self.secret_key, e.key) for e in events]
        out: list[Outcome] = []
        async with conn.transaction():
            cursors = await lock_spaces(conn, [s for s in sids if s is not None])
            pairs = [
                (sid, op_id)
                for sid, a, b in zip(sids, op_ids, legacy, strict=True)
                if sid in cursors
                for op_id in (a, b)
            ]
            stored = await stored_server_events(conn, pairs)
            batch = Batch(datetime.now(UTC), self.schema_version)
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
                    field=None,
                    value=event.value,
                    pred=(),
                    lamport=cursor.max_lamport,
                    device_id=SERVER_DEVICE_ID,
                    user_id=None,
                )
                appended = batch.add_new(cursor, new)
                stored[(sid, op_id)] = appended  # the same key twice: one event
                out.append(ServerAppend(event=appended, duplicate=False))
            await batch.flush(conn)
        return out
