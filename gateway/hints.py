"""Hints on core NATS after COMMIT (core/events.py): best effort, never fail the caller.

Consumers never trust them for completeness (docs/architecture.md, write path step 7): a
lost hint only delays a delivery until the next hint or a read from PostgreSQL.
"""

from __future__ import annotations

import msgspec
import structlog

from core.events import ENCODER, MembershipChange, publish_space_hint
from core.ports import Bus
from core.wire import Event

log = structlog.get_logger("concord.gateway.hints")


class Hints:
    """Publishes this deployment's hints (subjects ``<prefix>.<kind>.<space_id>``)."""

    def __init__(self, bus: Bus, prefix: str, *, publish_space: bool = True) -> None:
        self.bus = bus
        self.prefix = prefix
        self.publish_space = publish_space  # False only as a test fault hook: no hints

    async def space(self, space_id: str | None, events: list[Event]) -> None:
        """``<prefix>.space.<space_id>``: seqs first..last of the space are committed."""
        if space_id is None or not events or not self.publish_space:
            return
        await publish_space_hint(self.bus, self.prefix, space_id, events[0].seq, events[-1].seq)

    async def membership(self, event: Event | None) -> None:
        """After a member change: the space hint of its event, and the membership change
        (``<prefix>.membership.<space_id>``) so gateways stop a removed member at once."""
        if event is None or not self.publish_space:
            return
        await self.space(event.space_id, [event])
        value = event.value if isinstance(event.value, dict) else {}
        role = value.get("role")
        change = MembershipChange(
            space_id=event.space_id,
            user_id=event.entity_id,
            role=role if isinstance(role, str) else None,
            seq=event.seq,
        )
        await self._publish(f"{self.prefix}.membership.{event.space_id}", change)

    async def _publish(self, subject: str, payload: msgspec.Struct) -> None:
        try:
            await self.bus.publish(subject, ENCODER.encode(payload))
        except Exception as exc:  # the bus swallows broker trouble; belt and braces
            log.warning("hint not published", subject=subject, error=str(exc))
