"""Operations to ``crdt.Op``: raw pushed ones (decoded JSON values), one result per op;
and stored ones, as wire events (``op_from_event``) or as rows (``op_from_row``, the one
conversion of a stored row: the event store's reads, the projector's folds).

docs/protocol.md section 2 gives every op its own result, so parsing raises nothing: a value that
is not an object, a missing or wrongly typed field, or an op of another space becomes an
``invalid_op`` violation for that op alone. Ids are taken in any spelling ``uuid.UUID``
accepts and known from then on in their canonical form (docs/protocol.md section 2); the formats
themselves, kinds, numbers, text and ``pred`` rules are checked
by ``crdt.validate``, which runs after this. The strings only this module sees
(``client_time``, a named ``device_id``) are held to the same rule as every other string a
client sends: no NUL, no unpaired surrogate (``crdt.plain_text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from core.ids import canonical_id
from core.wire import Event, Operation
from crdt import Op, Violation, plain_text
from crdt.validate import is_canonical_uuid

__all__ = [
    "MAX_CLIENT_TIME",
    "ParsedOp",
    "StoredRow",
    "client_time_ok",
    "op_from_event",
    "op_from_row",
    "parse_op",
    "push_space",
    "result_op_id",
]

MAX_CLIENT_TIME = 64
_REQUIRED = ("op_id", "space_id", "entity_type", "entity_id", "kind")


class ParsedOp(msgspec.Struct, frozen=True):
    """A well-typed op of the push's space; ``op`` carries lowercased ids and the pushing
    device; ``device_id`` is the one the op named (lowercased), if any. (A Struct: made
    once per pushed op, and cheaper to build than a frozen dataclass.)"""

    op: Op
    space_id: str
    client_time: str | None
    device_id: str | None


def _invalid(message: str) -> Violation:
    return Violation(code="invalid_op", message=message)


def result_op_id(raw: Any) -> str | None:
    """The ``op_id`` to echo in an op's result: its canonical form when it is a UUID in
    any spelling, else as sent when it is a string."""
    if isinstance(raw, dict):
        op_id = raw.get("op_id")
        if isinstance(op_id, str):
            return canonical_id(op_id) or op_id
    return None


def uuid_of(raw: str) -> str:
    """An id of an op in its canonical form when it is a UUID in any spelling (docs/protocol.md
    section 2); otherwise as sent, for ``crdt.check_shape`` to refuse (``invalid_op``).
    The hyphenated 36-character form, the one clients send, costs one ``lower`` (so a
    string of that shape that is not hex comes back lowercased, and is refused all the
    same)."""
    if len(raw) == 36 and raw[8] == raw[13] == raw[18] == raw[23] == "-":
        return raw.lower()
    return canonical_id(raw) or raw


def push_space(ops: Sequence[Any]) -> str | None:
    """The push's space: the first op's ``space_id`` when it is a UUID (canonical form)."""
    if not ops or not isinstance(ops[0], dict):
        return None
    space_id = ops[0].get("space_id")
    if not isinstance(space_id, str):
        return None
    space_id = uuid_of(space_id)
    return space_id if is_canonical_uuid(space_id) else None


def client_time_ok(value: object) -> bool:
    """A storable ``client_time``: plain text of at most MAX_CLIENT_TIME characters."""
    return type(value) is str and len(value) <= MAX_CLIENT_TIME and plain_text(value)


_TEXT_PROBLEM = "must not contain NUL or an unpaired surrogate"


def _type_problem(raw: dict[str, Any]) -> Violation:
    """The violation of an op whose fields have the wrong types (the slow path)."""
    for name in _REQUIRED:
        value = raw.get(name)
        if value is None:
            return _invalid(f"{name} is required")
        if not isinstance(value, str):
            return _invalid(f"{name} must be a string")
    for name in ("field", "device_id"):
        if not isinstance(raw.get(name, ""), str | None):
            return _invalid(f"{name} must be a string")
    client_time = raw.get("client_time")
    if client_time is not None and not client_time_ok(client_time):
        if isinstance(client_time, str) and len(client_time) <= MAX_CLIENT_TIME:
            return _invalid(f"client_time {_TEXT_PROBLEM}")
        return _invalid(f"client_time must be text of at most {MAX_CLIENT_TIME} characters")
    pred = raw.get("pred")
    if pred is not None and (
        not isinstance(pred, list) or not all(isinstance(p, str) for p in pred)
    ):
        return _invalid("pred must be a list of op_id strings")
    return _invalid("lamport must be an integer")


class _PushedOp(Operation, frozen=True, kw_only=True):
    """``core.wire.Operation`` as a push is checked against it, in C by ``msgspec.convert``
    (strings exactly str, bool no int, other keys ignored), except that ``pred: null`` is
    taken as no pred, as it always was."""

    pred: list[str] | None = None  # type: ignore[assignment]


_convert = msgspec.convert


def parse_op(raw: Any, space_id: str | None, device_id: str) -> ParsedOp | Violation:
    """Type-check one raw op of a push whose space is ``space_id`` (None: no space).

    The op is stamped with the pushing ``device_id``; the one it named, if any, is kept
    in ``ParsedOp.device_id`` for the ``device_mismatch`` check."""
    if not isinstance(raw, dict):
        return _invalid("an operation must be a JSON object")
    if space_id is None:
        return _invalid("the push has no space: the first op needs a valid space_id")
    try:
        wire = _convert(raw, _PushedOp)
    except msgspec.ValidationError:
        return _type_problem(raw)  # the slow path names the problem
    client_time = wire.client_time
    if client_time is not None and not client_time_ok(client_time):
        return _type_problem(raw)
    op_space = uuid_of(wire.space_id)
    if op_space != space_id:
        return _invalid("every op of a push must name the push's space (the first op's)")
    pred = wire.pred
    sent_device = wire.device_id
    if sent_device is not None and not plain_text(sent_device):
        return _invalid(f"device_id {_TEXT_PROBLEM}")
    op = Op(
        op_id=uuid_of(wire.op_id),
        entity_type=wire.entity_type,
        entity_id=wire.entity_id,
        kind=wire.kind,
        field=wire.field,
        value=wire.value,
        pred=tuple([uuid_of(p) for p in pred]) if pred else (),
        lamport=wire.lamport,
        device_id=device_id,
    )
    return ParsedOp(
        op=op,
        space_id=op_space,
        client_time=client_time,
        device_id=None if sent_device is None else uuid_of(sent_device),
    )


def op_from_event(event: Event | Operation, device_id: str = "") -> Op:
    """The merge view of an event (server kinds included: they change no field), or of
    an operation not yet stored: then ``device_id`` is the pushing device's, used when
    the operation names none."""
    return Op(
        op_id=event.op_id,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        kind=event.kind,
        field=event.field,
        value=event.value,
        pred=tuple(event.pred),
        lamport=event.lamport,
        device_id=event.device_id or device_id,
    )


_decode_json = msgspec.json.decode


class StoredRow(Protocol):
    """A row of stored columns that slices like a tuple (a database record, a tuple)."""

    def __getitem__(self, index: slice, /) -> Sequence[Any]: ...


def op_from_row(row: StoredRow) -> Op:
    """The merge view of a stored event read as a row: ``(seq, op_id, entity_type,
    entity_id, kind, field, value, pred, lamport, device_id, ...)``, ids as text, the
    value as its stored JSON text (None for null); columns after the tenth are ignored.
    ``eventstore.rows.OP_COLUMNS`` selects that shape. One slice and one unpack: it runs
    once per event of a rebuild."""
    _, op_id, entity_type, entity_id, kind, field, value, pred, lamport, device_id = row[:10]
    return Op(
        op_id=op_id,
        entity_type=entity_type,
        entity_id=entity_id,
        kind=kind,
        field=field,
        value=None if value is None else _decode_json(value),
        pred=tuple(pred),
        lamport=lamport,
        device_id=device_id,
    )
