"""The heads of each field, kept in ``field_heads`` (migration 0008) by the append.

A field's heads are the op_ids of its stored sets that no later set of the field names
in its ``pred``: in seq order, a set removes the heads it names and becomes one. The
append reads the heads of the fields its group sets (one row each, in its lookup
statement) and writes the new heads of those it changed before COMMIT, so an op costs
the same whatever its field's history.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

#: A field of an entity of a space: (space_id, entity_type, entity_id, field).
FieldKey = tuple[str, str, str, str]

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_CANONICAL = re.compile(_UUID)
#: A comma-separated list of them.
_IDS = re.compile(f"{_UUID}(?:,{_UUID})*")


def field_key(entity_type: str, entity_id: str, field: str) -> str:
    """The field's key in ``field_heads`` (a canonical UUID string): as the SQL function
    ``field_key`` of migration 0008 computes it, the first 16 bytes of SHA-256 over the
    length-prefixed names. (Formatted by hand: once per field of every group.)"""
    text = f"{len(entity_type)}:{entity_type}{len(entity_id)}:{entity_id}{field}"
    h = _sha256(text.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


_sha256 = hashlib.sha256


def _rows(rows: Iterable[tuple[str, str, Iterable[str]]]) -> str:
    """VALUES rows of (space_id, field_key, heads). Every id must be a canonical UUID (all
    this module puts between quotes): checked in one pass over their concatenation."""
    values: list[str] = []
    ids: list[str] = []
    for space_id, key, heads in rows:
        listed = ",".join(heads)
        ids += (space_id, key, listed)
        values.append(f"('{space_id}'::uuid, '{key}'::uuid, '{{{listed}}}'::uuid[])")
    if _IDS.fullmatch(",".join(ids)) is None:
        bad = [i for i in ",".join(ids).split(",") if _CANONICAL.fullmatch(i) is None]
        raise ValueError(f"not a canonical UUID: {bad[0]!r}")
    return ", ".join(values)


def write_sql(
    new: Mapping[tuple[str, str], Iterable[str]], changed: Mapping[tuple[str, str], Iterable[str]]
) -> str:
    """Statements storing the heads of fields without a row yet (``new``) and of fields
    with one (``changed``), keyed by (space_id, field_key); "" when there are none.

    Literals only, so that they share COMMIT's round trip (eventstore/append.py): every
    character is a UUID checked here or SQL of this module. A plain INSERT and an UPDATE,
    not an upsert: the lookup under the space lock said which rows exist, and only
    holders of that lock write them."""
    sql = ""
    if new:
        values = _rows((s, k, h) for (s, k), h in new.items())
        sql += f"INSERT INTO field_heads (space_id, field_key, heads) VALUES {values};\n"
    if changed:
        values = _rows((s, k, h) for (s, k), h in changed.items())
        sql += (
            f"UPDATE field_heads AS f SET heads = u.heads FROM (VALUES {values})"
            " AS u(space_id, field_key, heads)"
            " WHERE f.space_id = u.space_id AND f.field_key = u.field_key;\n"
        )
    return sql
