"""After COMMIT, one place: everything this gateway commits is announced from here.

The gateway's event store is :class:`AnnouncingStore`. Each of its writes (a push, a
member added, re-roled or removed, an accepted invitation) hands what it committed,
once COMMIT has returned, to :class:`Announcer`, which

1. gives the events to this gateway's own feeds at once (``Local.committed``): its
   subscribers get them without a read back from PostgreSQL, and a removal ends the
   removed member's subscriptions on this gateway (``Local.member_changed``);
2. queues the space hint (``core.events``; for a member change also the
   ``MembershipChange``) for the other gateways. One background task publishes the
   queue, merging the hints of one space, so no answer ever waits on NATS.

Hints are best effort (docs/architecture.md, write path step 7): a hint lost in the
queue (a crash) only delays delivery until the feeds' head check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from core.events import ENCODER, MembershipChange, Names, space_hint
from core.ports import (
    Acceptance,
    AppendOutcome,
    Bus,
    Invitation,
    RoleChange,
    ServerAppend,
    ServerEvent,
    ServerOutcome,
)
from core.wire import Event, Role
from eventstore.postgres import PostgresEventStore

log = structlog.get_logger("concord.gateway.committed")


class Local(Protocol):
    """This gateway's WebSocket layer, as the announcer feeds it."""

    def committed(self, space_id: str, events: Sequence[Event], committed_at: float) -> None: ...

    def member_changed(self, change: MembershipChange) -> None: ...


def membership_change(event: Event) -> MembershipChange:
    """The ``MembershipChange`` of a member event (role None: removed)."""
    value = event.value if isinstance(event.value, dict) else {}
    role = value.get("role") if event.kind != "member_removed" else None
    return MembershipChange(
        space_id=event.space_id,
        user_id=event.entity_id,
        role=role if isinstance(role, str) else None,
        seq=event.seq,
    )


class Announcer:
    """Hands committed events to this gateway's feeds and hints the other gateways."""

    def __init__(self, bus: Bus, prefix: str, *, publish: bool = True) -> None:
        self.bus = bus
        self.prefix = prefix
        self.names = Names(prefix)
        #: False only as a test fault hook: no hint leaves this gateway, as if it died
        #: after every COMMIT (its own feeds are still handed the events).
        self.publish = publish
        self.local: Local | None = None
        #: Space hints not yet published: space_id -> (first_seq, last_seq, committed_at,
        #: the events when every one of first..last is held, else None).
        self._hints: dict[str, tuple[int, int, float, list[Event] | None]] = {}
        self._changes: list[MembershipChange] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ after COMMIT

    def committed(self, space_id: str | None, events: Sequence[Event]) -> None:
        """``events`` (in seq order) of ``space_id`` are committed. Never blocks."""
        if space_id is None or not events:
            return
        now = time.time()
        if self.local is not None:
            self.local.committed(space_id, events, now)
        if self.publish:
            self._queue(space_id, list(events), now)
            self._wake.set()

    def _queue(self, space_id: str, events: list[Event], now: float) -> None:
        """Queue the hint of ``events``, merged with one of the same space still queued
        (it keeps the events only while they stay contiguous)."""
        first, last = events[0].seq, events[-1].seq
        held: list[Event] | None = events
        queued = self._hints.get(space_id)
        if queued is not None:
            q_first, q_last, _, q_events = queued
            joined = q_events is not None and q_last + 1 == first
            held = q_events + events if joined and q_events is not None else None
            first, last = min(first, q_first), max(last, q_last)
        self._hints[space_id] = (first, last, now, held)

    def member_changed(self, event: Event | None) -> None:
        """A member event is committed: its space hint, and the change itself."""
        if event is None:
            return
        self.committed(event.space_id, [event])
        change = membership_change(event)
        if self.local is not None:
            self.local.member_changed(change)
        if self.publish:
            self._changes.append(change)
            self._wake.set()

    # ------------------------------------------------------------------ publishing

    async def start(self) -> None:
        self._task = asyncio.create_task(self._publish_forever(), name="hint-publisher")

    async def close(self) -> None:
        """Publish what is queued, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Publish every queued hint and membership change now."""
        hints, self._hints = self._hints, {}
        changes, self._changes = self._changes, []
        for space_id, (first, last, at, events) in hints.items():
            await self._send(*space_hint(self.prefix, space_id, first, last, at, events))
        for change in changes:
            await self._send(self.names.membership(change.space_id), ENCODER.encode(change))

    async def _send(self, subject: str, payload: bytes) -> None:
        try:
            await self.bus.publish(subject, payload)
        except Exception as exc:  # the bus swallows broker trouble; belt and braces
            log.warning("hint not published", subject=subject, error=str(exc))

    async def _publish_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()


class AnnouncingStore(PostgresEventStore):
    """The event store as the gateway uses it: each write hands what it committed to
    the announcer once COMMIT has returned (the one place hints start from)."""

    def __init__(self, pool: Any, *, announcer: Announcer, **options: Any) -> None:
        super().__init__(pool, **options)
        self.announcer = announcer

    async def append(self, *, user_id: str, device_id: str, ops: Sequence[Any]) -> AppendOutcome:
        outcome = await super().append(user_id=user_id, device_id=device_id, ops=ops)
        self.announcer.committed(outcome.space_id, outcome.events)
        return outcome

    async def append_server_event(self, **fields: Any) -> ServerAppend:
        appended = await super().append_server_event(**fields)
        if not appended.duplicate:
            self.announcer.committed(appended.event.space_id, [appended.event])
        return appended

    async def append_server_events(self, events: Sequence[ServerEvent]) -> list[ServerOutcome]:
        outcomes = await super().append_server_events(events)
        by_space: dict[str, list[Event]] = {}
        for outcome in outcomes:
            if isinstance(outcome, ServerAppend) and not outcome.duplicate:
                by_space.setdefault(outcome.event.space_id, []).append(outcome.event)
        for space_id, stored in by_space.items():
            self.announcer.committed(space_id, stored)
        return outcomes

    async def change_member(
        self, *, space_id: str, user_id: str, role: Role | None, by: str
    ) -> Event | None:
        event = await super().change_member(space_id=space_id, user_id=user_id, role=role, by=by)
        self.announcer.member_changed(event)
        return event

    async def invite(self, **fields: Any) -> Invitation | RoleChange:
        outcome = await super().invite(**fields)
        if isinstance(outcome, RoleChange):
            self.announcer.member_changed(outcome.event)
        return outcome

    async def accept_invitation(self, *, code_digest: bytes, user_id: str) -> Acceptance | None:
        accepted = await super().accept_invitation(code_digest=code_digest, user_id=user_id)
        if accepted is not None:
            self.announcer.member_changed(accepted.event)
        return accepted
