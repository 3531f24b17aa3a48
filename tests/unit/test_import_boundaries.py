"""Dependencies point inward (docs/architecture.md, "Packages and their boundaries"): checked
by reading every module's imports.

The layering: ``crdt`` ← ``core`` ← ``eventstore`` ← ``projector``, ``scheduler`` ←
``gateway`` ← ``concord`` (the composition root: the ``concord`` command, embedded
services, logging and runtime set-up, each component's command; the one package that
may import every other). ``crdt`` is pure: standard-library modules without I/O, clocks
or randomness, plus msgspec. The device SDK, ``client``, imports only ``crdt`` and
``core``. Nothing below ``concord`` imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {
    "core", "crdt", "eventstore", "gateway", "projector", "scheduler", "client", "lab", "bench",
    "concord",
}  # fmt: skip

CRDT_ALLOWED = {
    "__future__", "msgspec", "typing", "typing_extensions", "collections", "dataclasses",
    "enum", "functools", "itertools", "math", "re", "uuid", "datetime", "json", "tomllib",
    "operator", "bisect", "heapq", "abc", "numbers", "types", "copy", "string", "decimal",
}  # fmt: skip
CRDT_FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval"}

#: Public read interfaces the gateway may use (docs/architecture.md: "everything but
#: projector/scheduler" internals); every other module of those packages stays off limits.
PUBLIC_INTERFACES = {"projector.readmodel", "scheduler.queries"}

FORBIDDEN: dict[str, set[str]] = {
    "crdt": OURS - {"crdt"},
    "core": OURS - {"core", "crdt"},
    "eventstore": OURS - {"eventstore", "core", "crdt"},
    "projector": OURS - {"projector", "eventstore", "core", "crdt"},
    "scheduler": OURS - {"scheduler", "eventstore", "core", "crdt"},
    "gateway": {"projector", "scheduler", "client", "lab", "bench", "concord"},
    "client": OURS - {"client", "core", "crdt"},
    "concord": {"bench"},
}


def _modules_imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules_imported(path)}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_inward(package: str) -> None:
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name in _modules_imported(path)
        if name.split(".")[0] in FORBIDDEN[package]
        and not (package == "gateway" and name in PUBLIC_INTERFACES)
    }
    assert not bad, sorted(bad)


def test_crdt_is_pure() -> None:
    problems: list[str] = []
    for path in _modules("crdt"):
        for name in _imports(path) - CRDT_ALLOWED - {"crdt"}:
            problems.append(f"{path.relative_to(ROOT)} imports {name}")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in CRDT_FORBIDDEN_CALLS
            ):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {node.func.id}()")
    assert not problems, problems


def test_core_holds_no_process_assembly() -> None:
    """The command, embedded services and logging set-up left ``core`` for ``concord``."""
    leftovers = {"cli.py", "command.py", "embedded.py", "logs.py", "runtime.py"}
    assert not leftovers & {p.name for p in (ROOT / "core").glob("*.py")}


def test_the_checker_sees_nested_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    import gateway.app\n    from eventstore import x\n")
    assert _imports(sample) == {"gateway", "eventstore"}
