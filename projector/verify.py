"""Compare the read model with a fresh replay of the log (docs/architecture.md invariant 4).

In one REPEATABLE READ snapshot, every space is folded from its events up to its
checkpoint, quarantined events left out (exactly what the read model claims to reflect),
and each entity is compared with its stored row: the merged state (settled, see
`crdt.encode_state`), the seq last applied
to it, and the typed columns. Any difference is listed; a space whose events cannot all
be folded is listed once, as ``replay``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec

from crdt import decode_state, encode_state
from eventstore.reads import everything
from eventstore.rows import Conn
from projector.folding import SpaceFold, fold_spaces
from projector.tables import STATE_COLUMNS
from projector.typed import derive

_ROWS = f"SELECT {', '.join(STATE_COLUMNS[1:])} FROM entity_states WHERE space_id = $1"
_CHECKPOINTS = "SELECT space_id::text, seq FROM projector_checkpoints"
_QUARANTINED = "SELECT space_id::text, seq FROM projector_quarantine"
_STRAY = """
SELECT DISTINCT e.space_id::text FROM entity_states AS e
LEFT JOIN projector_checkpoints AS c USING (space_id) WHERE coalesce(c.seq, 0) = 0
"""


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """One entity whose stored state is not what the log says."""

    space_id: str
    entity_type: str
    entity_id: str
    problem: str  # missing | unexpected | state | applied_seq | columns | replay


def _compare(space_id: str, key: tuple[str, str], row: Any, fold: SpaceFold) -> Difference | None:
    def diff(problem: str) -> Difference:
        return Difference(space_id=space_id, entity_type=key[0], entity_id=key[1], problem=problem)

    expected = fold.states.get(key)
    if expected is None:
        return diff("unexpected")
    if row is None:
        return diff("missing")
    # Compared settled (as the projector stores them): a state written before states
    # were settled still holds its history, which the comparison leaves out.
    stored = encode_state(decode_state(bytes(row[2])), settled=True)
    if stored != encode_state(expected, settled=True):
        return diff("state")
    if row[3] != fold.last[key]:
        return diff("applied_seq")
    typed, _ = derive(expected)
    if tuple(row[4:]) != (*typed[:-1], _uuid(typed.remind_at_op_id)):
        return diff("columns")
    return None


def _uuid(value: str | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(value)


async def _check_space(conn: Conn, fold: SpaceFold) -> list[Difference]:
    if fold.failed is not None:
        return [Difference(space_id=fold.space_id, entity_type="", entity_id="", problem="replay")]
    rows = {(r[0], r[1]): r for r in await conn.fetch(_ROWS, uuid.UUID(fold.space_id))}
    found = []
    for key in sorted(rows.keys() | fold.states.keys()):
        difference = _compare(fold.space_id, key, rows.get(key), fold)
        if difference is not None:
            found.append(difference)
    return found


async def _claimed(conn: Conn) -> AsyncIterator[list[asyncpg.Record]]:
    """The events the read model claims to reflect, as ``everything`` gives them: each
    space's up to its checkpoint, the quarantined ones left out (all in ``conn``'s
    snapshot)."""
    checkpoints: dict[str, int] = {r[0]: r[1] for r in await conn.fetch(_CHECKPOINTS)}
    quarantined = {(r[0], r[1]) for r in await conn.fetch(_QUARANTINED)}
    async for rows in everything(conn):
        kept = [
            r
            for r in rows
            if r[0] <= checkpoints.get(r[10], 0) and (r[10], r[0]) not in quarantined
        ]
        if kept:
            yield kept


async def verify(
    pool: asyncpg.Pool, on_events: Callable[[int], None] | None = None
) -> list[Difference]:
    """Every entity whose read-model row differs from the replay of the log."""
    found: list[Difference] = []
    async with (
        pool.acquire() as reader,
        pool.acquire() as conn,
        reader.transaction(isolation="repeatable_read", readonly=True),
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        # Both connections must read one snapshot: export the reader's, adopt it.
        snapshot = await reader.fetchval("SELECT pg_export_snapshot()")
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        async for fold in fold_spaces(_claimed(reader), on_events):
            found.extend(await _check_space(conn, fold))
        for (space_id,) in await conn.fetch(_STRAY):  # rows of never-projected spaces
            found.extend(await _check_space(conn, SpaceFold(space_id)))
    return found
