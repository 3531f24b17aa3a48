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
import uuid
from collections.abc import Iterable, Mapping

#: A field of an entity of a space: (space_id, entity_type, entity_id, field).
FieldKey = tuple[str, str, str, str]

_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def field_key(entity_type: str, entity_id: str, field: str) -> str:
    """The field's key in ``field_heads``: as the SQL function ``field_key`` of migration
    0008 computes it (the first 16 bytes of SHA-256 over the length-prefixed names)."""
    text = f"{len(entity_type)}:{entity_type}{len(entity_id)}:{entity_id}{field}"
    return str(uuid.UUID(bytes=hashlib.sha256(text.encode()).digest()[:16]))


def _uuid(value: str) -> str:
    """``value`` when it is a canonical UUID: all this module puts between quotes."""
    if _CANONICAL.fullmatch(value) is None:
        raise ValueError(f"not a canonical UUID: {value!r}")
    return value


def _rows(rows: Iterable[tuple[str, str, Iterable[str]]]) -> str:
    return ", ".join(
        f"('{_uuid(space_id)}'::uuid, '{_uuid(key)}'::uuid, "
        f"'{{{','.join(_uuid(h) for h in heads)}}}'::uuid[])"
        for space_id, key, heads in rows
    )


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
