"""Spaces and membership: each change one transaction under the space row lock.

Membership changes take the same ``FOR UPDATE`` lock on the space row as pushes
(eventstore/writer.py), so a push and a removal are strictly ordered: a push either
commits before the ``member_removed`` event or re-checks the role after it and is
rejected. The ``members`` table holds current roles; the history is the log.

Every function here opens its own transaction on ``conn``, which is a savepoint when
the caller already has one open: registration creates the personal space inside the
transaction that creates the user (gateway/sessions.py), and accepting an invitation
adds the member inside the transaction that uses it up (eventstore/invitations.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from core.errors import Conflict, NotFound
from core.ids import canonical_id
from core.wire import Event, Role
from eventstore.rows import Conn
from eventstore.writer import Batch, NewEvent, SpaceCursor, lock_spaces, server_op_id

MEMBER_ENTITY = "_member"


def _member_event(
    secret_key: str, cursor: SpaceCursor, kind: str, value: dict[str, Any]
) -> NewEvent:
    # The key names the seq the event will take: unique, and the space lock is held.
    key = f"member:{cursor.space_id}:{cursor.head + 1}"
    return NewEvent(
        op_id=server_op_id(secret_key, key),
        entity_type=MEMBER_ENTITY,
        entity_id=value["user_id"],
        kind=kind,
        value=value,
        lamport=cursor.max_lamport,
    )


async def create_space(
    conn: Conn,
    *,
    secret_key: str,
    schema_version: int,
    name: str,
    creator: str,
    personal: bool,
) -> str:
    """Insert a space and its creator's ``member_added`` (seq 1) in one transaction."""
    creator_id = canonical_id(creator)
    if creator_id is None:
        raise NotFound(f"no such user: {creator!r}")
    space_id = str(uuid.uuid4())
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO spaces (space_id, name, personal, created_by) VALUES ($1, $2, $3, $4)",
            space_id,
            name,
            personal,
            creator_id,
        )
        await conn.execute("INSERT INTO outbox_cursors (space_id) VALUES ($1)", space_id)
        cursor = SpaceCursor(space_id, 0, 0, bytes(32))
        value = {"user_id": creator_id, "role": "owner", "previous_role": None, "by": creator_id}
        batch = Batch(datetime.now(UTC), schema_version)
        batch.add_new(cursor, _member_event(secret_key, cursor, "member_added", value))
        await batch.flush(conn)
        await conn.execute(
            "INSERT INTO members (space_id, user_id, role, since_seq) VALUES ($1, $2, 'owner', 1)",
            space_id,
            creator_id,
        )
    return space_id


async def _is_last_owner(conn: Conn, space_id: str) -> bool:
    owners = await conn.fetchval(
        "SELECT count(*) FROM members WHERE space_id = $1 AND role = 'owner'", space_id
    )
    return bool(owners <= 1)


async def change_member(
    conn: Conn,
    *,
    secret_key: str,
    schema_version: int,
    space_id: str,
    user_id: str,
    role: Role | None,
    by: str,
) -> Event | None:
    """Add, re-role or remove a member; the member event, or None if nothing changed."""
    sid, uid, by_id = canonical_id(space_id), canonical_id(user_id), canonical_id(by)
    if sid is None or uid is None or by_id is None:
        raise NotFound("no such space or user")
    async with conn.transaction():
        cursor = (await lock_spaces(conn, [sid])).get(sid)
        if cursor is None:
            raise NotFound(f"no such space: {space_id}")
        current: Role | None = await conn.fetchval(
            "SELECT role FROM members WHERE space_id = $1 AND user_id = $2", sid, uid
        )
        if current == role:
            return None
        if current == "owner" and await _is_last_owner(conn, sid):
            raise Conflict("a space keeps at least one owner", space_id=sid, user_id=uid)
        kind = (
            "member_added"
            if current is None
            else "member_removed"
            if role is None
            else "member_role_changed"
        )
        value = {"user_id": uid, "role": role, "previous_role": current, "by": by_id}
        batch = Batch(datetime.now(UTC), schema_version)
        event = batch.add_new(cursor, _member_event(secret_key, cursor, kind, value))
        await batch.flush(conn)
        if current == "owner":
            # An owner who loses the role loses every invitation they sent (docs/protocol.md
            # section 6): no pending invitation ever speaks for a non-owner.
            await conn.execute(
                "DELETE FROM invitations WHERE space_id = $1 AND invited_by = $2", sid, uid
            )
        if role is None:
            await conn.execute("DELETE FROM members WHERE space_id = $1 AND user_id = $2", sid, uid)
        else:
            await conn.execute(
                """
                INSERT INTO members (space_id, user_id, role, since_seq) VALUES ($1, $2, $3, $4)
                ON CONFLICT (space_id, user_id)
                DO UPDATE SET role = EXCLUDED.role, since_seq = EXCLUDED.since_seq
                """,
                sid,
                uid,
                role,
                event.seq,
            )
    return event
