"""Fold the whole log, space after space, from one ordered scan (rebuild and verify).

One server-side cursor walks ``events`` in primary-key order (space_id, seq) inside the
caller's snapshot; the next chunk is fetched while the current one is folded, so the
server's reading overlaps the client's merging.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncpg
import msgspec

from crdt import EntityState, Op
from eventstore.rows import Conn
from projector.tables import EVENT_SELECT

Key = tuple[str, str]
_json = msgspec.json.decode

#: Every event of every space in key order; space_id last, so ``op_from_row`` reads it.
#: (ORDER BY names the table's uuid column: the bare name would be the text output.)
ALL_EVENTS = (
    EVENT_SELECT.replace(" FROM events", ", space_id::text FROM events AS e")
    + " ORDER BY e.space_id, e.seq"
)

#: Every event at or below its space's checkpoint but the quarantined ones (what the read
#: model claims to hold).
CHECKPOINTED_EVENTS = (
    EVENT_SELECT.replace("SELECT seq,", "SELECT e.seq,").replace(
        " FROM events", ", e.space_id::text FROM events AS e"
    )
    + " JOIN projector_checkpoints AS c ON c.space_id = e.space_id"
    + " WHERE e.seq <= c.seq AND NOT EXISTS (SELECT 1 FROM projector_quarantine AS x"
    + " WHERE x.space_id = e.space_id AND x.seq = e.seq)"
    + " ORDER BY e.space_id, e.seq"
)


@dataclass
class SpaceFold:
    """The entities of one space folded from its events ``1..seq``. ``failed`` names the
    first event that could not be folded (then the states are not to be trusted)."""

    space_id: str
    states: dict[Key, EntityState] = field(default_factory=dict)
    last: dict[Key, int] = field(default_factory=dict)
    seq: int = 0
    count: int = 0
    failed: int | None = None


async def chunks(
    conn: Conn, query: str, *args: object, size: int = 5000
) -> AsyncIterator[list[asyncpg.Record]]:
    """Rows of ``query`` in chunks through a cursor (``conn`` must be in a transaction),
    one chunk read ahead."""
    cursor = await conn.cursor(query, *args)
    pending = asyncio.ensure_future(cursor.fetch(size))
    try:
        while True:
            rows = await pending
            if not rows:
                return
            pending = asyncio.ensure_future(cursor.fetch(size))
            yield rows
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


async def fold_spaces(
    source: AsyncIterator[list[asyncpg.Record]],
    on_events: Callable[[int], None] | None = None,
) -> AsyncIterator[SpaceFold]:
    """Fold rows ordered by (space_id, seq) and selected like :data:`ALL_EVENTS`; yield
    each space once all its rows are folded. ``on_events(n)`` reports progress. An event
    that cannot be folded marks its space ``failed`` and the scan goes on."""
    current: SpaceFold | None = None
    async for rows in source:
        for row in rows:
            # The hot loop of a rebuild: one unpack, one Op, one apply per event.
            seq, op_id, etype, eid, kind, field, value, pred, lamport, device_id, sid = row
            if current is None or sid != current.space_id:
                if current is not None:
                    yield current
                current = SpaceFold(sid)
            key = (etype, eid)
            state = current.states.get(key)
            if state is None:
                state = current.states[key] = EntityState(etype, eid)
            try:  # free unless it raises
                state.apply(
                    Op(
                        op_id=op_id,
                        entity_type=etype,
                        entity_id=eid,
                        kind=kind,
                        field=field,
                        value=None if value is None else _json(value),
                        pred=tuple(pred),
                        lamport=lamport,
                        device_id=device_id,
                    )
                )
            except Exception:
                if current.failed is None:
                    current.failed = seq
            current.last[key] = current.seq = seq
            current.count += 1
        if on_events is not None:
            on_events(len(rows))
    if current is not None:
        yield current
