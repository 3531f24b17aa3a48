"""Which mutants the mutation runner counts apart as SQL in another letter case
(tests/mutation/equivalent.py): only those, never a mutant that changes a statement."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.mutation.equivalent import equivalent_by_sql_case, same_but_sql_case, sql_case_only


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            "SELECT seq FROM spaces WHERE space_id = $1",
            "select seq from spaces where space_id = $1",
        ),
        ("ORDER BY fire_at DESC LIMIT $2", "ORDER BY FIRE_AT DESC LIMIT $2"),
        ("FROM reminders WHERE status = 'dead' ", "from reminders where status = 'dead' "),
        ('SELECT "Mixed" FROM t', 'select "Mixed" from t'),
        ("GROUP BY 1", "group by 1"),
    ],
)
def test_sql_in_another_case_outside_its_quotes_is_the_same_statement(old: str, new: str) -> None:
    assert sql_case_only(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # a string literal or a quoted identifier in another case: another statement
        ("WHERE status = 'dead' ", "WHERE STATUS = 'DEAD' "),
        ('SELECT "Mixed" FROM t', 'SELECT "MIXED" FROM t'),
        ("SELECT to_regclass('refresh_tokens')", "SELECT TO_REGCLASS('REFRESH_TOKENS')"),
        # not SQL: a message, a status, a header name
        (
            "after: not a cursor returned by this route",
            "AFTER: NOT A CURSOR RETURNED BY THIS ROUTE",
        ),
        ("scheduled", "SCHEDULED"),
        # not the same letters
        ("SELECT seq FROM spaces", "XXSELECT seq FROM spacesXX"),
        ("SELECT seq FROM spaces", "SELECT seq FROM spaces"),
        # a literal cut by an f-string's placeholder: where it opens cannot be told
        ("WHERE kind = '", "where kind = '"),
    ],
)
def test_anything_else_is_not(old: str, new: str) -> None:
    assert not sql_case_only(old, new)


def _function(source: str) -> ast.AST:
    return ast.parse(source).body[0]


def test_a_function_counts_apart_only_when_sql_case_is_all_that_changed() -> None:
    original = _function(
        "async def f(conn, x):\n"
        "    return await conn.fetch('SELECT a FROM t WHERE b = $1', x, 'Label')\n"
    )
    cased = _function(
        "async def g(conn, x):\n"
        "    return await conn.fetch('select a from t where b = $1', x, 'Label')\n"
    )
    other_string = _function(
        "async def g(conn, x):\n"
        "    return await conn.fetch('select a from t where b = $1', x, 'LABEL')\n"
    )
    other_code = _function(
        "async def g(conn, x):\n"
        "    return await conn.fetch('select a from t where b = $1', None, 'Label')\n"
    )
    assert same_but_sql_case(original, cased)
    assert not same_but_sql_case(original, original)  # nothing changed at all
    assert not same_but_sql_case(original, other_string)
    assert not same_but_sql_case(original, other_code)


def test_mutants_are_found_by_mutmuts_names(tmp_path: Path) -> None:
    module = tmp_path / "store.py"
    module.write_text(
        "def x_count__mutmut_orig(conn):\n"
        "    return conn.fetchval('SELECT count(*) FROM t')\n"
        "def x_count__mutmut_1(conn):\n"
        "    return conn.fetchval('select count(*) from t')\n"
        "def x_count__mutmut_2(conn):\n"
        "    return conn.fetchval(None)\n"
        "class Box:\n"
        "    def xǁBoxǁget__mutmut_orig(self, conn):\n"
        "        return conn.fetch('SELECT a FROM t')\n"
        "    def xǁBoxǁget__mutmut_1(self, conn):\n"
        "        return conn.fetch('SELECT A FROM T')\n"
    )
    assert equivalent_by_sql_case(module, "pkg.store.x_count__mutmut_1")
    assert not equivalent_by_sql_case(module, "pkg.store.x_count__mutmut_2")
    assert equivalent_by_sql_case(module, "pkg.store.xǁBoxǁget__mutmut_1")
    assert not equivalent_by_sql_case(module, "pkg.store.x_count__mutmut_9")  # no such mutant
    assert not equivalent_by_sql_case(module, "pkg.store.x_count")
