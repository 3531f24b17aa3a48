"""Each package's ``__init__`` says what it owns and what it may import (docs/architecture.md,
"Packages and their boundaries"), so a newcomer finds the boundaries where the code is."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [
    "core", "crdt", "eventstore", "gateway", "projector", "scheduler", "client", "lab",
    "concord", "bench",
]  # fmt: skip


@pytest.mark.parametrize("package", PACKAGES)
def test_the_package_says_what_it_owns_and_may_import(package: str) -> None:
    init = ROOT / package / "__init__.py"
    assert init.exists(), f"{package} is a regular package"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc.split()) >= 15, f"{package}/__init__.py: say what the package owns"
    assert "import" in doc.lower(), f"{package}/__init__.py: say what it may import"
