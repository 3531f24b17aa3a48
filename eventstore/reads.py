"""Reads of the log: ranges, streams, replay and chain verification (connection-level).

The one place that reads ``events`` (a test keeps SQL naming it out of every other
package): the projector, the relay, the gateway's panel and figures call these, on their
own connections and inside their own transactions. Rows come back as ``core.wire.Event``
or, for folds, in the shape ``core.ops.op_from_row`` reads (``rows.OP_COLUMNS``).

Replay folds events with ``crdt`` from the log alone, so an ``as_of_seq`` replay is the
state after exactly the first N events of the space (docs/architecture.md invariant 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import timedelta

import asyncpg

from core.ops import op_from_row
from core.wire import Event, format_time
from crdt import EntityState, fold
from eventstore.chain import GENESIS, chain_hash, payload_digest
from eventstore.rows import (
    OP_COLUMNS,
    READ_COLUMNS,
    STORED_COLUMNS,
    Conn,
    event_from_row,
)

BIG = 2**62
"""An ``up_to`` beyond any seq."""

#: The first and last space_id of a range of spaces.
SpaceRange = tuple[uuid.UUID, uuid.UUID]

_RANGE = "WHERE space_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq"
_EVENTS_BETWEEN = f"SELECT {READ_COLUMNS} FROM events {_RANGE}"
_OP_ROWS_BETWEEN = f"SELECT {OP_COLUMNS} FROM events {_RANGE} LIMIT $4"

#: Every event of every space in key order, as op rows with the space_id (text) last.
#: (ORDER BY names the table's uuid column: the bare name would be the text output.)
ALL_OP_ROWS = f"SELECT {OP_COLUMNS}, space_id::text FROM events AS e ORDER BY e.space_id, e.seq"
_SOME_OP_ROWS = ALL_OP_ROWS.replace(
    " ORDER BY", " WHERE e.space_id BETWEEN $1::uuid AND $2::uuid ORDER BY"
)

# Several spaces, each its own range, in one query: a LATERAL subquery per range (one
# index range scan each), the spaces in the order given, each in seq order.
_RANGES = """
SELECT {select} FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) WITH ORDINALITY
    AS r(sid, lo, hi, n)
CROSS JOIN LATERAL (
    SELECT {columns} FROM events WHERE space_id = r.sid AND seq > r.lo AND seq <= r.hi
    ORDER BY seq LIMIT $4
) AS e
ORDER BY r.n, e.seq
"""

_WIRE_RANGES = _RANGES.format(select="r.sid, e.*", columns=READ_COLUMNS)
_OP_RANGES = _RANGES.format(select="e.*, r.sid::text", columns=OP_COLUMNS)

_RECENT = """
SELECT space_id, seq, op_id, kind, entity_type, entity_id, field, device_id, recorded_at
FROM events WHERE recorded_at > now() - $1::interval
ORDER BY recorded_at DESC, seq DESC LIMIT $2
"""

_COUNTS = """
SELECT device_id::text AS device, kind, user_id IS NULL AS server, count(*) AS n
FROM events WHERE space_id = ANY($1::uuid[]) GROUP BY 1, 2, 3
"""


async def events_between(
    conn: Conn, space_id: str | uuid.UUID, after: int, up_to: int
) -> list[Event]:
    """The space's events with ``after < seq <= up_to``, in seq order (one query)."""
    return [event_from_row(r) for r in await conn.fetch(_EVENTS_BETWEEN, space_id, after, up_to)]


async def op_rows_between(
    conn: Conn, space_id: str | uuid.UUID, after: int, up_to: int, limit: int
) -> list[asyncpg.Record]:
    """The space's events with ``after < seq <= up_to`` as op rows (``OP_COLUMNS``: seq
    first, then what ``core.ops.op_from_row`` reads), in seq order, at most ``limit``."""
    return await conn.fetch(_OP_ROWS_BETWEEN, space_id, after, up_to, limit)


async def wire_rows_of_ranges(
    conn: Conn,
    space_ids: Sequence[uuid.UUID],
    afters: Sequence[int],
    up_tos: Sequence[int],
    limit: int = BIG,
) -> list[asyncpg.Record]:
    """The events ``afters[i] < seq <= up_tos[i]`` of each ``space_ids[i]`` (at most
    ``limit`` each) in one query, space after space in the order given, each in seq
    order: rows of the space's uuid, then ``rows.READ_COLUMNS``."""
    return await conn.fetch(_WIRE_RANGES, list(space_ids), list(afters), list(up_tos), limit)


async def op_rows_of_ranges(
    conn: Conn,
    space_ids: Sequence[uuid.UUID],
    afters: Sequence[int],
    up_tos: Sequence[int],
    limit: int = BIG,
) -> list[asyncpg.Record]:
    """As ``wire_rows_of_ranges``, as op rows with the space_id (text) after them: the
    shape of ``everything``."""
    return await conn.fetch(_OP_RANGES, list(space_ids), list(afters), list(up_tos), limit)


async def chunks(
    conn: Conn, query: str, *args: object, size: int = 5000
) -> AsyncGenerator[list[asyncpg.Record], None]:
    """Rows of ``query`` in chunks through a cursor (``conn`` must be in a transaction),
    one chunk read ahead: the server reads the next while the caller works on this one."""
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


def everything(
    conn: Conn, *, spaces: SpaceRange | None = None, size: int = 5000
) -> AsyncGenerator[list[asyncpg.Record], None]:
    """Every event of every space (of the range ``spaces``: first and last space_id), in
    (space_id, seq) order, as op rows with the space_id as text after them, in chunks
    (see ``chunks``; ``conn`` must be in a transaction, whose snapshot it reads). A
    caller that stops early closes it (``contextlib.aclosing``), which cancels the chunk
    read ahead."""
    if spaces is None:
        return chunks(conn, ALL_OP_ROWS, size=size)
    return chunks(conn, _SOME_OP_ROWS, *spaces, size=size)


async def recent(
    conn: Conn, *, within: timedelta, limit: int, query_timeout: float | None = None
) -> list[asyncpg.Record]:
    """The latest events of all spaces recorded within ``within``, newest first: ids,
    kind, field, device and time (``space_id, seq, op_id, kind, entity_type, entity_id,
    field, device_id, recorded_at``), never values."""
    return await conn.fetch(_RECENT, within, limit, timeout=query_timeout)


async def counts(conn: Conn, space_ids: Sequence[str]) -> list[asyncpg.Record]:
    """How many events of ``space_ids`` each device wrote, per kind: rows ``(device,
    kind, server, n)``, ``server`` true for server events (no user)."""
    return await conn.fetch(_COUNTS, list(space_ids))


async def stream(
    conn: Conn,
    space_id: str,
    *,
    after: int = 0,
    up_to: int = BIG,
    columns: str = READ_COLUMNS,
    prefetch: int = 1000,
) -> AsyncIterator[asyncpg.Record]:
    """Rows of ``space_id`` with ``after < seq <= up_to`` in seq order, through a
    server-side cursor (``conn`` must be in a transaction): memory stays flat."""
    query = (
        f"SELECT {columns} FROM events WHERE space_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq"
    )
    async for row in conn.cursor(query, space_id, after, up_to, prefetch=prefetch):
        yield row


async def replay_entity(
    conn: Conn, space_id: str, entity_type: str, entity_id: str, up_to: int
) -> EntityState | None:
    """The entity folded from its events with ``seq <= up_to``; None if it has none."""
    rows = await conn.fetch(
        f"SELECT {OP_COLUMNS} FROM events WHERE space_id = $1 AND entity_type = $2 "
        "AND entity_id = $3 AND seq <= $4 ORDER BY seq",
        space_id,
        entity_type,
        entity_id,
        up_to,
    )
    if not rows:
        return None
    state = EntityState.new(entity_type, entity_id)
    for row in rows:
        state.apply(op_from_row(row))
    return state


async def replay_space(conn: Conn, space_id: str, up_to: int) -> dict[tuple[str, str], EntityState]:
    """Every entity of the space folded from the events with ``seq <= up_to``."""
    ops = [
        op_from_row(row)
        async for row in stream(conn, space_id, up_to=up_to, columns=OP_COLUMNS, prefetch=2000)
    ]
    return fold(ops)


_VERIFY_COLUMNS = STORED_COLUMNS + ", payload_hash, chain_hash"


def _recompute(row: asyncpg.Record, previous: bytes) -> tuple[bytes, bytes]:
    """(payload hash, chain hash) of a stored row, from its columns alone."""
    value = row["value"]
    digest = payload_digest(
        str(row["op_id"]),
        str(row["space_id"]),
        row["entity_type"],
        row["entity_id"],
        row["kind"],
        row["field"],
        b"null" if value is None else value.encode(),
        [str(p) for p in row["pred"]],
        row["lamport"],
    )
    user_id = row["user_id"]
    chained = chain_hash(
        previous,
        digest,
        row["seq"],
        str(row["device_id"]),
        None if user_id is None else str(user_id),
        row["client_time"],
        format_time(row["recorded_at"]),
        row["schema_version"],
    )
    return digest, chained


async def verify(conn: Conn, space_id: str) -> int | None:
    """The first seq whose row, numbering or chain is broken, or None when intact.

    Checks, in seq order: seqs are 1, 2, 3...; each stored payload hash equals the one
    recomputed from the columns; each chain hash equals the one recomputed from the
    previous; finally the space's head and chain tip name the last event.
    """
    space = await conn.fetchrow("SELECT head, chain_tip FROM spaces WHERE space_id = $1", space_id)
    if space is None:
        return None
    previous, expected = GENESIS, 1
    async for row in stream(conn, space_id, columns=_VERIFY_COLUMNS, prefetch=2000):
        if row["seq"] != expected:
            return expected
        digest, chained = _recompute(row, previous)
        if digest != bytes(row["payload_hash"]) or chained != bytes(row["chain_hash"]):
            return expected
        previous, expected = chained, expected + 1
    last = expected - 1
    head: int = space["head"]
    if head != last:  # events missing after the last row, or rows beyond head
        return min(head, last) + 1
    if bytes(space["chain_tip"]) != previous:
        return max(last, 1)
    return None


_STORED = f"""
SELECT {READ_COLUMNS} FROM events
WHERE (space_id, op_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))
"""


async def stored_server_events(
    conn: Conn, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Event]:
    """The stored events among ``(space_id, op_id)`` pairs (through the log's unique
    ``(space_id, op_id)`` index), keyed by the pair."""
    if not pairs:
        return {}
    rows = await conn.fetch(_STORED, [p[0] for p in pairs], [p[1] for p in pairs])
    out: dict[tuple[str, str], Event] = {}
    for row in rows:
        event = event_from_row(row)
        out[(event.space_id, event.op_id)] = event
    return out
