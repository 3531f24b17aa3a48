"""Raw pushed operations (decoded JSON values) to ``crdt.Op``, one result per op.

PROTOCOL section 2 gives every op its own result, so nothing here raises: a value that
is not an object, a missing or wrongly typed field, or an op of another space becomes an
``invalid_op`` violation for that op alone. UUIDs are lowercased (PROTOCOL: "ids are
lowercased"); the formats themselves, kinds, numbers and ``pred`` rules are checked by
``crdt.validate``, which runs after this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crdt import Op, Violation
from crdt.validate import is_canonical_uuid

__all__ = ["MAX_CLIENT_TIME", "ParsedOp", "parse_op", "push_space", "result_op_id"]

MAX_CLIENT_TIME = 64
_MISSING = object()


@dataclass(frozen=True, slots=True)
class ParsedOp:
    """A well-typed op of the push's space; ``op`` carries lowercased ids and the pushing
    device; ``device_id`` is the one the op named (lowercased), if any."""

    op: Op
    space_id: str
    client_time: str | None
    device_id: str | None


def _invalid(message: str) -> Violation:
    return Violation(code="invalid_op", message=message)


def result_op_id(raw: Any) -> str | None:
    """The ``op_id`` to echo in an op's result: as sent when it is a string."""
    if isinstance(raw, dict):
        op_id = raw.get("op_id")
        if isinstance(op_id, str):
            return op_id
    return None


def push_space(ops: Sequence[Any]) -> str | None:
    """The push's space: the first op's ``space_id`` when it is a UUID (lowercased)."""
    if not ops or not isinstance(ops[0], dict):
        return None
    space_id = ops[0].get("space_id")
    if not isinstance(space_id, str):
        return None
    space_id = space_id.lower()
    return space_id if is_canonical_uuid(space_id) else None


def _text(raw: dict[str, Any], name: str, *, optional: bool = False) -> str | Violation | None:
    value = raw.get(name, _MISSING)
    if value is _MISSING or value is None:
        return None if optional else _invalid(f"{name} is required")
    if not isinstance(value, str):
        return _invalid(f"{name} must be a string")
    return value


def _plain_text(value: str) -> bool:
    """Storable as PostgreSQL text: no NUL, valid Unicode (no lone surrogates)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _client_time(raw: dict[str, Any]) -> str | Violation | None:
    value = _text(raw, "client_time", optional=True)
    if isinstance(value, str) and (len(value) > MAX_CLIENT_TIME or not _plain_text(value)):
        return _invalid(f"client_time must be text of at most {MAX_CLIENT_TIME} characters")
    return value


def _pred(raw: dict[str, Any]) -> tuple[str, ...] | Violation:
    value = raw.get("pred", _MISSING)
    if value is _MISSING or value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        return _invalid("pred must be a list of op_id strings")
    return tuple(p.lower() for p in value)


def parse_op(raw: Any, space_id: str | None, device_id: str) -> ParsedOp | Violation:
    """Type-check one raw op of a push whose space is ``space_id`` (None: no space).

    The op is stamped with the pushing ``device_id``; the one it named, if any, is kept
    in ``ParsedOp.device_id`` for the ``device_mismatch`` check."""
    if not isinstance(raw, dict):
        return _invalid("an operation must be a JSON object")
    if space_id is None:
        return _invalid("the push has no space: the first op needs a valid space_id")
    texts: dict[str, str | None] = {}
    for name in ("op_id", "space_id", "entity_type", "entity_id", "kind"):
        got = _text(raw, name)
        if isinstance(got, Violation):
            return got
        texts[name] = got
    op_space = str(texts["space_id"]).lower()
    if op_space != space_id:
        return _invalid("every op of a push must name the push's space (the first op's)")
    field = _text(raw, "field", optional=True)
    if isinstance(field, Violation):
        return field
    sent_device = _text(raw, "device_id", optional=True)
    if isinstance(sent_device, Violation):
        return sent_device
    client_time = _client_time(raw)
    if isinstance(client_time, Violation):
        return client_time
    pred = _pred(raw)
    if isinstance(pred, Violation):
        return pred
    lamport = raw.get("lamport")
    if not isinstance(lamport, int) or isinstance(lamport, bool):
        return _invalid("lamport must be an integer")
    op = Op(
        op_id=str(texts["op_id"]).lower(),
        entity_type=str(texts["entity_type"]),
        entity_id=str(texts["entity_id"]),
        kind=str(texts["kind"]),
        field=field,
        value=raw.get("value"),
        pred=pred,
        lamport=lamport,
        device_id=device_id,
    )
    return ParsedOp(
        op=op,
        space_id=op_space,
        client_time=client_time,
        device_id=None if sent_device is None else sent_device.lower(),
    )
