"""Building blocks of vectors: deterministic ids, a history builder, the vectors' schema.

Op_ids and device ids are fixed UUIDs derived from names, so a regenerated file only
differs where the merge rules' results do.
"""

from __future__ import annotations

import uuid
from typing import Any

from crdt import DEFAULT_SCHEMA, EntityTypeSpec, FieldSpec, Op, Schema

__all__ = ["SCHEMA", "History", "device", "op_id"]

_NAMESPACE = uuid.UUID("6f1d3c2a-9b8e-4c7d-a6f5-e4d3c2b1a090")

SCHEMA = Schema(
    version=2,
    entity_types={
        **DEFAULT_SCHEMA.entity_types,
        "board": EntityTypeSpec(
            fields={
                "score": FieldSpec(type="lww", value="number", nullable=True),
                "owners": FieldSpec(type="mv", value="string"),
                "numbers": FieldSpec(type="set", value="integer"),
                "votes": FieldSpec(type="counter", value="integer"),
            }
        ),
    },
)
"""The default schema (docs/protocol.md section 3) plus `board`, which has the shapes the task
app lacks: a number field, integer set elements, an mv field of plain strings."""


def op_id(tag: str) -> str:
    """A canonical UUID named by `tag` (its order among others is arbitrary but fixed)."""
    return str(uuid.uuid5(_NAMESPACE, tag))


def device(n: int) -> str:
    """The device_id of simulated device `n`."""
    return f"dddddddd-0000-4000-8000-{n:012x}"


class History:
    """Ops of one vector, built in a causal order; `ops` is that order."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.ops: list[Op] = []

    def op(
        self,
        kind: str,
        entity_id: str = "t-1",
        field: str | None = None,
        value: Any = None,
        *,
        lamport: int,
        dev: int = 1,
        pred: tuple[Op, ...] = (),
        entity_type: str = "task",
        op_id_: str | None = None,
    ) -> Op:
        """Append one op; `pred` names earlier ops of this history."""
        made = Op(
            op_id=op_id_ or op_id(f"{self.name}/{len(self.ops)}"),
            entity_type=entity_type,
            entity_id=entity_id,
            kind=kind,
            field=field,
            value=value,
            pred=tuple(p.op_id for p in pred),
            lamport=lamport,
            device_id=device(dev),
        )
        self.ops.append(made)
        return made

    def again(self, op: Op) -> Op:
        """List `op` once more: a duplicate delivery."""
        self.ops.append(op)
        return op
