"""The read model's typed columns (projector/typed.py): what ``derive`` makes of a state.

The columns are what operators' SQL and the scheduler read (docs/projector.md, Read
model), so each must hold its field's winning value, typed, or null when the winner is
not of the column's type: nothing the projector writes may fail on an odd value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from crdt import EntityState, Op
from projector.typed import Typed, derive

DEVICE = "00000000-0000-4000-8000-0000000000dd"


def _state(entity_type: str = "task", **fields: Any) -> EntityState:
    """An entity whose fields were each set once, in order."""
    state = EntityState.new(entity_type, "t-1")
    for n, (name, value) in enumerate(fields.items(), start=1):
        state.apply(
            Op(
                op_id=f"00000000-0000-4000-8000-{n:012d}",
                entity_type=entity_type,
                entity_id="t-1",
                kind="set",
                field=name,
                value=value,
                lamport=n,
                device_id=DEVICE,
            )
        )
    return state


def test_every_column_holds_its_fields_winning_value() -> None:
    state = _state(
        title="Buy milk",
        done=True,
        due_at="2030-01-02T03:04:05Z",
        remind_at="2030-01-02T02:00:00Z",
        list_id="groceries",
    )
    typed, remind_value = derive(state)
    assert typed == Typed(
        deleted=False,
        has_client_events=True,
        title="Buy milk",
        done=True,
        due_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        remind_at=datetime(2030, 1, 2, 2, 0, tzinfo=UTC),
        list_id="groceries",
        remind_at_op_id="00000000-0000-4000-8000-000000000004",
    )
    assert remind_value == "2030-01-02T02:00:00Z"


def test_a_winner_of_another_type_leaves_its_column_null() -> None:
    # values no schema lets through, as a state read back from an older log may hold
    state = _state(title=7, done="yes", due_at="soon", remind_at=3, list_id=False)
    typed, remind_value = derive(state)
    assert typed == Typed(False, True, None, None, None, None, None, None)
    assert remind_value is None


def test_a_timestamp_without_an_offset_is_read_as_utc() -> None:
    typed, _ = derive(_state(due_at="2030-01-02T03:04:05"))
    assert typed.due_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_other_entity_types_have_no_task_columns() -> None:
    typed, remind_value = derive(_state("list", title="Home", remind_at="2030-01-02T02:00:00Z"))
    assert typed == Typed(False, True, None, None, None, None, None, None)
    assert remind_value is None
