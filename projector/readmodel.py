"""Reads of the read model, for the gateway's entity routes and diagnostics.

Every answer carries the seq it reflects: the space's checkpoint, read in the same
snapshot as the states (a batch writes both in one transaction, so they always agree).
``as_of_seq`` reads are not served here: the event store's replay does them.

Quarantined events (docs/projector.md) are not in the read model, so it vouches for
nothing they touch: an entity with one reads as unknown here (state None, seq 0) and a
space with one lists at seq 0. Either way the caller, whose rule is to fold from the log
whatever the read model does not cover up to the head, replays it from the log.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

import asyncpg
import msgspec

from core.ids import canonical_id
from crdt import EntityState, Op, decode_state, plain_text
from eventstore.rows import Conn
from projector.apply import BIG, apply_in_order, read_events
from projector.tables import LIVE

_GET = """
SELECT c.seq, e.state, e.has_client_events,
       EXISTS (SELECT 1 FROM projector_quarantine AS x
               WHERE x.space_id = q.space_id AND x.entity_type = $2 AND x.entity_id = $3)
FROM (SELECT $1::uuid AS space_id) AS q
LEFT JOIN projector_checkpoints AS c ON c.space_id = q.space_id
LEFT JOIN entity_states AS e
    ON e.space_id = q.space_id AND e.entity_type = $2 AND e.entity_id = $3
"""

_SEQ = """
SELECT coalesce((SELECT seq FROM projector_checkpoints WHERE space_id = $1), 0),
       EXISTS (SELECT 1 FROM projector_quarantine WHERE space_id = $1)
"""

#: Events after the checkpoint that a listing folds in itself (the read model's lag at
#: that moment); with more, it answers at the checkpoint and the caller replays the log.
LIST_TAIL_MAX = 2000

# Keyset pagination on the primary key: (entity_type, entity_id) > the cursor's, in
# code-point order (the columns' collation is "C", migration 0010), as the gateway sorts
# a listing it folds from the log.
# Entities that only server events touched (reads answer 404) and the hidden `_member`
# type are never listed.
_LIST = """
SELECT entity_type, entity_id, state FROM entity_states
WHERE space_id = $1 AND has_client_events AND entity_type NOT LIKE '\\_%'
  AND ($2 OR NOT deleted) AND (entity_type, entity_id) > ($3, $4) {typed}
ORDER BY entity_type, entity_id
LIMIT $5
"""
_LIST_ALL = _LIST.format(typed="")
_LIST_TYPE = _LIST.format(typed="AND entity_type = $6")

_LAG_COLUMNS = """
SELECT s.space_id::text, s.head, coalesce(c.seq, 0) AS projected,
       coalesce(o.published_seq, 0) AS published
FROM spaces AS s
LEFT JOIN projector_checkpoints AS c USING (space_id)
LEFT JOIN outbox_cursors AS o USING (space_id)
"""
_LAG = (
    _LAG_COLUMNS
    + """WHERE s.head > coalesce(c.seq, 0) OR s.head > coalesce(o.published_seq, 0)
ORDER BY greatest(s.head - coalesce(c.seq, 0), s.head - coalesce(o.published_seq, 0)) DESC,
         s.space_id
LIMIT $1
"""
)
_LAG_OF = _LAG_COLUMNS + "WHERE s.space_id = ANY($1::uuid[]) ORDER BY s.space_id"

_TOTALS = """
SELECT coalesce(sum(s.head - coalesce(c.seq, 0)), 0)::bigint,
       coalesce(sum(s.head - coalesce(o.published_seq, 0)), 0)::bigint
FROM spaces AS s
LEFT JOIN projector_checkpoints AS c USING (space_id)
LEFT JOIN outbox_cursors AS o USING (space_id)
"""


_QUARANTINE = """
SELECT space_id::text, seq, op_id::text, entity_type, entity_id, error_type, quarantined_at
FROM projector_quarantine ORDER BY quarantined_at DESC, space_id, seq LIMIT $1
"""

_QUARANTINE_COUNT = "SELECT count(*) FROM projector_quarantine"


class InvalidCursor(ValueError):
    """A ``after`` cursor of ``list_entities`` that it did not hand out."""


class QuarantinedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event left out of the read model: ids and the error's type, never its text (it
    may quote a value)."""

    space_id: str
    seq: int
    op_id: str
    entity_type: str
    entity_id: str
    error_type: str
    quarantined_at: str


class SpaceLag(msgspec.Struct, frozen=True, kw_only=True):
    """How far behind the head of one space the read model and the relay are."""

    space_id: str
    head: int
    projected_seq: int
    published_seq: int
    projector_lag: int
    outbox_lag: int


def _space(space_id: str) -> uuid.UUID | None:
    canonical = canonical_id(space_id)
    return None if canonical is None else uuid.UUID(canonical)


def encode_cursor(entity_type: str, entity_id: str) -> str:
    """An opaque-looking ``after`` cursor: type names never contain ``:``."""
    return f"{entity_type}:{entity_id}"


def decode_cursor(after: str) -> tuple[str, str]:
    entity_type, sep, entity_id = after.partition(":")
    if not sep or not entity_type or not plain_text(after):
        raise InvalidCursor(f"not a cursor of this listing: {after!r}")
    return entity_type, entity_id


async def get_entity(
    pool: asyncpg.Pool, space_id: str, entity_type: str, entity_id: str
) -> tuple[EntityState | None, int]:
    """The entity's merged state and the seq it reflects; None (answer 404) when the
    entity does not exist, has only server events, or is of the hidden ``_member`` type.
    (None, 0) for an entity with a quarantined event: the read model knows nothing sure
    of it, the log has it all."""
    sid = _space(space_id)
    if sid is None or not plain_text(entity_type) or not plain_text(entity_id):
        return None, 0
    row = await pool.fetchrow(_GET, sid, entity_type, entity_id)
    assert row is not None  # the LEFT JOINs always yield one row
    if row[3]:
        return None, 0
    seq: int = row[0] or 0
    if row[1] is None or not row[2] or entity_type.startswith("_"):
        return None, seq
    return decode_state(bytes(row[1])), seq


async def list_entities(
    pool: asyncpg.Pool,
    space_id: str,
    entity_type: str | None,
    include_deleted: bool,
    limit: int,
    after: str | None,
) -> tuple[list[EntityState], int, str | None]:
    """One page of the space's entities in (type, id) order, the seq they reflect, and
    the cursor of the next page (None on the last). Raises InvalidCursor.

    When the projector is behind, by at most ``LIST_TAIL_MAX`` events, the page folds the
    log's events after the checkpoint into the states they touch (all in one snapshot,
    as ``apply_space`` would), so it reflects the space's last event and costs the lag,
    not the space's history. Further behind (or before the first batch), it reflects the
    checkpoint; a space with a quarantined event reflects seq 0. Either way the caller
    lists it from the log."""
    start = ("", "") if after is None else decode_cursor(after)
    sid = _space(space_id)
    if sid is None or limit <= 0:
        return [], 0, None
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(_SEQ, sid)
        assert row is not None  # one row, whatever the space
        checkpoint, quarantined = row[0], row[1]
        tail: list[tuple[int, Op]] = []
        if checkpoint > 0 and not quarantined:  # else: nothing projected to build on
            tail = await read_events(conn, sid, checkpoint, BIG, LIST_TAIL_MAX + 1)
            if len(tail) > LIST_TAIL_MAX:
                tail = []
        touched = dict.fromkeys((op.entity_type, op.entity_id) for _, op in tail)
        wanted = limit + 1 + len(touched)  # enough rows once the touched are set aside
        if entity_type is None:
            rows = await conn.fetch(_LIST_ALL, sid, include_deleted, *start, wanted)
        else:
            rows = await conn.fetch(_LIST_TYPE, sid, include_deleted, *start, wanted, entity_type)
        # stored rows stay encoded until they make the page; the touched are folded here
        found: dict[tuple[str, str], bytes | EntityState] = {
            (r[0], r[1]): r[2] for r in rows if (r[0], r[1]) not in touched
        }
        if touched:
            found.update(await _folded(conn, sid, tail, touched, entity_type, include_deleted))
            # in _LIST's order: code points, its columns' collation being "C" (0010)
            found = {key: found[key] for key in sorted(found) if key > start}
    seq = 0 if quarantined else tail[-1][0] if tail else checkpoint
    listed = list(found.items())
    more = len(listed) > limit
    listed = listed[:limit]
    cursor = encode_cursor(*listed[-1][0]) if more else None
    return [_state(v) for _, v in listed], seq, cursor


def _state(found: bytes | EntityState) -> EntityState:
    return found if isinstance(found, EntityState) else decode_state(bytes(found))


async def _folded(
    conn: Conn,
    sid: uuid.UUID,
    tail: Sequence[tuple[int, Op]],
    touched: Collection[tuple[str, str]],
    entity_type: str | None,
    include_deleted: bool,
) -> dict[tuple[str, str], EntityState]:
    """The touched entities' stored states with the tail applied, those ``_LIST`` would
    list (but for the cursor, which the caller's ordering query applies)."""
    keys = list(touched)
    rows = await conn.fetch(LIVE.load_states, sid, [k[0] for k in keys], [k[1] for k in keys])
    states = {(r[0], r[1]): decode_state(bytes(r[2])) for r in rows}
    apply_in_order(states, tail)
    return {
        key: state
        for key, state in states.items()
        if state.has_client_events
        and not key[0].startswith("_")
        and (entity_type is None or key[0] == entity_type)
        and (include_deleted or state.deleted_by() is None)
    }


async def lag_by_space(pool: asyncpg.Pool, limit: int = 100) -> list[SpaceLag]:
    """The spaces whose read model or relay is behind their head, worst first."""
    rows = await pool.fetch(_LAG, limit)
    return [_lag(r) for r in rows]


async def lag_of_spaces(pool: asyncpg.Pool, space_ids: Sequence[str]) -> list[SpaceLag]:
    """The lag of each of ``space_ids`` (behind or not), in space_id order."""
    rows = await pool.fetch(_LAG_OF, space_ids)
    return [_lag(r) for r in rows]


def _lag(r: Any) -> SpaceLag:
    return SpaceLag(
        space_id=r[0],
        head=r[1],
        projected_seq=r[2],
        published_seq=r[3],
        projector_lag=r[1] - r[2],
        outbox_lag=r[1] - r[3],
    )


async def quarantined(pool: asyncpg.Pool, limit: int = 20) -> tuple[int, list[QuarantinedEvent]]:
    """How many events the live read model has set aside, and the latest ``limit``."""
    count: int = await pool.fetchval(_QUARANTINE_COUNT)
    rows = await pool.fetch(_QUARANTINE, limit) if count else []
    return count, [
        QuarantinedEvent(
            space_id=r[0],
            seq=r[1],
            op_id=r[2],
            entity_type=r[3],
            entity_id=r[4],
            error_type=r[5],
            quarantined_at=r[6].isoformat().replace("+00:00", "Z"),
        )
        for r in rows
    ]


async def quarantine_count(pool: asyncpg.Pool) -> int:
    """Events in the live read model's quarantine (the gauge's figure)."""
    count: int = await pool.fetchval(_QUARANTINE_COUNT)
    return count


async def lag_totals(pool: asyncpg.Pool) -> tuple[int, int]:
    """(events not yet projected, events not yet relayed), over every space."""
    row = await pool.fetchrow(_TOTALS)
    assert row is not None
    return int(row[0]), int(row[1])
