"""The heads of each field, kept in ``field_heads`` (migration 0008) by the append.

A field's heads are the op_ids of its stored sets that no later set of the field names
in its ``pred``: in seq order, a set removes the heads it names and becomes one. The
append reads the heads of the fields its group sets (one row each, in its lookup
statement) and writes the new heads of those it changed before COMMIT, so an op costs
the same whatever its field's history. With the heads it keeps their highest lamport
(migration 0009), so that a pred entry naming a head is checked without its event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from eventstore.rows import Conn

#: A field of an entity of a space: (space_id, entity_type, entity_id, field).
FieldKey = tuple[str, str, str, str]


def field_key(entity_type: str, entity_id: str, field: str) -> str:
    """The field's key in ``field_heads`` (a canonical UUID string): as the SQL function
    ``field_key`` of migration 0008 computes it, the first 16 bytes of SHA-256 over the
    length-prefixed names. (Formatted by hand: once per field of every group.)"""
    text = f"{len(entity_type)}:{entity_type}{len(entity_id)}:{entity_id}{field}"
    h = _sha256(text.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


_sha256 = hashlib.sha256

#: The heads of fields without a row yet ($1-$4) and of fields with one ($5-$8), each as
#: parallel arrays of (space_id, field_key, head, lamport), a field's heads on
#: consecutive rows, its lamport (column ``lamport``, migration 0009) on each of them.
#: One prepared statement with typed parameters: its plan is cached, where literal VALUES
#: lists of every group were parsed and planned anew (about 7 µs of the database's CPU per
#: field, measured in docs/benchmarks.md). A plain INSERT and an UPDATE, not an upsert:
#: the lookup under the space lock said which rows exist, and only holders of that lock
#: write them.
_WRITE = """
WITH added AS (
    INSERT INTO field_heads (space_id, field_key, heads, lamport)
    SELECT s, k, array_agg(h), max(l)
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[]) AS n(s, k, h, l)
    GROUP BY s, k
)
UPDATE field_heads AS f SET heads = c.heads, lamport = c.lamport
FROM (
    SELECT s, k, array_agg(h) AS heads, max(l) AS lamport
    FROM unnest($5::uuid[], $6::uuid[], $7::uuid[], $8::bigint[]) AS c(s, k, h, l)
    GROUP BY s, k
) AS c
WHERE f.space_id = c.s AND f.field_key = c.k
"""

#: (space_id, field_key, heads, lamport) of one field: ``lamport`` is the highest
#: lamport among the heads, or None when that is not known.
Row = tuple[str, str, Iterable[str], int | None]


def _flat(rows: Iterable[Row]) -> tuple[list[str], list[str], list[str], list[int | None]]:
    """The rows as four parallel lists, one entry per head."""
    spaces: list[str] = []
    keys: list[str] = []
    heads: list[str] = []
    lamports: list[int | None] = []
    for space_id, key, field_heads, lamport in rows:
        for head in field_heads:
            spaces.append(space_id)
            keys.append(key)
            heads.append(head)
            lamports.append(lamport)
    return spaces, keys, heads, lamports


async def write_heads(conn: Conn, new: Sequence[Row], changed: Sequence[Row]) -> None:
    """Store the heads of fields without a row yet (``new``) and of fields with one
    (``changed``); nothing when there are none."""
    if new or changed:
        await conn.execute(_WRITE, *_flat(new), *_flat(changed))
