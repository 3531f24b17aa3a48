"""Reads of the log: pages, streams, replay and chain verification (connection-level).

Replay folds events with ``crdt`` from the log alone, so an ``as_of_seq`` replay is the
state after exactly the first N events of the space (docs/architecture.md invariant 4).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from core.ops import op_from_event
from crdt import EntityState, fold
from eventstore.chain import GENESIS, chain_hash, payload_digest
from eventstore.rows import READ_COLUMNS, Conn, event_from_row, format_time

BIG = 2**62
"""An ``up_to`` beyond any seq."""


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
        f"SELECT {READ_COLUMNS} FROM events WHERE space_id = $1 AND entity_type = $2 "
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
        state.apply(op_from_event(event_from_row(row)))
    return state


async def replay_space(conn: Conn, space_id: str, up_to: int) -> dict[tuple[str, str], EntityState]:
    """Every entity of the space folded from the events with ``seq <= up_to``."""
    ops = [op_from_event(event_from_row(row)) async for row in stream(conn, space_id, up_to=up_to)]
    return fold(ops)


_VERIFY_COLUMNS = READ_COLUMNS + ", payload_hash, chain_hash"


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
