"""Events of one space for the gateway's unit tests (feeds, subscriptions, announcer)."""

from __future__ import annotations

from core.wire import SERVER_DEVICE_ID, Event

SPACE = "0d8c6a52-5f0e-4a55-9a55-2f0d7b8e1c01"
USER = "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c02"
OTHER = "7c1e3f2a-9d2b-4d66-8b66-3a1e8c9f2d03"

_UNSET = object()


def event(
    seq: int, kind: str = "set", entity_id: str | None = None, value: object = _UNSET
) -> Event:
    """Event ``seq`` of ``SPACE``: a task's title, or a membership event of ``entity_id``
    (``USER`` unless named) whose value names that user."""
    member = kind.startswith("member_")
    entity = entity_id if entity_id is not None else (USER if member else "t-1")
    if value is _UNSET:
        value = {"user_id": entity} if member else "x"
    return Event(
        seq=seq,
        op_id=f"00000000-0000-4000-8000-{seq:012d}",
        space_id=SPACE,
        entity_type="_member" if member else "task",
        entity_id=entity,
        kind=kind,
        field=None if member else "title",
        value=value,
        lamport=seq,
        device_id=SERVER_DEVICE_ID,
        user_id=None,
        recorded_at="2026-12-05T00:00:00Z",
        schema_version=1,
    )
