"""SQL for the gateway's own tables (eventstore/sql/0002_accounts.sql).

Plain functions over one asyncpg connection; callers own the transaction. Ids travel
as strings (the wire form) and are cast in SQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class UserRow(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    email: str
    password_hash: str
    personal_space_id: str | None


class TokenRow(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    session_id: str
    spent: bool
    in_grace: bool
    replaced_by: str | None
    revoked: bool
    expired: bool


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    """A refresh token as issued: enough to make its pair again, byte for byte.

    ``access_iat``/``access_exp`` are the times of the access token issued with it;
    None for tokens issued before they were recorded (migration 0007)."""

    token_id: str
    spent: bool
    revoked: bool
    access_iat: int | None
    access_exp: int | None


class SessionRow(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    user_id: str
    device_id: str
    revoked: bool


class DeviceRow(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    name: str
    created_at: datetime
    last_seen_at: datetime | None
    revoked: bool


def new_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- users


async def insert_user(conn: Conn, email: str, password_hash: str) -> str | None:
    """The new user's id, or None when the email is taken."""
    value: str | None = await conn.fetchval(
        "INSERT INTO users (user_id, email, password_hash) VALUES ($1, $2, $3)"
        " ON CONFLICT (email) DO NOTHING RETURNING user_id::text",
        new_id(),
        email,
        password_hash,
    )
    return value


_USER_COLUMNS = (
    "user_id::text AS user_id, email, password_hash, personal_space_id::text AS personal_space_id"
)


async def user_by_email(conn: Conn, email: str) -> UserRow | None:
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1", email)
    return None if row is None else UserRow(**dict(row))


async def lock_user(conn: Conn, user_id: str) -> UserRow | None:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = $1::uuid FOR UPDATE", user_id
    )
    return None if row is None else UserRow(**dict(row))


async def personal_space_of(conn: Conn, user_id: str) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT personal_space_id::text FROM users WHERE user_id = $1::uuid", user_id
    )
    return value


async def set_personal_space(conn: Conn, user_id: str, space_id: str) -> None:
    await conn.execute(
        "UPDATE users SET personal_space_id = $2::uuid WHERE user_id = $1::uuid",
        user_id,
        space_id,
    )


async def set_password_hash(conn: Conn, user_id: str, password_hash: str) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = $2 WHERE user_id = $1::uuid", user_id, password_hash
    )


async def user_id_by_email(conn: Conn, email: str) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT user_id::text FROM users WHERE email = $1", email
    )
    return value


# --------------------------------------------------------------------------- devices


async def insert_device(conn: Conn, user_id: str, name: str) -> str:
    device_id = new_id()
    await conn.execute(
        "INSERT INTO devices (device_id, user_id, name, last_seen_at)"
        " VALUES ($1::uuid, $2::uuid, $3, now())",
        device_id,
        user_id,
        name,
    )
    return device_id


async def resume_device(conn: Conn, user_id: str, device_id: str, name: str) -> bool:
    """Touch a known, unrevoked device of ``user_id`` (renaming it); False if there is none."""
    status: str = await conn.execute(
        "UPDATE devices SET last_seen_at = now(), name = $3"
        " WHERE device_id = $1::uuid AND user_id = $2::uuid AND revoked_at IS NULL",
        device_id,
        user_id,
        name,
    )
    return status.endswith(" 1")


async def touch_device(conn: Conn, device_id: str) -> None:
    await conn.execute(
        "UPDATE devices SET last_seen_at = now() WHERE device_id = $1::uuid", device_id
    )


async def revoke_device(conn: Conn, user_id: str, device_id: str) -> bool:
    """Mark the device revoked; False when it is not a device of ``user_id``."""
    found = await conn.fetchval(
        "UPDATE devices SET revoked_at = coalesce(revoked_at, now())"
        " WHERE device_id = $1::uuid AND user_id = $2::uuid RETURNING true",
        device_id,
        user_id,
    )
    return bool(found)


async def devices_of(
    conn: Conn, user_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[DeviceRow]:
    """The user's devices in (created_at, device_id) order, after a cursor."""
    rows = await conn.fetch(
        "SELECT device_id::text AS device_id, name, created_at, last_seen_at,"
        " revoked_at IS NOT NULL AS revoked FROM devices WHERE user_id = $1::uuid"
        " AND ($2::timestamptz IS NULL OR (created_at, device_id) > ($2, $3::uuid))"
        " ORDER BY created_at, device_id LIMIT $4",
        user_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [DeviceRow(**dict(r)) for r in rows]


# --------------------------------------------------------------------------- sessions, tokens


async def insert_session(conn: Conn, user_id: str, device_id: str) -> str:
    session_id = new_id()
    await conn.execute(
        "INSERT INTO auth_sessions (session_id, user_id, device_id)"
        " VALUES ($1::uuid, $2::uuid, $3::uuid)",
        session_id,
        user_id,
        device_id,
    )
    return session_id


async def insert_refresh(
    conn: Conn,
    *,
    token_id: str,
    session_id: str,
    digest: bytes,
    ttl_seconds: int,
    access_iat: int,
    access_exp: int,
) -> None:
    """Store a refresh token (its digest) with the times of the access token beside it."""
    await conn.execute(
        "INSERT INTO refresh_tokens"
        " (token_id, token_hash, session_id, expires_at, access_iat, access_exp)"
        " VALUES ($1::uuid, $2, $3::uuid, clock_timestamp() + make_interval(secs => $4),"
        " $5, $6)",
        token_id,
        digest,
        session_id,
        float(ttl_seconds),
        access_iat,
        access_exp,
    )


async def session_of_digest(conn: Conn, digest: bytes) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT session_id::text FROM refresh_tokens WHERE token_hash = $1", digest
    )
    return value


async def lock_session(conn: Conn, session_id: str) -> SessionRow:
    row = await conn.fetchrow(
        "SELECT session_id::text AS session_id, user_id::text AS user_id,"
        " device_id::text AS device_id, revoked_at IS NOT NULL AS revoked"
        " FROM auth_sessions WHERE session_id = $1::uuid FOR UPDATE",
        session_id,
    )
    assert row is not None, "refresh_tokens.session_id references auth_sessions"
    return SessionRow(**dict(row))


async def token_by_digest(conn: Conn, digest: bytes, grace_seconds: float) -> TokenRow | None:
    row = await conn.fetchrow(
        "SELECT token_id::text AS token_id, session_id::text AS session_id,"
        " spent_at IS NOT NULL AS spent,"
        " coalesce(clock_timestamp() - spent_at <= make_interval(secs => $2), false) AS in_grace,"
        " replaced_by::text AS replaced_by, revoked_at IS NOT NULL AS revoked,"
        " expires_at <= clock_timestamp() AS expired"
        " FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        digest,
        grace_seconds,
    )
    return None if row is None else TokenRow(**dict(row))


async def issued_token(conn: Conn, token_id: str) -> IssuedToken | None:
    """The refresh token ``token_id`` as issued, and whether it is spent or revoked
    (None once retention has deleted it)."""
    row = await conn.fetchrow(
        "SELECT token_id::text AS token_id, spent_at IS NOT NULL AS spent,"
        " revoked_at IS NOT NULL AS revoked, access_iat, access_exp"
        " FROM refresh_tokens WHERE token_id = $1::uuid",
        token_id,
    )
    return None if row is None else IssuedToken(**dict(row))


async def mark_spent(conn: Conn, token_id: str, replaced_by: str) -> None:
    """Rotate: a token is spent once, and its rotation time is the grace window's start."""
    await conn.execute(
        "UPDATE refresh_tokens SET spent_at = clock_timestamp(), replaced_by = $2::uuid"
        " WHERE token_id = $1::uuid AND spent_at IS NULL",
        token_id,
        replaced_by,
    )


async def revoke_sessions(
    conn: Conn,
    reason: str,
    *,
    session_id: str | None = None,
    device_id: str | None = None,
) -> list[str]:
    """Revoke one session, or every live session of a device; the ids revoked."""
    rows = await conn.fetch(
        "UPDATE auth_sessions SET revoked_at = clock_timestamp(), revoke_reason = $3"
        " WHERE revoked_at IS NULL AND (session_id = $1::uuid OR device_id = $2::uuid)"
        " RETURNING session_id::text AS session_id",
        session_id,
        device_id,
        reason,
    )
    ids = [r["session_id"] for r in rows]
    await record_revocations(conn, "session", ids)
    return ids


async def record_revocations(conn: Conn, kind: str, refs: list[str]) -> None:
    if refs:
        await conn.execute(
            "INSERT INTO token_revocations (ref, kind) SELECT unnest($1::uuid[]), $2"
            " ON CONFLICT (ref) DO NOTHING",
            refs,
            kind,
        )
