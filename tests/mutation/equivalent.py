"""Mutants known to be equivalent without running them: SQL in another letter case.

mutmut turns every string constant into upper and lower case. In SQL, keywords, unquoted
identifiers, type and function names are read the same in any case (PostgreSQL folds
unquoted names to lower case: "Identifiers and Key Words", section 4.1.1 of its manual),
so ``"SELECT seq FROM spaces"`` and ``"select seq from spaces"`` are one statement, and
no test can tell them apart. Such a mutant is counted apart, not as a survivor, when
its function differs from the original only in string constants that

* hold SQL (an upper-case keyword such as ``SELECT``, ``FROM`` or ``WHERE`` as a word),
* are equal to the original ignoring case,
* and differ only outside quotes: a change inside ``'...'`` (a string literal, such as
  a status ``'dead'``) or ``"..."`` (a quoted identifier) changes the statement.

A constant with an odd number of either quote (a literal cut by an f-string's
placeholder) is never counted apart: where its quotes open cannot be told.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

_SQL_WORD = re.compile(
    r"\b(SELECT|FROM|WHERE|INSERT|INTO|UPDATE|DELETE|SET|VALUES|ORDER BY|GROUP BY|LIMIT|"
    r"RETURNING|JOIN|ON CONFLICT|AND|OR|IS|NOT|NULL|AS|WITH|UNION)\b"
)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def sql_case_only(old: str, new: str) -> bool:
    """``new`` is the SQL ``old`` in another letter case, outside its quotes only."""
    if old == new or old.lower() != new.lower() or not _SQL_WORD.search(old):
        return False
    if old.count("'") % 2 or old.count('"') % 2:
        return False
    quote = ""
    for a, b in zip(old, new, strict=True):
        if quote:
            if a != b:
                return False
            if a == quote:
                quote = ""
        elif a in "'\"":
            quote = a
    return True


def same_but_sql_case(original: ast.AST, mutant: ast.AST) -> bool:
    """The two functions differ only in string constants, each of them SQL in another
    letter case (``sql_case_only``), and in at least one."""
    changed = 0

    def walk(a: object, b: object) -> bool:
        nonlocal changed
        if type(a) is not type(b):
            return False
        if isinstance(a, ast.Constant):
            assert isinstance(b, ast.Constant)
            if a.value == b.value and type(a.value) is type(b.value):
                return True
            if isinstance(a.value, str) and isinstance(b.value, str):
                changed += 1
                return sql_case_only(a.value, b.value)
            return False
        if isinstance(a, ast.AST):
            return all(
                walk(getattr(a, f), getattr(b, f))
                for f in a._fields
                if not (f == "name" and isinstance(a, _FUNCTIONS))
            )
        if isinstance(a, list):
            assert isinstance(b, list)
            return len(a) == len(b) and all(walk(x, y) for x, y in zip(a, b, strict=True))
        return a == b

    return walk(original, mutant) and changed > 0


@cache
def _functions(path: Path) -> dict[str, ast.AST]:
    """Every function of a mutated module (mutmut's copies included), by name; none when
    there is no such file."""
    if not path.is_file():
        return {}
    tree = ast.parse(path.read_text())
    return {n.name: n for n in ast.walk(tree) if isinstance(n, _FUNCTIONS)}


def equivalent_by_sql_case(mutated_module: Path, mutant: str) -> bool:
    """Whether mutmut's mutant ``mutant`` (``package.module.x_name__mutmut_3``) of the
    mutated module at ``mutated_module`` only changes the letter case of SQL."""
    function = mutant.rsplit(".", 1)[-1]
    stem, _, number = function.rpartition("__mutmut_")
    if not number.isdigit():
        return False
    functions = _functions(mutated_module)
    original, changed = functions.get(f"{stem}__mutmut_orig"), functions.get(function)
    if original is None or changed is None:
        return False
    return same_but_sql_case(original, changed)
