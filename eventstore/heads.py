"""The heads of each field, kept in ``field_heads`` (migration 0008) by the append.

A field's heads are the op_ids of its stored sets that no later set of the field names
in its ``pred``: in seq order, a set removes the heads it names and becomes one. The
append reads the heads of the fields its group sets (one row each, in its lookup
statement) and writes the new heads of those it changed before COMMIT, so an op costs
the same whatever its field's history.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

#: A field of an entity of a space: (space_id, entity_type, entity_id, field).
FieldKey = tuple[str, str, str, str]

# One statement of literals, so that it can share COMMIT's round trip (see
# eventstore/append.py). Client text (entity type and id, field) never enters the SQL
# as text: it is sent as the hex of its UTF-8 bytes and decoded by the server; ids are
# UUIDs parsed and printed here. So every character of the statement is made here.
_UPSERT = """
INSERT INTO field_heads (space_id, entity_type, entity_id, field, heads)
VALUES {values}
ON CONFLICT (space_id, entity_type, entity_id, field) DO UPDATE SET heads = EXCLUDED.heads;
"""


def _text(value: str) -> str:
    return f"convert_from(decode('{value.encode().hex()}', 'hex'), 'UTF8')"


def _uuids(ids: Iterable[str]) -> str:
    return "'{" + ",".join(str(uuid.UUID(i)) for i in sorted(ids)) + "}'::uuid[]"


def upsert_sql(heads: Mapping[FieldKey, Iterable[str]]) -> str:
    """The statement storing ``heads`` (each field's complete new heads); "" for none."""
    if not heads:
        return ""
    values = ", ".join(
        f"('{uuid.UUID(space_id)}'::uuid, {_text(entity_type)}, {_text(entity_id)}, "
        f"{_text(field)}, {_uuids(ids)})"
        for (space_id, entity_type, entity_id, field), ids in heads.items()
    )
    return _UPSERT.format(values=values)
