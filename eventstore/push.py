"""A push before it reaches the database: parsed, checked and hashed in the caller's task.

Everything PROTOCOL section 2 asks of an op that needs nothing stored is done here,
outside the transaction and its locks: types and ``crdt.check_shape`` (``invalid_op``),
``device_mismatch``, ``crdt.check_schema`` (kept aside: it is reported only when the
stored-state checks, lamport headroom and ``pred``, pass, to keep PROTOCOL's order of
codes), the canonical value and the payload hash. The transaction (eventstore/append.py)
then only runs the checks that need the stored log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from core.canonical import CanonicalError, canonical_json
from core.errors import ErrorBody
from core.ops import ParsedOp, parse_op, push_space, result_op_id
from core.ports import AppendOutcome
from core.wire import OpResult
from crdt import Schema, Violation, check_schema, check_shape
from eventstore.chain import payload_digest


class Checked(msgspec.Struct):
    """An op that passed every check needing nothing stored (``late`` aside). (A Struct:
    made once per pushed op, and cheaper to build than a dataclass.)"""

    parsed: ParsedOp
    #: The schema's verdict, reported after the headroom and pred checks.
    late: Violation | None
    #: Canonical JSON of the value, and the payload hash (for duplicates and the chain).
    value_json: bytes
    digest: bytes


Item = Checked | Violation


@dataclass
class Push:
    """One caller's push, ready to join a group."""

    user_id: str
    device_id: str
    space_id: str | None
    echo_ids: list[str | None]
    items: list[Item]


def _check(parsed: ParsedOp | Violation, device_id: str, schema: Schema) -> Item:
    if isinstance(parsed, Violation):
        return parsed
    op = parsed.op
    violation = check_shape(op)
    if violation is not None:
        return violation
    if parsed.device_id is not None and parsed.device_id != device_id:
        return Violation(code="device_mismatch", message="the op names another device")
    try:
        value_json = canonical_json(op.value)
    except CanonicalError as exc:
        return Violation(code="invalid_op", message=str(exc))
    digest = payload_digest(
        op.op_id,
        parsed.space_id,
        op.entity_type,
        op.entity_id,
        op.kind,
        op.field,
        value_json,
        op.pred,
        op.lamport,
    )
    return Checked(parsed, check_schema(op, schema), value_json, digest)


def prepare(user_id: str, device_id: str, ops: Sequence[Any], schema: Schema) -> Push:
    """Parse, check and hash every raw op of a push (CPU only; no database)."""
    space_id = push_space(ops)
    device = device_id.lower()
    return Push(
        user_id=user_id.lower(),
        device_id=device,
        space_id=space_id,
        echo_ids=[result_op_id(raw) for raw in ops],
        items=[_check(parse_op(raw, space_id, device), device, schema) for raw in ops],
    )


def rejected(op_id: str | None, code: str, message: str) -> OpResult:
    return OpResult(
        op_id=op_id,
        status="rejected",
        error=ErrorBody(code=code, message=message, retryable=False),
    )


def refuse_all(push: Push, code: str, message: str, lamport: int, head: int) -> AppendOutcome:
    """Every op of ``push`` rejected with the same code; nothing stored."""
    return AppendOutcome(
        space_id=push.space_id,
        results=[rejected(op_id, code, message) for op_id in push.echo_ids],
        server_lamport=lamport,
        events=[],
        head=head,
    )
