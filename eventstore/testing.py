"""Helpers for tests and benchmarks of the event store: op builders, ids, stored heads.

Not used by the server. Ops are built as raw wire dicts, exactly as a gateway hands
them to ``append``.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from eventstore.rows import Conn


def new_id() -> str:
    """A fresh lowercase UUID string."""
    return str(uuid.uuid4())


async def stored_heads(conn: Conn | asyncpg.Pool, space: str) -> dict[str, set[str]]:
    """The space's rows of ``field_heads``: field_key -> heads."""
    rows = await conn.fetch(
        "SELECT field_key::text, heads::text[] FROM field_heads WHERE space_id = $1", space
    )
    return {r[0]: set(r[1]) for r in rows}


async def new_user(pool: asyncpg.Pool) -> str:
    """A fresh account (a ``users`` row, email ``<user_id>@example.test``); its user_id.
    Invitations name their inviter by foreign key."""
    user_id = new_id()
    await pool.execute(
        "INSERT INTO users (user_id, email, password_hash) VALUES ($1, $2, 'x')",
        user_id,
        f"{user_id}@example.test",
    )
    return user_id


def op(
    space_id: str,
    *,
    entity_id: str = "t-1",
    kind: str = "set",
    field: str | None = "title",
    value: Any = "hello",
    lamport: int = 1,
    pred: list[str] | None = None,
    entity_type: str = "task",
    op_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A raw client op (wire dict); ``field=None`` leaves the key out, as for delete."""
    raw: dict[str, Any] = {
        "op_id": op_id or new_id(),
        "space_id": space_id,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "kind": kind,
        "lamport": lamport,
    }
    if field is not None:
        raw["field"] = field
    if kind not in ("delete", "restore"):
        raw["value"] = value
    if pred is not None:
        raw["pred"] = pred
    raw.update(extra)
    return raw


async def forge(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """Run ``sql`` on the log behind the store's back, as an owner who turned the
    triggers that refuse changes to ``events`` off (in one transaction, so they are on
    again for everyone else): what ``verify`` must find."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
        await conn.execute(sql, *args)
        await conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
