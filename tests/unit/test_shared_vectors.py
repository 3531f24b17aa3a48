"""The shared test vectors (`js/vectors/*.json`) hold for `crdt/`.

The JavaScript client checks the same files (`js/test/vectors.test.js`), so both
implementations derive the same states from the same ops. A change to `crdt/` that
changes a result fails here until the vectors are regenerated with
`python -m tests.vectors.generate` (and then the JavaScript side must agree).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crdt import Op
from tests.vectors.expect import VECTOR_FORMAT, entities_of, op_from_json, results_of
from tests.vectors.generate import OUT_DIR, RANDOM_COUNT, build_files
from tests.vectors.history import SCHEMA

FILES = ("cases.json", "random.json")
PERMUTATIONS = 6


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OUT_DIR / name).read_text(encoding="utf-8"))
    return data


def _problems(vector: dict[str, Any]) -> list[str]:
    """What `crdt/` disagrees with in one vector (empty when it agrees)."""
    name = vector["name"]
    ops: list[Op] = [op_from_json(raw) for raw in vector["ops"]]
    problems = []
    if results_of(ops) != vector["results"]:
        problems.append(f"{name}: apply results differ")
    if entities_of(ops, SCHEMA) != vector["entities"]:
        problems.append(f"{name}: entities differ")
    rng = random.Random(vector["seed"])
    for _ in range(PERMUTATIONS):
        if entities_of(rng.sample(ops, len(ops)), SCHEMA) != vector["entities"]:
            problems.append(f"{name}: a permutation of its ops gives other entities")
            break
    return problems


@pytest.mark.parametrize("name", FILES)
def test_file_header(name: str) -> None:
    data = _load(name)
    assert data["format"] == VECTOR_FORMAT
    assert data["schema"] == msgspec.to_builtins(SCHEMA)
    assert data["vectors"], "no vectors"


def test_cases_cover_every_rule() -> None:
    vectors = _load("cases.json")["vectors"]
    kinds = {op["kind"] for v in vectors for op in v["ops"]}
    assert {"set", "inc", "add", "remove", "delete", "restore", "reminder_fired"} <= kinds
    views = [e["view"] for v in vectors for e in v["entities"] if e["view"] is not None]
    fields = [f for view in views for f in view["fields"].values()]
    assert any(f.get("conflicted") for f in fields)
    assert any(view["edited_while_deleted"] for view in views)
    assert any(not e["has_client_events"] for v in vectors for e in v["entities"])
    assert any(not applied for v in vectors for applied, _ in v["results"])  # duplicates


@pytest.mark.parametrize("vector", _load("cases.json")["vectors"], ids=lambda v: v["name"])
def test_case(vector: dict[str, Any]) -> None:
    assert _problems(vector) == []


def test_random_histories() -> None:
    vectors = _load("random.json")["vectors"]
    assert len(vectors) == RANDOM_COUNT
    problems = [p for vector in vectors for p in _problems(vector)]
    assert problems == []


def test_committed_files_are_what_the_generator_writes() -> None:
    for name, text in build_files(check_orders=False).items():
        path: Path = OUT_DIR / name
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is stale: run python -m tests.vectors.generate"
        )


def test_a_wrong_expectation_is_caught() -> None:
    vector = _load("cases.json")["vectors"][0]
    wrong = json.loads(json.dumps(vector))
    wrong["entities"][0]["view"]["fields"]["title"]["value"] = "something else"
    name = vector["name"]
    assert _problems(wrong) == [
        f"{name}: entities differ",
        f"{name}: a permutation of its ops gives other entities",
    ]
