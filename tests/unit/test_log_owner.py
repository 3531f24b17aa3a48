"""The log's table has one owner: SQL naming ``events`` is written only in ``eventstore/``.

Every other package reads the log through ``eventstore.reads`` (a range of a space, a
stream of everything, recent events, counts) or the ``core.ports.EventStore`` port. The
same for the scheduler's tables (read by others through ``scheduler.queries``) and the
read model's (through ``projector.readmodel``): the gateway writes no SQL on either.
Found by reading every module's string literals (docstrings aside) and calls. Tests,
benchmarks and the chaos lab's checker may name the table: tests prove the triggers
refuse changes, the benchmarks' raw baselines measure the store against PostgreSQL
itself, and the chaos checker reads the log with its own SQL so that a fault in
``eventstore.reads`` cannot hide itself (its broken ``dedup`` build also drops the log's
unique index).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWNER = "eventstore"
EXEMPT = {OWNER, "tests", "bench"}
#: Packages exempt below the top level.
EXEMPT_DIRS = {("lab", "chaos")}
#: Not the project's modules: copies of it (``build/mutation/<target>``, the working copies
#: of ``make mutation``, hold the whole project, the event store's SQL included) and
#: packaging output.
GENERATED = {"build", "dist"}

#: The packages that may write SQL naming each table (besides the exempt ones). The
#: scheduler derives reminders from the read model, so it reads the projector's tables.
TABLE_OWNERS = {
    "reminders": {"scheduler"},
    "reminder_tasks": {"scheduler"},
    "reminder_cursors": {"scheduler"},
    "job_runs": {"scheduler"},
    "entity_states": {"projector", "scheduler"},
    "projector_checkpoints": {"projector", "scheduler"},
    "projector_quarantine": {"projector"},
}


def _statement(table: str) -> re.Pattern[str]:
    """A statement naming ``table``: FROM / JOIN / INTO / UPDATE / TABLE / COPY table."""
    return re.compile(
        rf"\b(from|join|into|update|table|copy)\s+(only\s+)?(public\.)?\"?{table}\"?"
        r"(\s|$|[;,)])",
        re.IGNORECASE,
    )


_SQL = _statement("events")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (module, class, function): prose, not SQL."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
        ):
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def offences(source: str, sql: re.Pattern[str] = _SQL) -> list[str]:
    """Lines of ``source`` holding SQL on ``events`` (or what ``sql`` matches), or a COPY
    helper given the ``events`` table."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in prose and sql.search(node.value):
                found.append(f"line {node.lineno}: {node.value.strip()[:80]!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr.startswith("copy_")
        ):
            named = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "table_name")]
            if any(isinstance(a, ast.Constant) and a.value == "events" for a in named):
                found.append(f"line {node.lineno}: {node.func.attr}('events', ...)")
    return found


def _modules(root: Path = ROOT) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*.py")
        if not any(part.startswith(".") or part == "node_modules" for part in path.parts)
        and path.relative_to(root).parts[0] not in EXEMPT | GENERATED
        and path.relative_to(root).parts[:2] not in EXEMPT_DIRS
    )


def test_the_scan_skips_copies_of_the_project(tmp_path: Path) -> None:
    """A mutation run's working copy (build/mutation/<target>) holds eventstore/ too."""
    sql = 'Q = "SELECT seq FROM events"\n'
    for where in ("gateway", "build/mutation/eventstore/eventstore", "dist/x", "eventstore"):
        (tmp_path / where).mkdir(parents=True)
        (tmp_path / where / "m.py").write_text(sql)
    found = [p.relative_to(tmp_path).as_posix() for p in _modules(tmp_path)]
    assert found == ["gateway/m.py"]


def test_no_sql_on_events_outside_the_event_store() -> None:
    modules = _modules()
    assert len(modules) > 50, "the scan found too few modules to mean anything"
    bad = {
        f"{path.relative_to(ROOT)} {hit}"
        for path in modules
        for hit in offences(path.read_text(encoding="utf-8"))
    }
    assert not bad, sorted(bad)


@pytest.mark.parametrize(("table", "owners"), sorted(TABLE_OWNERS.items()))
def test_no_sql_on_a_components_tables_outside_it(table: str, owners: set[str]) -> None:
    sql = _statement(table)
    bad = {
        f"{path.relative_to(ROOT)} {hit}"
        for path in _modules()
        if path.relative_to(ROOT).parts[0] not in owners
        for hit in offences(path.read_text(encoding="utf-8"), sql)
    }
    assert not bad, sorted(bad)


def test_the_scan_sees_sql_on_another_table() -> None:
    assert offences("Q = 'SELECT status FROM reminders GROUP BY 1'", _statement("reminders"))
    assert not offences("Q = 'SELECT 1 FROM reminders_archive'", _statement("reminders"))


@pytest.mark.parametrize(
    "source",
    [
        'Q = "SELECT seq FROM events WHERE space_id = $1"',
        'Q = f"SELECT {COLUMNS} FROM events AS e ORDER BY e.seq"',
        "Q = 'select 1 from public.events;'",
        'Q = """\nSELECT x\nFROM events\n"""',
        "Q = 'SELECT 1 FROM spaces s JOIN events e USING (space_id)'",
        "Q = 'INSERT INTO events (seq) VALUES (1)'",
        "Q = 'DELETE FROM events'",
        "Q = 'UPDATE events SET seq = 2'",
        "Q = 'COPY events TO STDOUT'",
        "Q = EVENT_SELECT.replace(' FROM events', ', x FROM events AS e')",
        'await conn.copy_records_to_table("events", records=rows)',
        'await conn.copy_to_table(table_name="events", source=f)',
    ],
)
def test_the_scan_sees_sql_on_events(source: str) -> None:
    assert offences(source), source


@pytest.mark.parametrize(
    "source",
    [
        '"""Fold the events from the stream."""',
        'def f():\n    """Read from events of the log."""',
        "Q = 'SELECT * FROM events_archive'",
        'M = {"type": "events", "events": []}',
        "log.info('relayed %d events from space %s', n, s)",
        "Q = 'SELECT * FROM entity_states'",
    ],
)
def test_the_scan_lets_prose_and_other_tables_be(source: str) -> None:
    assert not offences(source), source
