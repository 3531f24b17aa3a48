"""Event rows: the column lists, and conversion from rows to ``core.wire.Event``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from core.wire import Event

#: A connection, pooled or not.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

#: Columns in COPY order.
EVENT_COLUMNS: tuple[str, ...] = (
    "space_id",
    "seq",
    "op_id",
    "entity_type",
    "entity_id",
    "kind",
    "field",
    "value",
    "pred",
    "lamport",
    "device_id",
    "user_id",
    "client_time",
    "recorded_at",
    "schema_version",
    "payload_hash",
    "chain_hash",
)

#: What reads select: a stored event as a wire ``Event``'s fields, every one ready as it
#: is (in this order, which the relay reads by position): ids as text, ``pred`` as text,
#: ``recorded_at`` as text formatted by PostgreSQL exactly as :func:`core.wire.format_time` formats
#: it, the value as its stored JSON text. PostgreSQL's C does the formatting that
#: ``str(UUID)`` and ``strftime`` did per event in Python (about 6 µs an event).
READ_COLUMNS = (
    "seq, op_id::text, space_id::text, entity_type, entity_id, kind, field, value, "
    "pred::text[], lamport, client_time, device_id::text, user_id::text, "
    """to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') """
    "AS recorded_at, schema_version"
)

#: The stored columns as they are (no formatting): what the chain check recomputes its
#: hashes from, so that it depends on nothing but the row.
STORED_COLUMNS = (
    "space_id, seq, op_id, entity_type, entity_id, kind, field, value, pred, lamport, "
    "device_id, user_id, client_time, recorded_at, schema_version"
)

#: What folds read: the row shape of ``core.ops.op_from_row`` (ids as text, no UUID
#: objects to build and print; the value as its stored JSON text).
OP_COLUMNS = (
    "seq, op_id::text, entity_type, entity_id, kind, field, value, pred::text[], lamport, "
    "device_id::text"
)

_DECODE = msgspec.json.decode


def decode_value(text: str | None) -> Any:
    """A stored ``value`` (canonical JSON text, or SQL NULL for null) as a Python value."""
    return None if text is None else _DECODE(text)


def raw_value(text: str | None) -> msgspec.Raw | None:
    """A stored ``value`` kept as its JSON text, to be sent as it is (SQL NULL: null)."""
    return None if text is None else msgspec.Raw(text)


def event_from_row(
    row: asyncpg.Record,
    *,
    first: int = 0,
    value_of: Callable[[str | None], Any] = decode_value,
) -> Event:
    """An ``Event`` from the :data:`READ_COLUMNS` of a row, starting at column ``first``.
    Everything comes as the wire has it but the value: decoded, or as ``value_of``
    makes it (:func:`raw_value` for an event encoded to JSON without being decoded)."""
    seq, op_id, space_id, entity_type, entity_id, kind, field, value, pred = row[first : first + 9]
    lamport, client_time, device_id, user_id, recorded_at, schema_version = row[
        first + 9 : first + 15
    ]
    return Event(
        seq=seq,
        op_id=op_id,
        space_id=space_id,
        entity_type=entity_type,
        entity_id=entity_id,
        kind=kind,
        field=field,
        value=value_of(value),
        pred=pred,
        lamport=lamport,
        client_time=client_time,
        device_id=device_id,
        user_id=user_id,
        recorded_at=recorded_at,
        schema_version=schema_version,
    )
