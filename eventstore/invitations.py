"""Invitations: capabilities to join a space, each a random code known here only by its digest.

Every change that grants takes the space row lock (writer.lock_spaces), the same lock
as pushes and member changes, so this holds at every commit: *the inviter of a pending
invitation is an owner of its space*. Creating one checks the inviter under the lock;
``members.change_member`` withdraws an owner's invitations in the transaction that
takes the role away; accepting re-checks the inviter under the lock anyway.

A row lives while its invitation can be used: accepting or cancelling deletes it, and a
space's expired rows are purged when that space gets its next invitation (a reader of
the table never mistakes one for pending: every query checks ``expires_at``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from core.errors import Forbidden, NotFound
from core.ids import canonical_id
from core.ports import Acceptance, Invitation, RoleChange
from core.wire import Role
from eventstore.members import change_member
from eventstore.rows import Conn
from eventstore.writer import lock_spaces

#: Accepting never lowers a role: the caller keeps the higher of theirs and the invited one.
_RANK: dict[Role | None, int] = {None: 0, "reader": 1, "editor": 2, "owner": 3}

_COLUMNS = (
    "invitation_id::text AS invitation_id, space_id::text AS space_id, email, role,"
    " invited_by::text AS invited_by, created_at, expires_at"
)


def _invitation(row: Any) -> Invitation:
    return Invitation(**dict(row))


async def _role(conn: Conn, space_id: str, user_id: str) -> Role | None:
    role: Role | None = await conn.fetchval(
        "SELECT role FROM members WHERE space_id = $1 AND user_id = $2", space_id, user_id
    )
    return role


async def invite(
    conn: Conn,
    *,
    space_id: str,
    email: str,
    role: Role,
    by: str,
    code_digest: bytes,
    ttl_seconds: float,
    user_id: str | None,
    secret_key: str,
    schema_version: int,
) -> Invitation | RoleChange:
    """A member's role set at once when ``user_id`` is a member, else a new pending
    invitation of ``email`` (replacing the email's pending one)."""
    sid, by_id = canonical_id(space_id), canonical_id(by)
    uid = canonical_id(user_id) if user_id is not None else None
    if sid is None or by_id is None:
        raise NotFound("no such space")
    async with conn.transaction():
        if not await lock_spaces(conn, [sid]):
            raise NotFound("no such space")
        if await _role(conn, sid, by_id) != "owner":
            raise Forbidden("only owners manage members")
        # Decided under the lock: a member who leaves meanwhile gets an invitation, never
        # a membership they did not accept.
        if uid is not None and await _role(conn, sid, uid) is not None:
            event = await change_member(
                conn,
                secret_key=secret_key,
                schema_version=schema_version,
                space_id=sid,
                user_id=uid,
                role=role,
                by=by_id,
            )
            return RoleChange(space_id=sid, user_id=uid, role=role, event=event)
        return await _insert(conn, sid, email, role, by_id, code_digest, ttl_seconds)


async def _insert(
    conn: Conn,
    space_id: str,
    email: str,
    role: Role,
    by: str,
    code_digest: bytes,
    ttl_seconds: float,
) -> Invitation:
    """A pending invitation (the caller holds the space lock); it replaces the email's
    pending one, and the space's expired rows go with it."""
    await conn.execute(
        "DELETE FROM invitations WHERE space_id = $1 AND (email = $2 OR expires_at <= now())",
        space_id,
        email,
    )
    # clock_timestamp, not now(): rows of one space are created in lock order, so the
    # list's (created_at, invitation_id) cursor never skips a late-committing row. Read
    # once: two calls differ by a microsecond or more in about 2% of rows, and an
    # invitation lives exactly its ttl.
    row = await conn.fetchrow(
        "INSERT INTO invitations"
        " (invitation_id, space_id, email, role, invited_by, code_hash, created_at, expires_at)"
        " SELECT $1::uuid, $2::uuid, $3::text, $4::text, $5::uuid, $6::bytea, t.at,"
        " t.at + make_interval(secs => $7) FROM (SELECT clock_timestamp() AS at) AS t"
        f" RETURNING {_COLUMNS}",
        str(uuid.uuid4()),
        space_id,
        email,
        role,
        by,
        code_digest,
        float(ttl_seconds),
    )
    return _invitation(row)


async def accept(
    conn: Conn,
    *,
    secret_key: str,
    schema_version: int,
    code_digest: bytes,
    user_id: str,
) -> Acceptance | None:
    """Use an invitation, all in one transaction; None when it cannot be used (unknown,
    used up, cancelled, expired, or its inviter is no longer an owner)."""
    uid = canonical_id(user_id)
    if uid is None:
        return None
    async with conn.transaction():
        sid = await conn.fetchval(
            "SELECT space_id::text FROM invitations WHERE code_hash = $1", code_digest
        )
        if sid is None:
            return None
        # The space row first, as every writer of the space takes it, then the invitation
        # row: a concurrent acceptance of the same code waits here and then finds no row.
        await lock_spaces(conn, [sid])
        row = await conn.fetchrow(
            "DELETE FROM invitations WHERE code_hash = $1 AND space_id = $2"
            " RETURNING role, invited_by::text AS invited_by, expires_at > now() AS live",
            code_digest,
            sid,
        )
        if row is None or not row["live"]:
            return None
        inviter: str = row["invited_by"]
        if await _role(conn, sid, inviter) != "owner":
            return None
        current = await _role(conn, sid, uid)
        invited: Role = row["role"]
        if _RANK[current] >= _RANK[invited]:
            assert current is not None
            return Acceptance(space_id=sid, role=current, event=None)
        event = await change_member(
            conn,
            secret_key=secret_key,
            schema_version=schema_version,
            space_id=sid,
            user_id=uid,
            role=invited,
            by=inviter,
        )
    return Acceptance(space_id=sid, role=invited, event=event)


async def pending(
    conn: Conn, space_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[Invitation]:
    """Unexpired invitations of a space, oldest first, after a (created_at, id) cursor."""
    sid = canonical_id(space_id)
    if sid is None or limit <= 0:
        return []
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM invitations WHERE space_id = $1 AND expires_at > now()"
        " AND ($2::timestamptz IS NULL OR (created_at, invitation_id) > ($2, $3::uuid))"
        " ORDER BY created_at, invitation_id LIMIT $4",
        sid,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_invitation(r) for r in rows]


async def cancel(conn: Conn, *, space_id: str, invitation_id: str) -> bool:
    """Delete an invitation of the space; True when it was still pending and unexpired.

    No space lock: removing an invitation can never grant anything."""
    sid, iid = canonical_id(space_id), canonical_id(invitation_id)
    if sid is None or iid is None:
        return False
    live = await conn.fetchval(
        "DELETE FROM invitations WHERE space_id = $1 AND invitation_id = $2"
        " RETURNING expires_at > now()",
        sid,
        iid,
    )
    return bool(live)
