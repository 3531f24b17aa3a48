"""``PostgresEventStore``: the ``core.ports.EventStore`` adapter on asyncpg.

Writes: client pushes go through group commit (eventstore/group.py, append.py); member
changes, invitations and server events (one, or a batch: eventstore/server_events.py)
run their own transaction under the same space lock (eventstore/members.py,
invitations.py), except ``create_space_in``, which runs in the caller's. Reads are
plain queries, or server-side cursors for long ranges (eventstore/reads.py). Every
driver error is translated here into ``core.errors`` (``Unavailable`` when transient).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any, Self

import asyncpg

from core.errors import ConcordError
from core.ids import canonical_id
from core.ports import (
    Acceptance,
    AppendOutcome,
    Invitation,
    Membership,
    RoleChange,
    ServerAppend,
    ServerEvent,
    ServerOutcome,
    SpaceMembership,
)
from core.wire import DEFAULT_LIMITS, Event, Limits, Role
from crdt import DEFAULT_SCHEMA, EntityState, Schema
from eventstore import invitations, members, reads, server_events
from eventstore.append import FaultHook, GroupResult, run_group
from eventstore.errors import translated
from eventstore.group import GroupCommitter
from eventstore.members import MEMBER_ENTITY
from eventstore.push import Push, prepare, refuse_all
from eventstore.rows import READ_COLUMNS, Conn, event_from_row


class PostgresEventStore:
    """The append-only log in PostgreSQL (docs/protocol.md sections 2 and 4).

    ``writers`` transactions may run at once, each carrying several pushes: up to
    ``max_group_ops`` ops of the same spaces, or ``spread_ops`` across spaces, up to
    ``max_spread_ops`` when more is queued (see eventstore/group.py). ``fault_hook``,
    for tests, is awaited inside each append transaction after the COPY and before
    COMMIT.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        schema: Schema = DEFAULT_SCHEMA,
        secret_key: str,
        limits: Limits = DEFAULT_LIMITS,
        writers: int = 4,
        max_group_ops: int = 2000,
        spread_ops: int = 200,
        max_spread_ops: int = 1000,
        fault_hook: FaultHook | None = None,
    ) -> None:
        if not secret_key:
            raise ValueError("secret_key is required (server event op_ids are keyed by it)")
        self.pool = pool
        self.schema = schema
        self.limits = limits
        self.fault_hook = fault_hook
        self._secret = secret_key
        self.committer = GroupCommitter(
            pool,
            run=self._run_group,
            writers=writers,
            max_group_ops=max_group_ops,
            spread_ops=spread_ops,
            max_spread_ops=max_spread_ops,
        )

    async def start(self) -> None:
        """Start the group-commit writers (also done lazily by the first ``append``)."""
        self.committer.start()

    async def close(self) -> None:
        """Stop the writers. The pool belongs to the caller and stays open."""
        await self.committer.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ writes

    async def append(self, *, user_id: str, device_id: str, ops: Sequence[Any]) -> AppendOutcome:
        """Store one push (its space is the first op's); results in input order, after
        COMMIT. Raises ``core.errors.Unavailable`` when nothing could be committed."""
        device = canonical_id(device_id)
        if device is None:
            raise ValueError(f"device_id must be a UUID, not {device_id!r}")
        push = prepare(user_id, device, ops, self.schema, self.limits.max_value_bytes)
        if push.space_id is None:
            return refuse_all(push, "invalid_op", "the push has no valid space_id", 0, 0)
        return await self.committer.submit(push)

    async def _run_group(self, conn: Conn, pushes: Sequence[Push]) -> GroupResult:
        return await run_group(
            conn,
            pushes,
            schema=self.schema,
            headroom=self.limits.lamport_headroom,
            fault_hook=self.fault_hook,
        )

    async def append_server_event(
        self,
        *,
        space_id: str,
        kind: str,
        entity_type: str,
        entity_id: str,
        value: Any,
        key: str,
    ) -> ServerAppend:
        """Append a server event whose op_id is an HMAC of ``key``; a repeat is a duplicate.

        A batch of one (eventstore/server_events.py), whose error is raised (``NotFound``
        for an unknown or malformed space)."""
        event = ServerEvent(
            space_id=space_id,
            kind=kind,
            entity_type=entity_type,
            entity_id=entity_id,
            value=value,
            key=key,
        )
        with translated():
            async with self.pool.acquire() as conn:
                [outcome] = await server_events.append_server_events(
                    conn,
                    secret_key=self._secret,
                    schema_version=self.schema.version,
                    events=[event],
                )
        if isinstance(outcome, ConcordError):
            raise outcome
        return outcome

    async def append_server_events(self, events: Sequence[ServerEvent]) -> list[ServerOutcome]:
        """Append many server events in one transaction; one outcome each, in input order
        (``core.ports.EventStore.append_server_events``; eventstore/server_events.py)."""
        if not events:
            return []
        with translated():  # driver errors become core.errors (Unavailable when transient)
            async with self.pool.acquire() as conn:
                return await server_events.append_server_events(
                    conn, secret_key=self._secret, schema_version=self.schema.version, events=events
                )

    async def create_space(self, *, name: str, creator_user_id: str, personal: bool) -> str:
        """Create a space with its creator as owner (``member_added`` is seq 1)."""
        with translated():
            async with self.pool.acquire() as conn:
                return await members.create_space(
                    conn,
                    secret_key=self._secret,
                    schema_version=self.schema.version,
                    name=name,
                    creator=creator_user_id,
                    personal=personal,
                )

    async def create_space_in(
        self, conn: Conn, *, name: str, creator_user_id: str, personal: bool
    ) -> str:
        """``create_space`` inside the caller's open transaction on ``conn``."""
        with translated():
            return await members.create_space(
                conn,
                secret_key=self._secret,
                schema_version=self.schema.version,
                name=name,
                creator=creator_user_id,
                personal=personal,
            )

    async def change_member(
        self, *, space_id: str, user_id: str, role: Role | None, by: str
    ) -> Event | None:
        """Add, re-role or remove (``role=None``) a member under the space lock."""
        with translated():
            async with self.pool.acquire() as conn:
                return await members.change_member(
                    conn,
                    secret_key=self._secret,
                    schema_version=self.schema.version,
                    space_id=space_id,
                    user_id=user_id,
                    role=role,
                    by=by,
                )

    # ------------------------------------------------------------------ invitations

    async def invite(
        self,
        *,
        space_id: str,
        email: str,
        role: Role,
        by: str,
        code_digest: bytes,
        ttl_seconds: float,
        user_id: str | None,
    ) -> Invitation | RoleChange:
        """A member's role set at once, or a pending invitation (owners only)."""
        with translated():
            async with self.pool.acquire() as conn:
                return await invitations.invite(
                    conn,
                    space_id=space_id,
                    email=email,
                    role=role,
                    by=by,
                    code_digest=code_digest,
                    ttl_seconds=ttl_seconds,
                    user_id=user_id,
                    secret_key=self._secret,
                    schema_version=self.schema.version,
                )

    async def accept_invitation(self, *, code_digest: bytes, user_id: str) -> Acceptance | None:
        """Use an invitation under the space lock; None when it cannot be used."""
        with translated():
            async with self.pool.acquire() as conn:
                return await invitations.accept(
                    conn,
                    secret_key=self._secret,
                    schema_version=self.schema.version,
                    code_digest=code_digest,
                    user_id=user_id,
                )

    async def invitations_of(
        self, space_id: str, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[Invitation]:
        """Pending, unexpired invitations of a space, oldest first."""
        with translated():
            async with self.pool.acquire() as conn:
                return await invitations.pending(conn, space_id, after=after, limit=limit)

    async def cancel_invitation(self, *, space_id: str, invitation_id: str) -> bool:
        """Withdraw a pending invitation; False when the space has none of that id."""
        with translated():
            async with self.pool.acquire() as conn:
                return await invitations.cancel(
                    conn, space_id=space_id, invitation_id=invitation_id
                )

    # ------------------------------------------------------------------ membership reads

    async def role_of(self, space_id: str, user_id: str) -> Role | None:
        sid, uid = canonical_id(space_id), canonical_id(user_id)
        if sid is None or uid is None:
            return None
        with translated():
            role: Role | None = await self.pool.fetchval(
                "SELECT role FROM members WHERE space_id = $1 AND user_id = $2", sid, uid
            )
        return role

    async def membership(self, space_id: str, user_id: str) -> Membership | None:
        sid, uid = canonical_id(space_id), canonical_id(user_id)
        if sid is None or uid is None:
            return None
        with translated():
            row = await self.pool.fetchrow(
                "SELECT role, since_seq FROM members WHERE space_id = $1 AND user_id = $2",
                sid,
                uid,
            )
        return None if row is None else Membership(role=row[0], since_seq=int(row[1]))

    async def removal_after(self, space_id: str, user_id: str, after: int) -> Event | None:
        sid, uid = canonical_id(space_id), canonical_id(user_id)
        if sid is None or uid is None:
            return None
        with translated():
            row = await self.pool.fetchrow(
                f"SELECT {READ_COLUMNS} FROM events WHERE space_id = $1 AND seq > $2"
                " AND kind = 'member_removed' AND entity_type = $3 AND entity_id = $4"
                " ORDER BY seq LIMIT 1",
                sid,
                max(after, 0),
                MEMBER_ENTITY,
                uid,
            )
        return None if row is None else event_from_row(row)

    async def spaces_of(self, user_id: str) -> list[SpaceMembership]:
        """The user's spaces with roles, oldest first."""
        uid = canonical_id(user_id)
        if uid is None:
            return []
        with translated():
            rows = await self.pool.fetch(
                "SELECT s.space_id, s.name, s.personal, m.role FROM members m "
                "JOIN spaces s USING (space_id) WHERE m.user_id = $1 "
                "ORDER BY s.created_at, s.space_id",
                uid,
            )
        return [
            SpaceMembership(
                space_id=str(r["space_id"]), name=r["name"], role=r["role"], personal=r["personal"]
            )
            for r in rows
        ]

    async def members_of(self, space_id: str) -> dict[str, Role]:
        sid = canonical_id(space_id)
        if sid is None:
            return {}
        with translated():
            rows = await self.pool.fetch(
                "SELECT user_id, role FROM members WHERE space_id = $1 ORDER BY user_id", sid
            )
        return {str(r["user_id"]): r["role"] for r in rows}

    # ------------------------------------------------------------------ log reads

    async def head(self, space_id: str) -> int:
        """The space's last seq (0 for an empty or unknown space)."""
        sid = canonical_id(space_id)
        if sid is None:
            return 0
        with translated():
            head: int | None = await self.pool.fetchval(
                "SELECT head FROM spaces WHERE space_id = $1", sid
            )
        return head or 0

    async def max_lamport(self, space_ids: Sequence[str]) -> int:
        """The highest lamport stored in any of ``space_ids`` (0 if none)."""
        ids = [s for s in (canonical_id(x) for x in space_ids) if s is not None]
        if not ids:
            return 0
        with translated():
            value: int | None = await self.pool.fetchval(
                "SELECT max(max_lamport) FROM spaces WHERE space_id = ANY($1::uuid[])", ids
            )
        return value or 0

    async def read(self, space_id: str, after: int, limit: int) -> list[Event]:
        """Events with seq > ``after``, in seq order, at most ``limit``."""
        sid = canonical_id(space_id)
        if sid is None or limit <= 0:
            return []
        with translated():
            rows = await self.pool.fetch(
                f"SELECT {READ_COLUMNS} FROM events WHERE space_id = $1 AND seq > $2 "
                "ORDER BY seq LIMIT $3",
                sid,
                max(after, 0),
                limit,
            )
        return [event_from_row(r) for r in rows]

    async def iter_events(
        self, space_id: str, after: int = 0, up_to: int | None = None, *, prefetch: int = 1000
    ) -> AsyncGenerator[Event, None]:
        """Events with ``after < seq <= up_to`` in seq order, streamed through a
        server-side cursor (one pooled connection held until the iterator ends)."""
        sid = canonical_id(space_id)
        if sid is None:
            return
        with translated():
            async with self.pool.acquire() as conn, conn.transaction(readonly=True):
                async for row in reads.stream(
                    conn,
                    sid,
                    after=after,
                    up_to=reads.BIG if up_to is None else up_to,
                    prefetch=prefetch,
                ):
                    yield event_from_row(row)

    async def entity_events(
        self, space_id: str, entity_type: str, entity_id: str, after: int, limit: int
    ) -> list[Event]:
        """One entity's events with seq > ``after``, in seq order, at most ``limit``."""
        sid = canonical_id(space_id)
        if sid is None or limit <= 0:
            return []
        with translated():
            rows = await self.pool.fetch(
                f"SELECT {READ_COLUMNS} FROM events WHERE space_id = $1 AND entity_type = $2 "
                "AND entity_id = $3 AND seq > $4 ORDER BY seq LIMIT $5",
                sid,
                entity_type,
                entity_id,
                max(after, 0),
                limit,
            )
        return [event_from_row(r) for r in rows]

    # ------------------------------------------------------------------ replay, verify

    async def replay_entity(
        self, space_id: str, entity_type: str, entity_id: str, as_of_seq: int | None = None
    ) -> tuple[EntityState | None, int]:
        """The entity folded from the log up to ``as_of_seq`` (default and at most: the
        head), and that seq. One snapshot, so the seq and the events agree."""
        sid = canonical_id(space_id)
        if sid is None:
            return None, 0
        with translated():
            async with (
                self.pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                head = await conn.fetchval("SELECT head FROM spaces WHERE space_id = $1", sid)
                seq = min(head or 0, reads.BIG if as_of_seq is None else max(as_of_seq, 0))
                state = await reads.replay_entity(conn, sid, entity_type, entity_id, seq)
        return state, seq

    async def replay_space(
        self, space_id: str, as_of_seq: int | None = None
    ) -> tuple[dict[tuple[str, str], EntityState], int]:
        """Every entity of the space folded from the log up to ``as_of_seq``, and that seq."""
        sid = canonical_id(space_id)
        if sid is None:
            return {}, 0
        with translated():
            async with (
                self.pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                head = await conn.fetchval("SELECT head FROM spaces WHERE space_id = $1", sid)
                seq = min(head or 0, reads.BIG if as_of_seq is None else max(as_of_seq, 0))
                states = await reads.replay_space(conn, sid, seq)
        return states, seq

    async def verify(self, space_id: str) -> int | None:
        """Recompute the hash chain; the first broken seq, or None when intact."""
        sid = canonical_id(space_id)
        if sid is None:
            return None
        with translated():
            async with (
                self.pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await reads.verify(conn, sid)
