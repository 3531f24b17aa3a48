"""Ports: the Protocols that adapters implement (``eventstore/postgres.py``, the NATS bus).

The gateway, projector and scheduler depend on these, never on an adapter's internals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from core.errors import ConcordError
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


class ServerEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One server event of a batch (``EventStore.append_server_events``): the fields of
    ``append_server_event``; its op_id is an HMAC of ``key``."""

    space_id: str
    kind: str
    entity_type: str
    entity_id: str
    value: Any
    key: str


#: What appending one server event of a batch gave: the stored event (new, or the one
#: stored before under its op_id), or the non-retryable error that kept it out.
ServerOutcome = ServerAppend | ConcordError


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
    invariants 1-5). Every implementation passes ``tests/integration/test_store_contract.py``.

    What a store promises, whatever it is built on:

    * each space's events are numbered 1, 2, 3... without gaps, in commit order; a
      reader never sees seq N+1 before N; nothing stored is ever changed or removed;
    * a space is created with its creator's ``member_added`` as seq 1; every membership
      change is an event of the space, ordered against pushes: a push is checked
      against the roles as they are when it is stored;
    * an op_id is stored at most once per space: the same payload again is
      ``duplicate`` (with the first seq), another payload ``op_id_conflict``;
    * a push is answered op by op, in input order, only once durable, and either all
      its valid ops are stored or none (then it raises ``core.errors.Unavailable``);
    * malformed ids read as unknown (empty, 0, None), never as an error.
    """

    async def append(self, *, user_id: str, device_id: str, ops: Sequence[Any]) -> AppendOutcome:
        """Store one push: the space is the first op's; one result per op, after COMMIT.

        Checks, in docs/protocol.md section 2.5's order: the space and the caller's role
        (``not_found`` for every op of a non-member or unknown space, ``forbidden`` for a
        reader; nothing stored), then each op's validity (``invalid_op`` and the schema's
        codes), then idempotency. ``device_id`` must be a UUID (``ValueError``)."""
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
        """Append a server event whose op_id is an HMAC of ``key``; a repeat is a duplicate.

        Raises ``core.errors.NotFound`` for an unknown (or malformed) space."""
        ...

    async def append_server_events(self, events: Sequence[ServerEvent]) -> list[ServerOutcome]:
        """Append many server events in ONE transaction: ``append_server_event`` for each,
        at the cost of one (the scheduler's batch of reminder events).

        One outcome per event, in input order: a ``ServerAppend`` (``duplicate`` when
        the key's event was stored before, by an earlier call or earlier in this same
        batch: then the stored event, and nothing new), or the non-retryable error that
        kept that event out (``core.errors.NotFound`` for an unknown or malformed space)
        without keeping out the others. The new events of a space take consecutive seqs
        in input order, lamport the space's highest so far. Atomic: returns only once
        every new event is durable; a transient failure raises
        (``core.errors.Unavailable``) and stores none of them. An empty batch is ``[]``."""
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

    async def role_of(self, space_id: str, user_id: str) -> Role | None:
        """The user's current role in the space; None for a non-member."""
        ...

    async def membership(self, space_id: str, user_id: str) -> Membership | None:
        """The user's role in the space with its ``since_seq``; None for a non-member."""
        ...

    async def removal_after(self, space_id: str, user_id: str, after: int) -> Event | None:
        """The first ``member_removed`` of ``user_id`` in the space with seq > ``after``."""
        ...

    async def spaces_of(self, user_id: str) -> list[SpaceMembership]:
        """The user's spaces with their roles, oldest first."""
        ...

    async def members_of(self, space_id: str) -> dict[str, Role]:
        """Every member of the space with their role."""
        ...

    async def head(self, space_id: str) -> int:
        """The space's last seq (0 for an unknown space)."""
        ...

    async def read(self, space_id: str, after: int, limit: int) -> list[Event]:
        """Events with seq > ``after``, in seq order, at most ``limit``."""
        ...

    def iter_events(
        self, space_id: str, after: int = 0, up_to: int | None = None
    ) -> AsyncIterator[Event]:
        """Events with ``after < seq <= up_to`` (default: to the end) in seq order, as a
        stream: any range in flat memory. Close it (``contextlib.aclosing``) when left
        early: it may hold a connection."""
        ...

    async def entity_events(
        self, space_id: str, entity_type: str, entity_id: str, after: int, limit: int
    ) -> list[Event]:
        """One entity's events with seq > ``after``, in seq order, at most ``limit``."""
        ...

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
