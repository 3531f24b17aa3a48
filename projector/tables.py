"""The SQL of the read model, for the live tables or the rebuild's shadow tables.

The same statements serve both: ``Tables`` names the tables a statement works on
(states, checkpoints, quarantine), so a rebuild catches its shadow up with exactly the
code the live projector runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

STATE_COLUMNS: tuple[str, ...] = (
    "space_id",
    "entity_type",
    "entity_id",
    "state",
    "applied_seq",
    "deleted",
    "has_client_events",
    "title",
    "done",
    "due_at",
    "remind_at",
    "list_id",
    "remind_at_op_id",
)

_ARRAY_TYPES = (
    "text[]",
    "text[]",
    "bytea[]",
    "bigint[]",
    "boolean[]",
    "boolean[]",
    "text[]",
    "boolean[]",
    "timestamptz[]",
    "timestamptz[]",
    "text[]",
    "uuid[]",
)


@dataclass(frozen=True)
class Tables:
    """A read model's tables: entity states, per-space checkpoints, and the events set
    aside because they could not be applied (docs/projector.md, "Quarantine")."""

    states: str = "entity_states"
    checkpoints: str = "projector_checkpoints"
    quarantine: str = "projector_quarantine"

    @cached_property
    def lock_checkpoint(self) -> str:
        # FOR UPDATE: the one lock that serialises every writer of a space's read model
        # (projector instances, a rebuild's swap), held until the batch commits.
        return f"SELECT seq FROM {self.checkpoints} WHERE space_id = $1 FOR UPDATE"

    @cached_property
    def create_checkpoint(self) -> str:
        return (
            f"INSERT INTO {self.checkpoints} (space_id, seq) VALUES ($1, 0) "
            "ON CONFLICT (space_id) DO NOTHING"
        )

    @cached_property
    def set_checkpoint(self) -> str:
        return f"UPDATE {self.checkpoints} SET seq = $2 WHERE space_id = $1"

    @cached_property
    def load_states(self) -> str:
        return (
            f"SELECT entity_type, entity_id, state, done, deleted, remind_at_op_id::text "
            f"FROM {self.states} WHERE space_id = $1 AND (entity_type, entity_id) IN "
            "(SELECT * FROM unnest($2::text[], $3::text[]))"
        )

    @cached_property
    def upsert_states(self) -> str:
        args = ", ".join(f"${i + 2}::{t}" for i, t in enumerate(_ARRAY_TYPES))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in STATE_COLUMNS[3:])
        return (
            f"INSERT INTO {self.states} ({', '.join(STATE_COLUMNS)}) "
            f"SELECT $1::uuid, u.* FROM unnest({args}) AS u "
            f"ON CONFLICT (space_id, entity_type, entity_id) DO UPDATE SET {updates}"
        )

    # Several spaces in one transaction (projector.batch): the same statements over arrays.

    @cached_property
    def create_checkpoints(self) -> str:
        return (
            f"INSERT INTO {self.checkpoints} (space_id, seq) SELECT unnest($1::uuid[]), 0 "
            "ON CONFLICT (space_id) DO NOTHING"
        )

    @cached_property
    def lock_checkpoints(self) -> str:
        # SKIP LOCKED: a space another writer holds (the tick, another instance) is left
        # out rather than waited for while the batch holds all the others (a convoy).
        return (
            f"SELECT space_id::text, seq FROM {self.checkpoints} "
            "WHERE space_id = ANY($1::uuid[]) ORDER BY space_id FOR UPDATE SKIP LOCKED"
        )

    @cached_property
    def set_checkpoints(self) -> str:
        return (
            f"UPDATE {self.checkpoints} AS c SET seq = u.seq "
            "FROM unnest($1::uuid[], $2::bigint[]) AS u(space_id, seq) "
            "WHERE c.space_id = u.space_id"
        )

    @cached_property
    def load_states_of_spaces(self) -> str:
        return (
            "SELECT space_id::text, entity_type, entity_id, state, done, deleted, "
            f"remind_at_op_id::text FROM {self.states} "
            "WHERE (space_id, entity_type, entity_id) IN "
            "(SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]))"
        )

    @cached_property
    def upsert_states_of_spaces(self) -> str:
        args = ", ".join(f"${i + 1}::{t}" for i, t in enumerate(("uuid[]", *_ARRAY_TYPES)))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in STATE_COLUMNS[3:])
        return (
            f"INSERT INTO {self.states} ({', '.join(STATE_COLUMNS)}) "
            f"SELECT u.* FROM unnest({args}) AS u "
            f"ON CONFLICT (space_id, entity_type, entity_id) DO UPDATE SET {updates}"
        )

    @cached_property
    def add_quarantined(self) -> str:
        return (
            f"INSERT INTO {self.quarantine} "
            "(space_id, seq, op_id, entity_type, entity_id, error_type, error) "
            "VALUES ($1, $2, $3::uuid, $4, $5, $6, $7) ON CONFLICT (space_id, seq) DO NOTHING"
        )

    def each(self) -> tuple[str, str, str]:
        """Every table, in the order writers lock them (checkpoint row first)."""
        return (self.checkpoints, self.states, self.quarantine)


LIVE = Tables()
SHADOW = Tables(
    "entity_states_rebuild", "projector_checkpoints_rebuild", "projector_quarantine_rebuild"
)


def columns_of(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Row tuples (without space_id) turned into the column arrays ``upsert_states`` takes."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 12
