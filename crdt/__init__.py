"""Concord's merge rules, schema and entity state: pure functions and data.

Imports only the standard library (no module that does I/O) and msgspec; no asyncio, no
clock, no randomness.
"""

from __future__ import annotations

from crdt.ops import CLIENT_KINDS, FIELD_KINDS, LIFECYCLE_KINDS, SERVER_KINDS, Op
from crdt.order import (
    DEFAULT_LAMPORT_HEADROOM,
    MAX_LAMPORT,
    MAX_PRED,
    MAX_SAFE_INT,
    LamportClock,
    order_key,
)
from crdt.schema import (
    DEFAULT_SCHEMA,
    EntityTypeSpec,
    FieldSpec,
    FieldType,
    Schema,
    SchemaError,
    SchemaFile,
    ValueKind,
    compatibility_problems,
    load_schema,
    parse_schema,
    schema_problems,
    schema_to_json,
)
from crdt.state import (
    ApplyResult,
    EntityState,
    EntityView,
    FieldView,
    Head,
    decode_state,
    encode_state,
    fold,
)
from crdt.validate import (
    PredTarget,
    Target,
    Violation,
    canonical_op,
    canonical_value,
    check_lamport_headroom,
    check_preds,
    check_schema,
    check_shape,
    plain_text,
    plainly_valid,
    validate,
)

__all__ = [
    "CLIENT_KINDS",
    "DEFAULT_LAMPORT_HEADROOM",
    "DEFAULT_SCHEMA",
    "FIELD_KINDS",
    "LIFECYCLE_KINDS",
    "MAX_LAMPORT",
    "MAX_PRED",
    "MAX_SAFE_INT",
    "SERVER_KINDS",
    "ApplyResult",
    "EntityState",
    "EntityTypeSpec",
    "EntityView",
    "FieldSpec",
    "FieldType",
    "FieldView",
    "Head",
    "LamportClock",
    "Op",
    "PredTarget",
    "Schema",
    "SchemaError",
    "SchemaFile",
    "Target",
    "ValueKind",
    "Violation",
    "canonical_op",
    "canonical_value",
    "check_lamport_headroom",
    "check_preds",
    "check_schema",
    "check_shape",
    "compatibility_problems",
    "decode_state",
    "encode_state",
    "fold",
    "load_schema",
    "order_key",
    "parse_schema",
    "plain_text",
    "plainly_valid",
    "schema_problems",
    "schema_to_json",
    "validate",
]
