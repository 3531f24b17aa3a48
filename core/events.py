"""The NATS contract: every subject Concord uses and every message sent on it.

This module is the only place a subject is spelled (:class:`Names`; a test refuses
subject strings built anywhere else). Every message has a consumer:

| ``Names.…`` (subject) | payload | from -> to |
| --- | --- | --- |
| ``space`` (``<prefix>.space.<id>``) | :class:`SpaceHint` | gateway, scheduler -> gateways |
| ``log_subject`` (``<prefix>.log.<id>``) | ``list[wire.Event]`` (JetStream) | relay -> projector |
| ``reminders_subject`` (``.reminders.<id>``) | :class:`ReminderChange` | projector -> scheduler |
| ``notifications`` (``.notifications.<id>``) | :class:`NotificationEnvelope` | scheduler -> gw |
| ``revocations`` (``<prefix>.revocations``) | :class:`Revocation` | gateway -> gateways |
| ``membership`` (``<prefix>.membership.<id>``) | :class:`MembershipChange` | gateway -> gateways |

The log's JetStream stream is ``<prefix>_LOG`` (``stream``); a message holds a run of
consecutive events of one space, its id ``<space_id>:<first seq>-<last seq>``
(``msg_id``); the projector's durable consumers are ``projector_<slot>`` (``durable``);
projector/stream.py configures them.

All are hints: every consumer can recover what it missed from PostgreSQL. Every
process that commits events (the gateway for pushes and member changes, the scheduler
for ``reminder_fired`` / ``reminder_skipped``) announces them with
:func:`publish_space_hint`, the one place a space hint is built and published.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import structlog

from core.settings import Settings
from core.wire import Event, Notification

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
    #: The events ``first_seq..last_seq`` themselves when there are few (at most
    #: ``HINT_EVENTS``), so that gateways need not read them back; empty otherwise.
    events: list[Event] = msgspec.field(default_factory=list)


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

    session_ids: list[str] = msgspec.field(default_factory=list)
    #: Token generations (refresh tokens) revoked without their whole session.
    token_ids: list[str] = msgspec.field(default_factory=list)


class MembershipChange(_Payload, frozen=True, kw_only=True):
    """A member's role changed at ``seq`` (``role`` None: removed)."""

    space_id: str
    user_id: str
    role: str | None
    seq: int


ENCODER = msgspec.json.Encoder()
#: A space hint carries its events when there are at most this many, and when they
#: keep it under ``HINT_BYTES`` (far below NATS's 1 MB default payload limit: a hint too
#: large to publish would be lost whole, seqs included).
HINT_EVENTS = 200
HINT_BYTES = 64 * 1024

#: Every space: the last token of a subject that names one (``Names.space(ANY)``).
ANY = "*"


@dataclass(frozen=True)
class Names:
    """Subjects, the log's stream and its consumers for one deployment (one NATS
    prefix): deployments and test runs sharing a NATS server never see each other."""

    prefix: str
    #: The log stream's ``max_bytes`` (``CONCORD_NATS_STREAM_MAX_BYTES``; the oldest
    #: messages go first past it). JetStream reserves it from the server's storage when
    #: the stream is made: a server with less room refuses the stream ("insufficient
    #: storage resources available").
    stream_max_bytes: int = Settings().nats_stream_max_bytes

    def space(self, space_id: str) -> str:
        """:class:`SpaceHint` of a space: seqs are committed."""
        return f"{self.prefix}.space.{space_id}"

    def membership(self, space_id: str) -> str:
        """:class:`MembershipChange` of a space (``ANY``: every space)."""
        return f"{self.prefix}.membership.{space_id}"

    def notifications(self, space_id: str) -> str:
        """:class:`NotificationEnvelope` of a space (``ANY``: every space)."""
        return f"{self.prefix}.notifications.{space_id}"

    @property
    def revocations(self) -> str:
        """:class:`Revocation`: one subject for the deployment."""
        return f"{self.prefix}.revocations"

    @property
    def stream(self) -> str:
        """The JetStream stream of the log (projector/stream.py configures it)."""
        return f"{self.prefix}_LOG"

    @property
    def log_wildcard(self) -> str:
        return self.log_subject(ANY)

    def log_subject(self, space_id: str) -> str:
        """A run of a space's events (a JSON array of ``wire.Event``), published by the
        outbox relay."""
        return f"{self.prefix}.log.{space_id}"

    def reminders_subject(self, space_id: str) -> str:
        """:class:`ReminderChange` of a space (``ANY``: every space)."""
        return f"{self.prefix}.reminders.{space_id}"

    def durable(self, slot: int) -> str:
        """The durable JetStream consumer of projector instance slot ``slot``."""
        return f"projector_{slot}"

    @staticmethod
    def msg_id(space_id: str, first: int, last: int) -> str:
        """The JetStream message id of the run of events ``first..last`` of a space: a
        repeat of it is dropped by the server."""
        return f"{space_id}:{first}-{last}"


def space_hint(
    prefix: str,
    space_id: str,
    first_seq: int,
    last_seq: int,
    committed_at: float,
    events: list[Event] | None = None,
) -> tuple[str, bytes]:
    """The subject and payload announcing that seqs ``first_seq..last_seq`` of
    ``space_id`` are committed (``committed_at``: epoch seconds of the COMMIT), with
    ``events`` (exactly those seqs) when given and few enough."""
    carried = events if events and len(events) <= HINT_EVENTS else []
    if carried and (carried[0].seq, carried[-1].seq) != (first_seq, last_seq):
        carried = []
    hint = SpaceHint(
        space_id=space_id,
        first_seq=first_seq,
        last_seq=last_seq,
        committed_at=committed_at,
        events=carried,
    )
    payload = ENCODER.encode(hint)
    if carried and len(payload) > HINT_BYTES:
        payload = ENCODER.encode(msgspec.structs.replace(hint, events=[]))
    return Names(prefix).space(space_id), payload


async def publish_space_hint(
    bus: Bus, prefix: str, space_id: str, first_seq: int, last_seq: int
) -> None:
    """Announce that seqs ``first_seq..last_seq`` of ``space_id`` are committed.

    Call it only after COMMIT returned. Best effort: a lost hint delays delivery until
    the gateways' next head check, so broker trouble is logged and never raised."""
    # just after COMMIT returned: close enough for fanout
    subject, payload = space_hint(prefix, space_id, first_seq, last_seq, time.time())
    try:
        await bus.publish(subject, payload)
    except Exception as exc:  # the bus swallows broker trouble; belt and braces
        log.warning("hint not published", subject=subject, error=str(exc))
