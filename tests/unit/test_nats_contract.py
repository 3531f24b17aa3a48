"""The NATS contract lives in one module (issue 18 item 5): ``core/events.py`` names
every subject (``Names``) and every message; nothing else spells a subject."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import msgspec

from core import events

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [
    "concord",
    "core",
    "crdt",
    "eventstore",
    "projector",
    "scheduler",
    "gateway",
    "client",
    "lab",
    "bench",
]
CONTRACT = ROOT / "core" / "events.py"
#: What a subject string of ours looks like, in a literal or the fixed part of an f-string.
KINDS = "space|log|projection|reminders|notifications|revocations|membership"
SUBJECT = re.compile(rf"\.({KINDS})\.|\.revocations$|_LOG$")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (prose may name subjects)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _from_prefix(node: ast.JoinedStr) -> bool:
    """``f"{...prefix}.{kind}..."``: any token appended to a NATS prefix."""
    parts = node.values
    for here, after in itertools.pairwise(parts):
        if (
            isinstance(here, ast.FormattedValue)
            and "prefix" in ast.unparse(here.value)
            and isinstance(after, ast.Constant)
            and str(after.value)[:1] in "._"
        ):
            return True
    return False


def subject_strings(path: Path, root: Path = ROOT) -> list[str]:
    """Strings in ``path`` that build a NATS subject of ours (docstrings aside)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            fixed = [v.value for v in node.values if isinstance(v, ast.Constant)]
            skip.update(id(v) for v in node.values)
            if any(isinstance(v, str) and SUBJECT.search(v) for v in fixed) or _from_prefix(node):
                hits.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and " " not in node.value
            and SUBJECT.search(node.value)
        ):
            hits.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return hits


def test_no_subject_is_spelled_outside_the_contract() -> None:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 100
    hits = [hit for path in files if path != CONTRACT for hit in subject_strings(path)]
    assert hits == []


def test_the_check_sees_subjects_built_by_hand(tmp_path: Path) -> None:
    """The check itself bites: each way the code used to build subjects is caught."""
    (tmp_path / "x.py").write_text(
        'def f(prefix, s, settings):\n    """Publish on ``<prefix>.space.<id>``."""\n'
        '    a = f"{prefix}.space.{s}"\n'
        '    b = f"{settings.nats_prefix}.notifications.*"\n'
        '    c = f"{prefix}.revocations"\n'
        '    d = f"{prefix}_LOG"\n'
        '    e = "concord.membership.*"\n'
        '    g = f"{self.prefix}.{kind}.{s}"\n'
        '    log = "concord.gateway.ws"\n'
    )
    hits = subject_strings(tmp_path / "x.py", root=tmp_path)
    assert [hit.split(":")[1] for hit in hits] == ["3", "4", "5", "6", "7", "8"]


def test_every_message_of_the_contract_is_named_in_its_table() -> None:
    """Each payload Struct of the module appears in the module's subject table."""
    doc = events.__doc__ or ""
    payloads = [
        name
        for name, value in vars(events).items()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == events.__name__
        and not name.startswith("_")
    ]
    assert sorted(payloads) == sorted(
        ["SpaceHint", "ReminderChange", "NotificationEnvelope", "Revocation", "MembershipChange"]
    )
    for name in payloads:
        assert f":class:`{name}`" in doc, name


def test_names_spell_each_subject_of_one_prefix() -> None:
    names = events.Names("p")
    space = "0d8c6a52-5f0e-4a55-9a55-2f0d7b8e1c01"
    assert names.space(space) == f"p.space.{space}"
    assert names.membership(events.ANY) == "p.membership.*"
    assert names.notifications(space) == f"p.notifications.{space}"
    assert names.reminders_subject(events.ANY) == "p.reminders.*"
    assert names.revocations == "p.revocations"
    assert (names.stream, names.log_wildcard) == ("p_LOG", "p.log.*")


def test_no_module_reaches_into_a_nats_py_object() -> None:
    """nats-py's private attributes (its JetStream context's ``_nc``, say) may change in
    any release: the connection is reached through ``NatsBus.connection()``. Only
    ``core/natsbus.py`` holds a connection of its own (``self._nc``)."""
    private = {"_nc", "_js", "_jsm", "_prefix", "_pub_ack_subject"}
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Attribute) and node.attr in private):
                    continue
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id == "self":
                    continue  # an attribute of our own object
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == []
