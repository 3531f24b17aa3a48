"""Ports: the Protocols that adapters implement (``eventstore/postgres.py``, the NATS bus).

The gateway, projector and scheduler depend on these, never on an adapter's internals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
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


class EventStore(Protocol):
    """The append-only log (PROTOCOL sections 2 and 4, DESIGN invariants 1-5)."""

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

    async def change_member(
        self, *, space_id: str, user_id: str, role: Role | None, by: str
    ) -> Event | None:
        """Add, re-role (``role``) or remove (``None``) a member under the space lock.

        Writes the member event; returns None when nothing changed; raises
        ``core.errors.Conflict`` when the last owner would be removed or demoted."""
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
