"""The schema: the built-in default, loading from TOML or JSON, and compatible evolution."""

from __future__ import annotations

import json
import pathlib
import re

import msgspec
import pytest

from crdt import (
    DEFAULT_SCHEMA,
    EntityTypeSpec,
    FieldSpec,
    Schema,
    SchemaError,
    compatibility_problems,
    load_schema,
    parse_schema,
    schema_problems,
    schema_to_json,
)

TOML = """
version = 2

[entity_types.task.fields.title]
type = "lww"
value = "string"
max_length = 500

[entity_types.task.fields.tags]
type = "set"
value = "string"
max_length = 64
"""


def test_default_schema_is_protocol_section_3() -> None:
    task = DEFAULT_SCHEMA.entity_types["task"].fields
    assert DEFAULT_SCHEMA.version == 1
    assert set(DEFAULT_SCHEMA.entity_types) == {"task", "list"}
    table = {
        "title": ("lww", "string", False, 500, None),
        "notes": ("lww", "string", False, 10_000, None),
        "done": ("lww", "boolean", False, None, None),
        "due_at": ("lww", "timestamp", True, None, None),
        "remind_at": ("lww", "timestamp", True, None, None),
        "position": ("lww", "string", False, 64, None),
        "list_id": ("lww", "string", True, None, None),
        "assignee": ("mv", "string", True, None, None),
        "tags": ("set", "string", False, 64, None),
        "pomodoros": ("counter", "integer", False, None, 1_000_000),
    }
    assert {k: (f.type, f.value, f.nullable, f.max_length, f.max_abs) for k, f in task.items()} == (
        table
    )
    lst = DEFAULT_SCHEMA.entity_types["list"].fields
    assert lst["name"] == FieldSpec(type="lww", value="string", max_length=200)
    assert lst["archived"] == FieldSpec(type="lww", value="boolean")
    assert set(lst) == {"name", "archived"}
    assert schema_problems(DEFAULT_SCHEMA) == []


def test_schema_json_round_trips() -> None:
    data = schema_to_json(DEFAULT_SCHEMA)
    assert json.loads(data)["entity_types"]["task"]["fields"]["tags"]["type"] == "set"
    assert parse_schema(data, "json") == DEFAULT_SCHEMA


def test_load_toml_and_json(tmp_path: pathlib.Path) -> None:
    toml_file = tmp_path / "schema.toml"
    toml_file.write_text(TOML)
    schema = load_schema(toml_file)
    assert schema.version == 2
    assert schema.entity_types["task"].fields["tags"].max_length == 64
    json_file = tmp_path / "schema.JSON"
    json_file.write_bytes(schema_to_json(schema))
    assert load_schema(json_file) == schema
    assert parse_schema(TOML, "toml") == schema


@pytest.mark.parametrize(
    ("text", "fmt", "needle"),
    [
        ("version = ", "toml", "not valid TOML"),
        (b"\xff\xfe", "toml", "not valid TOML"),
        ("{", "json", "not valid JSON"),
        ('{"version": "1", "entity_types": {}}', "json", "$.version"),
        ('{"version": 1}', "json", "entity_types"),
        ('{"version": 1, "entity_types": {}, "extra": 1}', "json", "extra"),
        ('{"version": 0, "entity_types": {}}', "json", "version must be at least 1"),
    ],
)
def test_parse_errors_name_the_problem(text: str | bytes, fmt: str, needle: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(needle)):
        parse_schema(text, fmt)  # type: ignore[arg-type]


def _one(**kw: object) -> Schema:
    spec = msgspec.convert(kw, FieldSpec)
    return Schema(version=1, entity_types={"task": EntityTypeSpec(fields={"f": spec})})


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"type": "counter", "value": "number"}, "a counter holds integer deltas"),
        ({"type": "set", "value": "boolean"}, "set elements are strings or integers"),
        ({"type": "set", "value": "string", "nullable": True}, "cannot be nullable"),
        ({"type": "counter", "value": "integer", "nullable": True}, "cannot be nullable"),
        ({"type": "lww", "value": "integer", "max_length": 3}, "max_length applies to string"),
        ({"type": "lww", "value": "string", "max_length": 0}, "max_length must be at least 1"),
        ({"type": "lww", "value": "string", "max_abs": 3}, "max_abs applies to integer"),
        ({"type": "counter", "value": "integer", "max_abs": -1}, "max_abs must lie in"),
        ({"type": "lww", "value": "number", "max_abs": 2**53}, "max_abs must lie in"),
    ],
)
def test_unusable_field_specs_are_named(spec: dict[str, object], needle: str) -> None:
    problems = schema_problems(_one(**spec))
    assert len(problems) == 1
    assert problems[0].startswith("task.f: ")
    assert needle in problems[0]
    with pytest.raises(SchemaError, match=r"task\.f"):
        parse_schema(schema_to_json(_one(**spec)), "json")


def test_names_are_checked() -> None:
    spec = FieldSpec(type="lww", value="string")
    bad = Schema(
        version=1,
        entity_types={"_member": EntityTypeSpec(fields={"_deleted": spec, "ok": spec})},
    )
    problems = schema_problems(bad)
    assert len(problems) == 2
    assert "entity type '_member'" in problems[0]
    assert "field '_member._deleted'" in problems[1]


def test_load_schema_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SchemaError, match=r"expected a \.toml or \.json file"):
        load_schema(tmp_path / "schema.yaml")
    with pytest.raises(SchemaError, match="cannot read it"):
        load_schema(tmp_path / "missing.toml")
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "entity_types": {"task": {"fields": {"f": {"type": "x"}}}}}')
    with pytest.raises(SchemaError, match=r"broken\.json: schema: .*entity_types") as info:
        load_schema(broken)
    assert "type" in str(info.value)


def _evolve(**changes: object) -> Schema:
    """The default schema with task.title changed, at version 2."""
    task = DEFAULT_SCHEMA.entity_types["task"]
    title = msgspec.structs.replace(task.fields["title"], **changes)
    fields = {**task.fields, "title": title}
    types = {**DEFAULT_SCHEMA.entity_types, "task": EntityTypeSpec(fields=fields)}
    return Schema(version=2, entity_types=types)


def test_compatible_evolution() -> None:
    assert compatibility_problems(DEFAULT_SCHEMA, DEFAULT_SCHEMA) == []
    looser = _evolve(max_length=1000, nullable=True)
    assert compatibility_problems(DEFAULT_SCHEMA, looser) == []
    unlimited = _evolve(max_length=None)
    assert compatibility_problems(DEFAULT_SCHEMA, unlimited) == []
    types = {
        **DEFAULT_SCHEMA.entity_types,
        "note": EntityTypeSpec(fields={"body": FieldSpec(type="lww", value="string")}),
    }
    assert compatibility_problems(DEFAULT_SCHEMA, Schema(version=2, entity_types=types)) == []


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"type": "mv"}, "task.title: type changed from lww to mv"),
        ({"value": "timestamp"}, "task.title: value kind changed from string to timestamp"),
        ({"max_length": 499}, "task.title: max_length tightened from 500 to 499"),
    ],
)
def test_incompatible_field_changes(changes: dict[str, object], needle: str) -> None:
    assert compatibility_problems(DEFAULT_SCHEMA, _evolve(**changes)) == [needle]


def test_tightened_limits_and_nullability() -> None:
    old = _one(type="lww", value="integer", nullable=True)
    new = msgspec.structs.replace(_one(type="lww", value="integer", max_abs=5), version=2)
    assert compatibility_problems(old, new) == [
        "task.f: no longer nullable",
        "task.f: max_abs tightened from None to 5",
    ]
    bounded = _one(type="lww", value="integer", max_abs=5)
    looser = msgspec.structs.replace(_one(type="lww", value="integer", max_abs=6), version=2)
    assert compatibility_problems(bounded, looser) == []


def test_dropped_types_fields_and_versions() -> None:
    only_list = Schema(version=2, entity_types={"list": DEFAULT_SCHEMA.entity_types["list"]})
    assert compatibility_problems(DEFAULT_SCHEMA, only_list) == ["entity type 'task' was dropped"]
    no_name = Schema(
        version=2,
        entity_types={
            "task": DEFAULT_SCHEMA.entity_types["task"],
            "list": EntityTypeSpec(fields={"archived": FieldSpec(type="lww", value="boolean")}),
        },
    )
    assert compatibility_problems(DEFAULT_SCHEMA, no_name) == ["field 'list.name' was dropped"]
    same_version = msgspec.structs.replace(_evolve(max_length=600), version=1)
    assert compatibility_problems(DEFAULT_SCHEMA, same_version) == [
        "the schema changed but its version stayed 1"
    ]
    back = msgspec.structs.replace(DEFAULT_SCHEMA, version=0)
    assert compatibility_problems(DEFAULT_SCHEMA, back) == ["version went back from 1 to 0"]
