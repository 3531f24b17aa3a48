"""``make mutation``'s verdict: a module under its target's floor fails the run, except
in a target judged as a whole (``crdt/``: ≥ 90% for the package, as issue 16 asks), where
the modules together must reach it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mutation.run import ModuleScore, report, scores
from tests.mutation.targets import Target


def _scores() -> list[ModuleScore]:
    # 6 of 7 (85.7%) and 95 of 100: 101 of 107 (94.4%) together.
    return [
        ModuleScore("pkg/small.py", killed=6, survived=["pkg.small.x_f__mutmut_1"]),
        ModuleScore(
            "pkg/big.py", killed=95, survived=[f"pkg.big.x_g__mutmut_{i}" for i in range(5)]
        ),
    ]


def _target(floor: float, whole: bool) -> Target:
    return Target(
        name="pkg", modules=("pkg/small.py", "pkg/big.py"), tests=(), floor=floor, whole=whole
    )


def test_each_module_must_reach_the_floor(capsys: pytest.CaptureFixture[str]) -> None:
    assert not report(_target(0.90, whole=False), _scores(), None, Path("."), diff=False)
    assert "pkg/small.py" in capsys.readouterr().out


@pytest.mark.parametrize(("floor", "passes"), [(0.90, True), (0.95, False)])
def test_a_target_judged_as_a_whole(
    floor: float, passes: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(_target(floor, whole=True), _scores(), None, Path("."), diff=False) is passes
    assert "94.4%  killed 101/107" in capsys.readouterr().out


def test_a_module_not_run_fails_either_way() -> None:
    scores = [*_scores(), ModuleScore("pkg/new.py", ran=False)]
    assert not report(_target(0.5, whole=True), scores, None, Path("."), diff=False)


def _small(
    tmp_path: Path,
    codes: dict[str, int],
    *,
    at_import: tuple[str, ...] = (),
    in_other_process: tuple[str, ...] = (),
) -> tuple[Target, ModuleScore]:
    """A target of one module, ``pkg/small.py``, whose verdicts are ``x_f``'s two (one
    killed, one survived) and ``codes``, with functions counted apart."""
    meta = tmp_path / "mutants" / "pkg" / "small.py.meta"
    meta.parent.mkdir(parents=True)
    verdicts = {"pkg.small.x_f__mutmut_1": 1, "pkg.small.x_f__mutmut_2": 0} | codes
    meta.write_text(json.dumps({"exit_code_by_key": verdicts}))
    target = Target(
        name="pkg",
        modules=("pkg/small.py",),
        tests=(),
        floor=0.5,
        at_import=at_import,
        in_other_process=in_other_process,
    )
    [score] = scores(target, tmp_path)
    return target, score


def test_mutants_of_code_run_at_import_are_counted_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A function run only while its module is imported is called by no test, so mutmut
    cannot tell which tests would notice its mutants: they are not scored."""
    codes = {f"pkg.small.x_declared__mutmut_{i}": 0 for i in range(1, 4)}
    target, score = _small(tmp_path, codes, at_import=("pkg.small.x_declared",))
    assert (score.killed, score.survived, score.at_import) == (
        1,
        ["pkg.small.x_f__mutmut_2 (survived)"],
        3,
    )
    assert report(target, [score], None, tmp_path, diff=False)
    assert "50.0%  killed 1/2, 3 of code run at import not counted" in capsys.readouterr().out


def test_survivors_writing_sql_in_another_letter_case_are_counted_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mutant that only changes the case of SQL outside its quotes is equivalent
    (tests/mutation/equivalent.py): counted apart and listed, not scored; one that
    changes a quoted literal stays a survivor."""
    module = tmp_path / "mutants" / "pkg" / "small.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "def x_f__mutmut_orig(c):\n    return c.fetch(\"SELECT a FROM t WHERE s = 'x'\")\n"
        "def x_f__mutmut_1(c):\n    return c.fetch(\"select a from t where s = 'x'\")\n"
        "def x_f__mutmut_2(c):\n    return c.fetch(\"SELECT a FROM t WHERE s = 'X'\")\n"
        "def x_f__mutmut_3(c):\n    return c.fetch(None)\n"
    )
    codes = {"pkg.small.x_f__mutmut_1": 0, "pkg.small.x_f__mutmut_2": 0}
    codes["pkg.small.x_f__mutmut_3"] = 1
    (module.parent / "small.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    target = Target(name="pkg", modules=("pkg/small.py",), tests=(), floor=0.5)
    [score] = scores(target, tmp_path)
    assert (score.killed, score.survived, score.sql_case) == (
        1,
        ["pkg.small.x_f__mutmut_2 (survived)"],
        ["pkg.small.x_f__mutmut_1"],
    )
    assert report(target, [score], None, tmp_path, diff=False)
    out = capsys.readouterr().out
    assert "50.0%  killed 1/2, 1 changing only the letter case of SQL not counted" in out


def test_mutants_of_code_run_in_other_processes_are_counted_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A function that runs only in a process the tests start is called by no test that
    mutmut sees: its mutants are not scored."""
    codes = {f"pkg.small.x__worker__mutmut_{i}": 33 for i in range(1, 5)}
    target, score = _small(tmp_path, codes, in_other_process=("pkg.small.x__worker",))
    assert (score.killed, len(score.survived), score.elsewhere) == (1, 1, 4)
    assert report(target, [score], None, tmp_path, diff=False)
    out = capsys.readouterr().out
    assert "50.0%  killed 1/2, 4 of code run in other processes not counted" in out
