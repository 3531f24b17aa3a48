"""The schema: entity types, fields, each field's merge rule and limits (docs/protocol.md 3.5).

Parsing and the compatibility check are pure. `load_schema` takes a `pathlib.Path` (or any
object with `name`, `suffix` and `read_bytes()`): the caller's object does the reading, so
this package still imports nothing that does I/O.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Literal, Protocol

import msgspec

from crdt.order import MAX_SAFE_INT

__all__ = [
    "DEFAULT_SCHEMA",
    "EntityTypeSpec",
    "FieldSpec",
    "FieldType",
    "Schema",
    "SchemaError",
    "SchemaFile",
    "ValueKind",
    "compatibility_problems",
    "load_schema",
    "parse_schema",
    "schema_problems",
    "schema_to_json",
]

FieldType = Literal["lww", "mv", "counter", "set"]
ValueKind = Literal["string", "boolean", "timestamp", "integer", "number"]

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
"""Entity type and field names; a leading `_` is reserved (`_member`, `_deleted`)."""

_SET_ELEMENT_KINDS = frozenset({"string", "integer"})
_NUMERIC_KINDS = frozenset({"integer", "number"})


class SchemaError(Exception):
    """A schema file or value is unusable; the message names what is wrong."""


class FieldSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One field: its merge rule (`type`), the kind of its values, and its limits.

    `max_length` bounds strings and set elements (characters); `max_abs` bounds counter
    deltas and integer or number values.
    """

    type: FieldType
    value: ValueKind
    nullable: bool = False
    max_length: int | None = None
    max_abs: int | None = None


class EntityTypeSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The fields of one entity type, by name."""

    fields: dict[str, FieldSpec]


class Schema(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A versioned schema; every event records the version it was validated against."""

    version: int
    entity_types: dict[str, EntityTypeSpec]


def _lww(value: ValueKind, *, nullable: bool = False, max_length: int | None = None) -> FieldSpec:
    return FieldSpec(type="lww", value=value, nullable=nullable, max_length=max_length)


DEFAULT_SCHEMA = Schema(
    version=1,
    entity_types={
        "task": EntityTypeSpec(
            fields={
                "title": _lww("string", max_length=500),
                "notes": _lww("string", max_length=10_000),
                "done": _lww("boolean"),
                "due_at": _lww("timestamp", nullable=True),
                "remind_at": _lww("timestamp", nullable=True),
                "position": _lww("string", max_length=64),
                "list_id": _lww("string", nullable=True),
                "assignee": FieldSpec(type="mv", value="string", nullable=True),
                "tags": FieldSpec(type="set", value="string", max_length=64),
                "pomodoros": FieldSpec(type="counter", value="integer", max_abs=1_000_000),
            }
        ),
        "list": EntityTypeSpec(
            fields={
                "name": _lww("string", max_length=200),
                "archived": _lww("boolean"),
            }
        ),
    },
)
"""The reference task app's schema: exactly the table of docs/protocol.md 3.6, version 1."""


def _field_problems(where: str, spec: FieldSpec) -> list[str]:
    """Rules a field spec must meet beyond its JSON shape."""
    problems: list[str] = []
    if spec.type == "counter" and spec.value != "integer":
        problems.append(f"{where}: a counter holds integer deltas, not {spec.value}")
    if spec.type == "set" and spec.value not in _SET_ELEMENT_KINDS:
        problems.append(f"{where}: set elements are strings or integers, not {spec.value}")
    if spec.nullable and spec.type in ("counter", "set"):
        problems.append(f"{where}: a {spec.type} field cannot be nullable")
    if spec.max_length is not None:
        if spec.value != "string":
            problems.append(f"{where}: max_length applies to string values only")
        elif spec.max_length < 1:
            problems.append(f"{where}: max_length must be at least 1")
    if spec.max_abs is not None:
        if spec.value not in _NUMERIC_KINDS:
            problems.append(f"{where}: max_abs applies to integer and number values only")
        elif not 0 <= spec.max_abs <= MAX_SAFE_INT:
            problems.append(f"{where}: max_abs must lie in 0..2^53-1")
    return problems


def schema_problems(schema: Schema) -> list[str]:
    """Return what makes a well-shaped schema unusable (empty when it is usable)."""
    problems: list[str] = []
    if schema.version < 1:
        problems.append("version must be at least 1")
    for type_name, type_spec in schema.entity_types.items():
        if not NAME_RE.fullmatch(type_name):
            problems.append(f"entity type {type_name!r}: names are [A-Za-z][A-Za-z0-9_]{{0,63}}")
        for field_name, spec in type_spec.fields.items():
            where = f"{type_name}.{field_name}"
            if not NAME_RE.fullmatch(field_name):
                problems.append(f"field {where!r}: names are [A-Za-z][A-Za-z0-9_]{{0,63}}")
            problems.extend(_field_problems(where, spec))
    return problems


def parse_schema(data: bytes | str, fmt: Literal["toml", "json"]) -> Schema:
    """Parse and check a schema document; raise SchemaError naming the first thing wrong."""
    raw: Any
    try:
        if fmt == "toml":
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            raw = tomllib.loads(text)
        else:
            raw = msgspec.json.decode(data)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, msgspec.DecodeError) as e:
        raise SchemaError(f"schema is not valid {fmt.upper()}: {e}") from e
    try:
        schema = msgspec.convert(raw, Schema, strict=True)
    except msgspec.ValidationError as e:
        raise SchemaError(f"schema: {e}") from e
    problems = schema_problems(schema)
    if problems:
        raise SchemaError("schema: " + "; ".join(problems))
    return schema


class SchemaFile(Protocol):
    """A schema file as `load_schema` reads it; `pathlib.Path` is one."""

    @property
    def name(self) -> str: ...

    @property
    def suffix(self) -> str: ...

    def read_bytes(self) -> bytes: ...


def load_schema(path: SchemaFile) -> Schema:
    """Read a schema file: `.toml` (tomllib) or `.json`, by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise SchemaError(f"schema file {path.name}: expected a .toml or .json file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SchemaError(f"schema file {path.name}: cannot read it ({e.strerror})") from e
    try:
        return parse_schema(data, "toml" if suffix == ".toml" else "json")
    except SchemaError as e:
        raise SchemaError(f"schema file {path.name}: {e}") from e


def _tightened(old: int | None, new: int | None) -> bool:
    """A limit tightens when it appears or shrinks (None means unlimited)."""
    return new is not None and (old is None or new < old)


def _field_change_problems(where: str, old: FieldSpec, new: FieldSpec) -> list[str]:
    problems: list[str] = []
    if old.type != new.type:
        problems.append(f"{where}: type changed from {old.type} to {new.type}")
    if old.value != new.value:
        problems.append(f"{where}: value kind changed from {old.value} to {new.value}")
    if old.nullable and not new.nullable:
        problems.append(f"{where}: no longer nullable")
    if _tightened(old.max_length, new.max_length):
        problems.append(f"{where}: max_length tightened from {old.max_length} to {new.max_length}")
    if _tightened(old.max_abs, new.max_abs):
        problems.append(f"{where}: max_abs tightened from {old.max_abs} to {new.max_abs}")
    return problems


def compatibility_problems(old: Schema, new: Schema) -> list[str]:
    """Return why `new` cannot replace `old` (empty when it can).

    New entity types and fields may be added and limits loosened; nothing may be dropped,
    retyped or tightened, and any change needs a higher version.
    """
    problems: list[str] = []
    for type_name, old_type in old.entity_types.items():
        new_type = new.entity_types.get(type_name)
        if new_type is None:
            problems.append(f"entity type {type_name!r} was dropped")
            continue
        for field_name, old_field in old_type.fields.items():
            where = f"{type_name}.{field_name}"
            new_field = new_type.fields.get(field_name)
            if new_field is None:
                problems.append(f"field {where!r} was dropped")
            else:
                problems.extend(_field_change_problems(where, old_field, new_field))
    if new.version < old.version:
        problems.append(f"version went back from {old.version} to {new.version}")
    elif new.version == old.version and new != old:
        problems.append(f"the schema changed but its version stayed {old.version}")
    return problems


_json_encoder = msgspec.json.Encoder()


def schema_to_json(schema: Schema) -> bytes:
    """Encode the schema as JSON, as `GET /v1/schema` returns it."""
    return _json_encoder.encode(schema)
