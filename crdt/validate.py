"""Operation validity: docs/protocol.md section 2's rules, then the schema's field rules.

Pure functions called by the event store for each pushed op, in the order of docs/protocol.md
section 2.5: `check_shape`, `check_lamport_headroom`, `check_preds`, `check_schema` (`validate`
runs all).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import msgspec

from crdt.ops import CLIENT_KINDS, FIELD_KINDS, LIFECYCLE_KINDS, Op
from crdt.order import DEFAULT_LAMPORT_HEADROOM, MAX_LAMPORT, MAX_PRED, MAX_SAFE_INT
from crdt.schema import FieldSpec, Schema

__all__ = [
    "ENTITY_ID_PATTERN",
    "UUID_PATTERN",
    "PredTarget",
    "Target",
    "Violation",
    "canonical_op",
    "canonical_value",
    "check_lamport_headroom",
    "check_preds",
    "check_schema",
    "check_shape",
    "is_canonical_uuid",
    "is_rfc3339_utc",
    "plain_text",
    "plainly_valid",
    "validate",
]

#: A UUID in canonical form (lower case, hyphenated): the one pattern every layer uses.
UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: An entity id (docs/protocol.md section 2).
ENTITY_ID_PATTERN = r"[A-Za-z0-9_:.\-]{1,128}"
_UUID_RE = re.compile(UUID_PATTERN)
_ENTITY_ID_RE = re.compile(ENTITY_ID_PATTERN)
_TIMESTAMP_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z", re.ASCII
)
_KIND_ALLOWED = {"lww": {"set"}, "mv": {"set"}, "counter": {"inc"}, "set": {"add", "remove"}}


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """Why an op is rejected: an error `code` of docs/protocol.md section 4.2 and a message
    naming the field."""

    code: str
    message: str


class Target(Protocol):
    """What `check_preds` reads of an op named in a `pred`: a `PredTarget`, or any record
    with these attributes (the event store passes the events it just numbered)."""

    @property
    def op_id(self) -> str: ...
    @property
    def entity_type(self) -> str: ...
    @property
    def entity_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def field(self) -> str | None: ...
    @property
    def value(self) -> Any: ...
    @property
    def lamport(self) -> int: ...


class PredTarget(msgspec.Struct, frozen=True, kw_only=True):
    """What `check_preds` needs of an op named in a `pred`: stored, or earlier in the push."""

    op_id: str
    entity_type: str
    entity_id: str
    kind: str
    field: str | None
    value: Any
    lamport: int


def _invalid(message: str) -> Violation:
    return Violation(code="invalid_op", message=message)


def is_canonical_uuid(s: object) -> bool:
    """True for a UUID string in lowercase canonical 8-4-4-4-12 form."""
    return isinstance(s, str) and _UUID_RE.fullmatch(s) is not None


def plain_text(s: str) -> bool:
    """True when `s` holds no NUL and no unpaired surrogate (docs/protocol.md section 2): text that
    every client can decode and PostgreSQL can store. ASCII text needs one scan for NUL."""
    if s.isascii():
        return "\x00" not in s
    if "\x00" in s:
        return False
    try:
        s.encode("utf-8")  # refuses exactly the unpaired surrogates
    except UnicodeEncodeError:
        return False
    return True


_TEXT_PROBLEM = "must not contain NUL or an unpaired surrogate"


def _is_int(v: object) -> bool:
    """An integer in the JSON sense: bool is not one."""
    return isinstance(v, int) and not isinstance(v, bool)


def _value_shape_problem(value: Any) -> str | None:
    """Walk a value (nested lists and dicts too, keys included) for non-finite floats,
    unsafe integers and strings that are not plain text."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if not plain_text(v):
                return f"strings in a value {_TEXT_PROBLEM}"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return "numbers must be finite"
        elif _is_int(v):
            if not -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
                return "integers must lie within ±(2^53-1)"
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
            stack.extend(v.keys())
    return None


def _ids_problem(op: Op) -> str | None:
    if not is_canonical_uuid(op.op_id):
        return "op_id must be a lowercase canonical UUID"
    if not isinstance(op.entity_type, str):
        return "entity_type must be a string"
    if not plain_text(op.entity_type):
        return f"entity_type {_TEXT_PROBLEM}"
    if not isinstance(op.entity_id, str) or not _ENTITY_ID_RE.fullmatch(op.entity_id):
        return "entity_id must be 1..128 characters of [A-Za-z0-9_:.-]"
    if not isinstance(op.kind, str) or op.kind not in CLIENT_KINDS:
        return f"unknown kind {op.kind!r}"
    if op.kind in FIELD_KINDS:
        if not isinstance(op.field, str):
            return f"{op.kind} needs a field"
        if not plain_text(op.field):
            return f"field {_TEXT_PROBLEM}"
    elif op.field is not None:
        return f"{op.kind} takes no field"
    elif op.value is not None:
        return f"{op.kind} takes no value"
    return None


def _pred_problem(op: Op) -> str | None:
    pred = op.pred
    if not isinstance(pred, tuple | list):
        return "pred must be a list of op_ids"
    if pred and op.kind in ("add", "inc"):
        return f"pred must be empty for {op.kind}"
    if len(pred) > MAX_PRED:
        return f"pred holds {len(pred)} entries, at most {MAX_PRED} are allowed"
    if len(set(pred)) != len(pred):
        return "pred entries must be distinct"
    for p in pred:
        if not is_canonical_uuid(p):
            return f"pred entry {p!r} is not a lowercase canonical UUID"
        if p == op.op_id:
            return "pred names the op itself"
    return None


def _shape_problem(op: Op) -> str | None:
    """The first section-2 rule ``op`` breaks that needs nothing stored, or None."""
    problem = _ids_problem(op) or _value_shape_problem(op.value) or _pred_problem(op)
    if problem is None and (not _is_int(op.lamport) or not 1 <= op.lamport <= MAX_LAMPORT):
        problem = "lamport must be an integer in 1..2^53-1"
    return problem


_uuid_match = _UUID_RE.fullmatch
_entity_id_match = _ENTITY_ID_RE.fullmatch


def plainly_valid(op: Op) -> bool:
    """True for an op that certainly passes `check_shape`: exact types, ASCII names, a
    scalar value (null, plain text, a boolean or an integer within ±(2^53-1)), well-formed
    pred. Others (floats, nested values, anything odd) go the long way, which also names
    the problem. Every op this accepts, `_shape_problem` accepts."""
    kind, value, pred, lamport, entity_type, field = (
        op.kind,
        op.value,
        op.pred,
        op.lamport,
        op.entity_type,
        op.field,
    )
    vtype = type(value)
    return (
        type(op.op_id) is str
        and _uuid_match(op.op_id) is not None
        and type(entity_type) is str
        and entity_type.isascii()
        and "\x00" not in entity_type
        and type(op.entity_id) is str
        and _entity_id_match(op.entity_id) is not None
        and (
            type(field) is str and field.isascii() and "\x00" not in field
            if kind in FIELD_KINDS
            else kind in LIFECYCLE_KINDS and field is None and value is None
        )
        and (
            value is None
            or (vtype is str and ("\x00" not in value if value.isascii() else plain_text(value)))
            or vtype is bool
            or (vtype is int and -MAX_SAFE_INT <= value <= MAX_SAFE_INT)
        )
        and type(lamport) is int
        and 1 <= lamport <= MAX_LAMPORT
        and type(pred) is tuple
        and (not pred or _plain_pred(op.op_id, kind, pred))
    )


def _plain_pred(op_id: str, kind: str, pred: tuple[str, ...]) -> bool:
    """A non-empty pred of distinct canonical UUIDs, not the op's own, on a kind that
    takes one (one entry, the usual case, without building a set)."""
    if kind == "add" or kind == "inc" or len(pred) > MAX_PRED or op_id in pred:
        return False
    if len(pred) == 1:
        p = pred[0]
        return type(p) is str and _uuid_match(p) is not None
    return all(type(p) is str and _uuid_match(p) is not None for p in pred) and len(
        set(pred)
    ) == len(pred)


def check_shape(op: Op) -> Violation | None:
    """Check the section-2 rules that need nothing stored: ids, kind, field, numbers, pred."""
    if plainly_valid(op):  # the common case, without building a message
        return None
    problem = _shape_problem(op)
    return None if problem is None else _invalid(problem)


def check_lamport_headroom(
    lamport: int, space_max_lamport: int, headroom: int = DEFAULT_LAMPORT_HEADROOM
) -> Violation | None:
    """Refuse a lamport more than `headroom` above the space's highest stored lamport; the
    message says how high the op may go."""
    cap = space_max_lamport + headroom
    if lamport > cap:
        return _invalid(
            f"lamport {lamport} is more than {headroom} above the space's highest stored "
            f"lamport {space_max_lamport}; at most {cap}"
        )
    return None


def _same_value(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1, 1.0 and true are three different elements."""
    return type(a) is type(b) and a == b


def _target_problem(op: Op, t: Target) -> str | None:
    """Why the stored op `t` may not appear in `op`'s pred (None when it may)."""
    if t.entity_type != op.entity_type or t.entity_id != op.entity_id:
        return "names an op of another entity"
    kind = op.kind
    if kind == "set":
        if t.kind != "set" or t.field != op.field:
            return f"names no set of field {op.field!r}"
    elif kind == "remove":
        if t.kind != "add" or t.field != op.field or not _same_value(t.value, op.value):
            return f"names no add of this element in field {op.field!r}"
    elif kind in LIFECYCLE_KINDS:
        if t.kind not in LIFECYCLE_KINDS:
            return "names no delete or restore"
    else:
        return f"{kind} supersedes nothing"
    if t.lamport >= op.lamport:
        return f"names an op with lamport {t.lamport}, not lower than {op.lamport}"
    return None


def check_preds(op: Op, targets: Mapping[str, Target]) -> Violation | None:
    """Check every pred entry names a fitting op with a lower lamport.

    `targets` maps op_ids to the stored ops, or the earlier valid ops of the same push,
    they name; an entry it lacks names nothing usable (unknown, or rejected in the push).
    """
    for p in op.pred:
        t = targets.get(p)
        problem = "names no stored op" if t is None else _target_problem(op, t)
        if problem is not None:
            return _invalid(f"pred entry {p} {problem}")
    return None


def is_rfc3339_utc(s: str) -> bool:
    """True for an RFC 3339 timestamp in UTC with a `Z` suffix, naming a real instant."""
    m = _TIMESTAMP_RE.fullmatch(s)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    return True


def _kind_ok(value: Any, kind: str) -> bool:
    """Does a non-null value have the JSON type the value kind asks for?"""
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "timestamp":
        return isinstance(value, str) and is_rfc3339_utc(value)
    if kind == "integer":
        return _is_int(value)
    return _is_int(value) or isinstance(value, float)


_JSON_TYPE_NAMES = {"str": "string", "float": "float", "bool": "boolean", "int": "integer"}


def _json_type(value: Any) -> str:
    """Name a value's JSON type for messages."""
    name = type(value).__name__
    return _JSON_TYPE_NAMES.get(name, "array" if isinstance(value, list | tuple) else name)


def _value_problem(value: Any, spec: FieldSpec) -> tuple[str, str] | None:
    """Check one value (or element, or delta) against the field: (code, message) or None."""
    if value is None:
        return None if spec.nullable else ("type_mismatch", "must not be null")
    if not _kind_ok(value, spec.value):
        if spec.value == "timestamp" and isinstance(value, str):
            return ("type_mismatch", "expected an RFC 3339 UTC timestamp ending in Z")
        return ("type_mismatch", f"expected {spec.value}, got {_json_type(value)}")
    if isinstance(value, str):
        if spec.max_length is not None and len(value) > spec.max_length:
            return ("too_large", f"longer than {spec.max_length} characters")
    elif spec.max_abs is not None and abs(value) > spec.max_abs:
        return ("too_large", f"beyond ±{spec.max_abs}")
    return None


def check_schema(op: Op, schema: Schema) -> Violation | None:
    """Check the op against the schema: known type and field, allowed kind, value, limits."""
    type_spec = schema.entity_types.get(op.entity_type)
    if type_spec is None or op.entity_type.startswith("_"):
        return Violation(
            code="unknown_entity_type", message=f"unknown entity type {op.entity_type!r}"
        )
    if op.kind in LIFECYCLE_KINDS or op.field is None:
        return None
    where = f"{op.entity_type}.{op.field}"
    spec = type_spec.fields.get(op.field)
    if spec is None:
        return Violation(code="unknown_field", message=f"unknown field {where}")
    if op.kind not in _KIND_ALLOWED[spec.type]:
        return Violation(
            code="type_mismatch", message=f"{where}: {op.kind} is not allowed on a {spec.type}"
        )
    problem = _value_problem(op.value, spec)
    if problem is None:
        return None
    code, message = problem
    return Violation(code=code, message=f"{where}: {message}")


def validate(
    op: Op,
    schema: Schema,
    targets: Mapping[str, Target],
    space_max_lamport: int,
    headroom: int = DEFAULT_LAMPORT_HEADROOM,
) -> Violation | None:
    """Run every check in the order of docs/protocol.md 2.5; return the first violation, or None."""
    return (
        check_shape(op)
        or check_lamport_headroom(op.lamport, space_max_lamport, headroom)
        or check_preds(op, targets)
        or check_schema(op, schema)
    )


def canonical_value(value: Any) -> Any:
    """Canonicalise a numeric alias: an integral float within ±(2^53-1) becomes an int.

    1.0 and 1 are the same JSON number (RFC 8785 writes both as `1`), so a `number`
    field stores the int; other values come back unchanged.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INT:
        return int(value)
    return value


def canonical_op(op: Op, schema: Schema) -> Op:
    """Return `op` with its value canonicalised when it writes a `number` field."""
    type_spec = schema.entity_types.get(op.entity_type)
    spec = None if type_spec is None or op.field is None else type_spec.fields.get(op.field)
    if spec is None or spec.value != "number":
        return op
    value = canonical_value(op.value)
    if value is op.value:
        return op
    return msgspec.structs.replace(op, value=value)
