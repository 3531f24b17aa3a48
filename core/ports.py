"""Ports: the Protocols that adapters implement (``eventstore/postgres.py``, the NATS bus).

The gateway, projector and scheduler depend on these, never on an adapter's internals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from core.wire import Event, OpResult, Role

if TYPE_CHECKING:
    from crdt import EntityState


class AppendOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one push produced. ``events`` are the newly stored events, in seq order."""

    space_id: str | None
    results: list[OpResult]
    server_lamport: int
    events: list[Event]
    head: int


class ServerAppend(msgspec.Struct, frozen=True, kw_only=True):
    """A server event's place in its space; ``duplicate`` when its op_id was stored before."""

    event: Event
    duplicate: bool


class Membership(msgspec.Struct, frozen=True, kw_only=True):
    """A user's current place in a space: the role and the seq of the member event that
    gave it (a removal after ``since_seq`` ends this membership)."""

    role: Role
    since_seq: int


class SpaceMembership(msgspec.Struct, frozen=True, kw_only=True):
    space_id: str
    name: str
    role: Role
    personal: bool


class Invitation(msgspec.Struct, frozen=True, kw_only=True):
    """A pending invitation (its code is never stored, only the code's digest)."""

    invitation_id: str
    space_id: str
    email: str
    role: Role
    invited_by: str
    created_at: datetime
    expires_at: datetime


class RoleChange(msgspec.Struct, frozen=True, kw_only=True):
    """An invitation to a member's email: their role, set at once. ``event`` is the
    ``member_role_changed`` event, None when they already held that role."""

    space_id: str
    user_id: str
    role: Role
    event: Event | None


class Acceptance(msgspec.Struct, frozen=True, kw_only=True):
    """An accepted invitation: the space, the caller's role in it now, and the member
    event it wrote (None when the caller already held that role or a higher one)."""

    space_id: str
    role: Role
    event: Event | None


class EventStore(Protocol):
    """The append-only log (docs/protocol.md sections 2 and 4; docs/architecture.md
    invariants 1-5)."""

    async def append(self, *, user_id: str, device_id: str, ops: Sequence[Any]) -> AppendOutcome:
        """Store one push: the space is the first op's; one result per op, after COMMIT."""
        ...

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
        """Append a server event whose op_id is an HMAC of ``key``; a repeat is a duplicate."""
        ...

    async def create_space(self, *, name: str, creator_user_id: str, personal: bool) -> str:
        """Create a space with its creator as owner (``member_added`` is seq 1)."""
        ...

    async def create_space_in(
        self, conn: Any, *, name: str, creator_user_id: str, personal: bool
    ) -> str:
        """``create_space`` inside the caller's open transaction on ``conn`` (a connection
        to the store's database): it commits, or rolls back, with the caller's work."""
        ...

    async def change_member(
        self, *, space_id: str, user_id: str, role: Role | None, by: str
    ) -> Event | None:
        """Add, re-role (``role``) or remove (``None``) a member under the space lock.

        Writes the member event; returns None when nothing changed; raises
        ``core.errors.Conflict`` when the last owner would be removed or demoted. An
        owner who loses the role loses every pending invitation they sent, in the same
        transaction."""
        ...

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
        """Under the space lock: when ``user_id`` (the account of ``email``, if any) is a
        member, set their role at once; otherwise store a pending invitation, replacing
        the email's pending one. Raises ``core.errors.Forbidden`` unless ``by`` is an
        owner then, ``core.errors.NotFound`` for an unknown space, and
        ``core.errors.Conflict`` for demoting the last owner."""
        ...

    async def accept_invitation(self, *, code_digest: bytes, user_id: str) -> Acceptance | None:
        """Use the pending, unexpired invitation with this code digest, in one transaction
        under the space lock, if its inviter is still an owner; None otherwise. Accepting
        never lowers a role: a member keeps a higher one. The invitation is used up."""
        ...

    async def invitations_of(
        self, space_id: str, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[Invitation]:
        """Pending, unexpired invitations of a space in (created_at, invitation_id) order."""
        ...

    async def cancel_invitation(self, *, space_id: str, invitation_id: str) -> bool:
        """Withdraw a pending invitation; False when the space has no such invitation."""
        ...

    async def role_of(self, space_id: str, user_id: str) -> Role | None: ...

    async def membership(self, space_id: str, user_id: str) -> Membership | None:
        """The user's role in the space with its ``since_seq``; None for a non-member."""
        ...

    async def removal_after(self, space_id: str, user_id: str, after: int) -> Event | None:
        """The first ``member_removed`` of ``user_id`` in the space with seq > ``after``."""
        ...

    async def spaces_of(self, user_id: str) -> list[SpaceMembership]: ...

    async def members_of(self, space_id: str) -> dict[str, Role]: ...

    async def head(self, space_id: str) -> int: ...

    async def read(self, space_id: str, after: int, limit: int) -> list[Event]:
        """Events with seq > ``after``, in seq order, at most ``limit``."""
        ...

    async def entity_events(
        self, space_id: str, entity_type: str, entity_id: str, after: int, limit: int
    ) -> list[Event]: ...

    async def max_lamport(self, space_ids: Sequence[str]) -> int:
        """The highest lamport stored in any of ``space_ids`` (0 if none)."""
        ...

    async def replay_entity(
        self, space_id: str, entity_type: str, entity_id: str, as_of_seq: int | None = None
    ) -> tuple[EntityState | None, int]:
        """The entity folded from the log alone up to ``as_of_seq`` (default: head), and the
        seq the state reflects. None when the entity has no event."""
        ...

    async def replay_space(
        self, space_id: str, as_of_seq: int | None = None
    ) -> tuple[dict[tuple[str, str], EntityState], int]:
        """Every entity of the space folded from the log up to ``as_of_seq``, and that seq."""
        ...

    async def verify(self, space_id: str) -> int | None:
        """Recompute the hash chain; the first broken seq, or None when intact."""
        ...


Handler = Callable[[str, bytes], Awaitable[None]]


class Bus(Protocol):
    """Fan-out (core NATS subjects); never trusted for completeness."""

    async def publish(self, subject: str, payload: bytes) -> None: ...

    async def subscribe(self, subject: str, handler: Handler) -> object: ...

    async def unsubscribe(self, token: object) -> None: ...

    @property
    def connected(self) -> bool: ...
