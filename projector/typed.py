"""Typed columns of ``entity_states``: what the reference app and the scheduler query.

Derived from the merged state alone (so a rebuild or a verify recomputes them exactly):
``deleted`` and ``has_client_events`` for every entity; for tasks the lww winners of
``title``, ``done``, ``due_at``, ``remind_at``, ``list_id``, and the op_id of the winning
non-null ``remind_at`` set, which is the reminder's id (docs/protocol.md section 7).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from crdt import EntityState

TASK = "task"


class Typed(NamedTuple):
    """The typed columns of one entity, in ``entity_states`` column order."""

    deleted: bool
    has_client_events: bool
    title: str | None
    done: bool | None
    due_at: datetime | None
    remind_at: datetime | None
    list_id: str | None
    remind_at_op_id: str | None


#: (reminder_id, done, deleted): the reminder id fixes the time (one set, one value).
ReminderKey = tuple[str | None, bool, bool]


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 ``...Z`` string as an aware datetime (microseconds); None otherwise."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _winner(state: EntityState, name: str) -> tuple[Any, str | None]:
    """(value, op_id) of an lww field's winning set; (None, None) when never written."""
    head = state.winning_set(name)
    return (None, None) if head is None else (head.value, head.op_id)


def _typed_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def derive(state: EntityState) -> tuple[Typed, str | None]:
    """The typed columns of ``state`` (task fields null for other entity types), and the
    winning ``remind_at`` as stored (an RFC 3339 ``Z`` string) when it is a reminder."""
    deleted = state.deleted_by() is not None
    if state.entity_type != TASK:
        return Typed(deleted, state.has_client_events, None, None, None, None, None, None), None
    remind_value, remind_op = _winner(state, "remind_at")
    remind_at = parse_timestamp(remind_value)
    done = _winner(state, "done")[0]
    typed = Typed(
        deleted=deleted,
        has_client_events=state.has_client_events,
        title=_typed_str(_winner(state, "title")[0]),
        done=done if isinstance(done, bool) else None,
        due_at=parse_timestamp(_winner(state, "due_at")[0]),
        remind_at=remind_at,
        list_id=_typed_str(_winner(state, "list_id")[0]),
        remind_at_op_id=remind_op if remind_at is not None else None,
    )
    return typed, remind_value if remind_at is not None else None


def reminder_key(reminder_id: str | None, done: bool | None, deleted: bool) -> ReminderKey:
    """What decides a task's reminder; a change of it is published as ``ReminderChange``."""
    return (reminder_id, done is True, deleted)
