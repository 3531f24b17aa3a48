"""Event rows: the column lists, and conversion from rows to ``core.wire.Event``."""

from __future__ import annotations

from datetime import UTC, datetime
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

#: What reads select (hashes only where needed: verify, audit).
READ_COLUMNS = (
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


def format_time(at: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix and microseconds (PostgreSQL's precision)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decode_value(text: str | None) -> Any:
    """A stored ``value`` (canonical JSON text, or SQL NULL for null) as a Python value."""
    return None if text is None else _DECODE(text)


def event_from_row(row: asyncpg.Record) -> Event:
    """An ``Event`` from a row selected with :data:`READ_COLUMNS`."""
    user_id = row["user_id"]
    return Event(
        seq=row["seq"],
        op_id=str(row["op_id"]),
        space_id=str(row["space_id"]),
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        kind=row["kind"],
        field=row["field"],
        value=decode_value(row["value"]),
        pred=[str(p) for p in row["pred"]],
        lamport=row["lamport"],
        client_time=row["client_time"],
        device_id=str(row["device_id"]),
        user_id=None if user_id is None else str(user_id),
        recorded_at=format_time(row["recorded_at"]),
        schema_version=row["schema_version"],
    )
