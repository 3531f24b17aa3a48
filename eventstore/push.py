"""A push before it reaches the database: parsed, checked and hashed in the caller's task.

Everything docs/protocol.md section 2 asks of an op that needs nothing stored is done here,
outside the transaction and its locks: types and ``crdt.check_shape`` (``invalid_op``; a
NUL or an unpaired surrogate in any string of the op is one, so no such string ever
reaches a SQL parameter),
``device_mismatch``, ``crdt.check_schema`` (kept aside: it is reported only when the
stored-state checks, lamport headroom and ``pred``, pass, to keep the order of codes of
docs/protocol.md section 2.5), the canonical value and the payload hash. The transaction
(eventstore/append.py) then only runs the checks that need the stored log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from core.canonical import CanonicalError, canonical_json
from core.errors import ErrorBody
from core.ops import ParsedOp, client_time_ok, parse_op, push_space, result_op_id
from core.ports import AppendOutcome
from core.wire import DEFAULT_LIMITS, OpResult
from crdt import Op, Schema, Violation, check_schema, check_shape, plainly_valid
from eventstore.chain import payload_digest


class Checked(msgspec.Struct):
    """An op that passed every check needing nothing stored (``late`` aside). (A Struct:
    made once per pushed op, and cheaper to build than a dataclass.)"""

    #: Ids lowercased, ``device_id`` the pushing device's; of the push's space.
    op: Op
    client_time: str | None
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


def _value_verdict(op: Op, value_json: bytes, schema: Schema, max_bytes: int) -> Violation | None:
    """The schema's verdict, then the published ``max_value_bytes`` (the canonical JSON of
    the value): both are the field's limits, reported after the checks needing the log."""
    verdict = check_schema(op, schema)
    if verdict is None and len(value_json) > max_bytes:
        return Violation(
            code="too_large",
            message=f"the value is {len(value_json)} bytes of JSON; at most {max_bytes}",
        )
    return verdict


def _checked(
    op: Op,
    space_id: str,
    client_time: str | None,
    value_json: bytes,
    schema: Schema,
    max_bytes: int,
) -> Checked:
    digest = payload_digest(
        op.op_id,
        space_id,
        op.entity_type,
        op.entity_id,
        op.kind,
        op.field,
        value_json,
        op.pred,
        op.lamport,
    )
    return Checked(
        op, client_time, _value_verdict(op, value_json, schema, max_bytes), value_json, digest
    )


def _check(parsed: ParsedOp | Violation, device_id: str, schema: Schema, max_bytes: int) -> Item:
    """Every check of an op, in the order of docs/protocol.md section 2.5, naming the first
    problem (the long way)."""
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
    return _checked(op, parsed.space_id, parsed.client_time, value_json, schema, max_bytes)


_convert = msgspec.convert
_replace = msgspec.structs.replace
#: msgspec writes the scalars ``plainly_valid`` allows as RFC 8785 does.
_ENCODE_SCALAR = msgspec.json.encode


def _check_plain(
    raw: Any, space_id: str, device_id: str, schema: Schema, max_bytes: int
) -> Checked | None:
    """The common op in few steps, or None to take the long way (which names problems).

    Accepts only what the long way accepts, with the same result: a dict naming the
    push's space exactly and no device, whose fields ``msgspec.convert`` types straight
    into ``crdt.Op`` (the types of ``core.wire.Operation``), and that is
    ``crdt.plainly_valid`` as sent (so its ids are already lowercase and its value a
    scalar, whose JSON msgspec writes canonically). tests/property/test_push_fast_path.py
    holds the two ways to the same answers."""
    if type(raw) is not dict or raw.get("space_id") != space_id or "device_id" in raw:
        return None
    client_time = raw.get("client_time")
    if client_time is not None and not client_time_ok(client_time):
        return None
    try:
        op = _convert(raw, Op)
    except msgspec.ValidationError:
        return None
    if not plainly_valid(op):
        return None  # floats, containers, text that is not plain, anything odd: the long way
    value_json = _ENCODE_SCALAR(op.value)  # plain text and safe scalars: always encodable
    plain = _replace(op, device_id=device_id)
    return _checked(plain, space_id, client_time, value_json, schema, max_bytes)


def prepare(
    user_id: str,
    device_id: str,
    ops: Sequence[Any],
    schema: Schema,
    max_value_bytes: int = DEFAULT_LIMITS.max_value_bytes,
) -> Push:
    """Parse, check and hash every raw op of a push (CPU only; no database)."""
    space_id = push_space(ops)
    device = device_id.lower()
    echo_ids: list[str | None] = []
    items: list[Item] = []
    for raw in ops:
        item = (
            None
            if space_id is None
            else _check_plain(raw, space_id, device, schema, max_value_bytes)
        )
        if item is None:
            echo_ids.append(result_op_id(raw))
            parsed = parse_op(raw, space_id, device)
            items.append(_check(parsed, device, schema, max_value_bytes))
        else:
            echo_ids.append(raw["op_id"])
            items.append(item)
    return Push(
        user_id=user_id.lower(),
        device_id=device,
        space_id=space_id,
        echo_ids=echo_ids,
        items=items,
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
