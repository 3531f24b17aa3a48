"""Payloads on NATS subjects between Concord's own processes (not client wire types).

| subject | payload | from -> to |
| --- | --- | --- |
| ``<prefix>.space.<space_id>`` | :class:`SpaceHint` | gateway, scheduler after COMMIT -> gateways |
| ``<prefix>.log.<space_id>`` (JS) | ``wire.Event``, id ``<space>:<seq>`` | relay -> projector |
| ``<prefix>.projection.<space_id>`` | :class:`ProjectionChange` | projector -> anyone |
| ``<prefix>.reminders.<space_id>`` | :class:`ReminderChange` | projector -> scheduler |
| ``<prefix>.notifications.<space_id>`` | :class:`NotificationEnvelope` | scheduler -> gateways |
| ``<prefix>.revocations`` | :class:`Revocation` | gateway -> gateways |
| ``<prefix>.membership.<space_id>`` | :class:`MembershipChange` | gateway -> gateways |

All are hints: every consumer can recover what it missed from PostgreSQL. Every
process that commits events (the gateway for pushes and member changes, the scheduler
for ``reminder_fired`` / ``reminder_skipped``) announces them with
:func:`publish_space_hint`, the one place a space hint is built and published.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
import structlog

from core.wire import Notification

if TYPE_CHECKING:
    from core.ports import Bus

log = structlog.get_logger("concord.hints")


class _Payload(msgspec.Struct, frozen=True, kw_only=True):
    pass


class SpaceHint(_Payload, frozen=True, kw_only=True):
    """Seqs ``first_seq..last_seq`` of ``space_id`` are committed."""

    space_id: str
    first_seq: int
    last_seq: int
    #: Epoch seconds of the COMMIT (for ``concord_fanout_seconds``); 0 when unknown.
    committed_at: float = 0.0


class EntityRef(_Payload, frozen=True, kw_only=True):
    entity_type: str
    entity_id: str


class ProjectionChange(_Payload, frozen=True, kw_only=True):
    """The read model of ``space_id`` reflects ``seq``; these entities changed."""

    space_id: str
    seq: int
    entities: list[EntityRef]


class ReminderChange(_Payload, frozen=True, kw_only=True):
    """A task's reminder-relevant merged state after ``seq``.

    ``reminder_id`` is the op_id of the winning non-null ``remind_at`` set (None when
    the field is unset or null); ``remind_at`` its value (RFC 3339, ``Z``)."""

    space_id: str
    entity_type: str
    entity_id: str
    seq: int
    reminder_id: str | None
    remind_at: str | None
    done: bool
    deleted: bool


class NotificationEnvelope(_Payload, frozen=True, kw_only=True):
    """A fired reminder for the connected devices of the space's members."""

    space_id: str
    notification: Notification


class Revocation(_Payload, frozen=True, kw_only=True):
    """Sessions revoked (logout, device revocation, refresh reuse): close their sockets."""

    session_ids: list[str]
    #: Token generations (refresh tokens) revoked without their whole session.
    token_ids: list[str] = msgspec.field(default_factory=list)


class MembershipChange(_Payload, frozen=True, kw_only=True):
    """A member's role changed at ``seq`` (``role`` None: removed)."""

    space_id: str
    user_id: str
    role: str | None
    seq: int


ENCODER = msgspec.json.Encoder()


def space_subject(prefix: str, space_id: str) -> str:
    """``<prefix>.space.<space_id>``: where :class:`SpaceHint` messages of a space go."""
    return f"{prefix}.space.{space_id}"


async def publish_space_hint(
    bus: Bus, prefix: str, space_id: str, first_seq: int, last_seq: int
) -> None:
    """Announce that seqs ``first_seq..last_seq`` of ``space_id`` are committed.

    Call it only after COMMIT returned. Best effort: a lost hint delays delivery until
    the gateways' next head check, so broker trouble is logged and never raised."""
    hint = SpaceHint(
        space_id=space_id,
        first_seq=first_seq,
        last_seq=last_seq,
        committed_at=time.time(),  # just after COMMIT returned: close enough for fanout
    )
    subject = space_subject(prefix, space_id)
    try:
        await bus.publish(subject, ENCODER.encode(hint))
    except Exception as exc:  # the bus swallows broker trouble; belt and braces
        log.warning("hint not published", subject=subject, error=str(exc))
