"""``make mutation``: run mutmut over each target of ``targets.py`` and report.

    python -m tests.mutation.run [TARGET ...] [--jobs N] [--diff] [--work DIR]

Each target runs in its own copy of the project (``build/mutation/<target>``), so its
mutmut configuration (modules, test subset) and its cache of verdicts are its own: a run
again retests only the functions that changed. Prints, per module, the mutants killed and
surviving and the score (killed / mutants with a verdict, a function no test reaches
counting as surviving), then each survivor (``--diff``: with its diff). Exits 1 when a
module is below its target's floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from tests.conftest import (
    IN_PROCESS,
    IN_PROCESS_ENV,
    SHARED_DATABASE_ENV,
    create_database,
    drop_database,
)
from tests.mutation.equivalent import equivalent_by_sql_case
from tests.mutation.targets import BY_NAME, PACKAGES, TARGETS, Target

ROOT = Path(__file__).resolve().parents[2]

# mutmut's exit codes per mutant (mutmut/stats.py), sorted into the three outcomes that count.
KILLED_CODES = {1, 3, 36, 37, -24, 24, 152, 255, -11, -9}  # failed, timed out, crashed
SURVIVED_CODES = {0, 5, 33, 35}  # passed, no test reached it, suspicious
# Anything else (None: not run yet, 34: skipped, 2: interrupted) has no verdict.

PYTEST_ARGS = (
    "-p",
    "no:cacheprovider",
    "-p",
    "tests.mutation.plugin",
    "--hypothesis-profile=mutation",
    "-x",
    "-q",
)


@dataclass
class ModuleScore:
    module: str
    killed: int = 0
    survived: list[str] = field(default_factory=list)
    unchecked: int = 0
    #: mutmut has mutated this module (its ``.meta`` file exists).
    ran: bool = True
    #: Mutants of ``Target.at_import`` functions, whose verdicts mean nothing: not scored.
    at_import: int = 0
    #: Mutants of ``Target.in_other_process`` functions, invisible to mutmut: not scored.
    elsewhere: int = 0
    #: Surviving mutants that only change the letter case of SQL outside its quotes
    #: (tests/mutation/equivalent.py): equivalent, not scored.
    sql_case: list[str] = field(default_factory=list)

    @property
    def decided(self) -> int:
        return self.killed + len(self.survived)

    @property
    def score(self) -> float:
        return self.killed / self.decided if self.decided else 1.0


def _lines(key: str, values: list[str]) -> str:
    return f"{key} =\n" + "".join(f"    {v}\n" for v in values)


def setup_cfg(target: Target) -> str:
    """mutmut's configuration for one target (setup.cfg of its working copy)."""
    others = [p for p in PACKAGES if p not in target.packages]
    return (
        "[mutmut]\n"
        + _lines("source_paths", list(target.packages))
        + _lines("only_mutate", list(target.modules))
        + _lines("also_copy", others)
        + _lines("pytest_add_cli_args", list(PYTEST_ARGS))
        + _lines("pytest_add_cli_args_test_selection", list(target.tests))
        + "use_git_change_detection = false\n"
    )


def prepare(target: Target, work: Path) -> None:
    """Bring the target's working copy up to date with the project (mtimes kept, so mutmut
    regenerates only the mutants of files that changed)."""
    work.mkdir(parents=True, exist_ok=True)
    for name in (*PACKAGES, "tests"):
        subprocess.run(
            [
                "rsync",
                "-a",
                "--delete",
                "--exclude",
                "__pycache__",
                f"{ROOT / name}/",
                f"{work / name}/",
            ],
            check=True,
        )
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")
    (work / "setup.cfg").write_text(setup_cfg(target))
    if target.gateway_in_process:
        for module in target.modules:
            copy = work / module
            copy.write_text(decorators_after(copy.read_text()))
            # the original's mtime: mutmut regenerates the mutants of changed files only
            mtime = (ROOT / module).stat().st_mtime
            os.utime(copy, (mtime, mtime))


def decorators_after(source: str) -> str:
    """``source`` with each decorated module-level function written undecorated, then
    rebound to its decorated self (``f = post("/")(f)``): the same module once imported.

    mutmut mutates no decorated function, and a route handler is one. Its decorators
    (``@post(...)`` and the like) only register it, so applying them after the definition
    changes nothing, and mutmut then mutates the handler's body like any function's.
    """
    module = cst.parse_module(source)
    body: list[cst.BaseStatement] = []
    for statement in module.body:
        if not isinstance(statement, cst.FunctionDef) or not statement.decorators:
            body.append(statement)
            continue
        name = statement.name.value
        decorated: cst.BaseExpression = cst.Name(name)
        for decorator in reversed(statement.decorators):
            decorated = cst.Call(func=decorator.decorator, args=[cst.Arg(decorated)])
        body.append(statement.with_changes(decorators=[]))
        body.append(
            cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(cst.Name(name))], decorated)])
        )
    return module.with_changes(body=body).code


@contextlib.contextmanager
def shared_database(target: Target) -> Iterator[dict[str, str]]:
    """The environment of a target's mutmut run: for a target on real services, one
    migrated database that every mutant's tests use (``CONCORD_TEST_SHARED_DATABASE``),
    dropped at the end. Without it each mutant's test session would create, migrate and
    drop a database of its own, the larger part of what a quickly killed mutant costs.
    The tests already share their run's database (each works in spaces of its own), so
    the data earlier mutants left behind is nothing they look at."""
    env = dict(os.environ)
    if target.gateway_in_process:
        env[IN_PROCESS_ENV] = IN_PROCESS
    if not target.services:
        yield env
        return
    server = os.environ["CONCORD_TEST_DATABASE_URL"]
    dsn = asyncio.run(create_database(server))
    env[SHARED_DATABASE_ENV] = dsn.partition("?")[0].rpartition("/")[2]
    try:
        yield env
    finally:
        asyncio.run(drop_database(server, dsn))


def run_mutmut(target: Target, work: Path, jobs: int, names: list[str]) -> float:
    """Run mutmut niced in ``work`` (only the mutants ``names``, when given); its output
    goes to ``work/mutmut.log``. Seconds taken."""
    start = time.monotonic()
    cmd = ["nice", "-n", "10", sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)]
    cmd += names
    with shared_database(target) as env, (work / "mutmut.log").open("w") as log:
        done = subprocess.run(
            cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = (work / "mutmut.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut failed for {target.name} (exit {done.returncode}):\n{tail}")
    return time.monotonic() - start


def scores(target: Target, work: Path) -> list[ModuleScore]:
    """Each module's verdicts, read from mutmut's ``.meta`` files."""
    out = []
    for module in target.modules:
        meta = work / "mutants" / f"{module}.meta"
        result = ModuleScore(module, ran=meta.exists())
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        for name, code in sorted(codes.items()):
            if name.partition("__mutmut_")[0] in target.at_import:
                result.at_import += 1
            elif name.partition("__mutmut_")[0] in target.in_other_process:
                result.elsewhere += 1
            elif code in KILLED_CODES:
                result.killed += 1
            elif code == 0 and equivalent_by_sql_case(work / "mutants" / module, name):
                result.sql_case.append(name)
            elif code in SURVIVED_CODES:
                result.survived.append(f"{name} ({_STATUS.get(code, code)})")
            else:
                result.unchecked += 1
        out.append(result)
    return out


_STATUS = {0: "survived", 5: "no tests", 33: "no tests", 35: "suspicious"}


def show(work: Path, mutant: str) -> str:
    """mutmut's diff of one mutant."""
    name = mutant.split(" ", 1)[0]
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def report(
    target: Target, results: list[ModuleScore], seconds: float | None, work: Path, diff: bool
) -> bool:
    """Print the target's scores and survivors; True when every module reaches the floor
    (with ``target.whole``: when the modules together reach it)."""
    took = "" if seconds is None else f", {seconds / 60:.1f} min"
    whole = " for the modules together" if target.whole else ""
    print(
        f"\n== {target.name} (floor {target.floor:.0%}{whole}{took}; "
        f"tests: {' '.join(target.tests)})"
    )
    ok = True
    for r in results:
        if not r.ran:
            print(f"  {r.module:34} not run yet")
            ok = False
            continue
        below = r.score < target.floor and not target.whole
        ok = ok and not below
        extra = f", {r.unchecked} not run" if r.unchecked else ""
        if r.at_import:
            extra += f", {r.at_import} of code run at import not counted"
        if r.elsewhere:
            extra += f", {r.elsewhere} of code run in other processes not counted"
        if r.sql_case:
            extra += f", {len(r.sql_case)} changing only the letter case of SQL not counted"
        flag = "  BELOW FLOOR" if below else ""
        print(f"  {r.module:34} {r.score:6.1%}  killed {r.killed}/{r.decided}{extra}{flag}")
    if target.whole and ok:
        total = ModuleScore(
            "all",
            killed=sum(r.killed for r in results),
            survived=[m for r in results for m in r.survived],
        )
        below = total.score < target.floor
        ok = not below
        flag = "  BELOW FLOOR" if below else ""
        print(
            f"  {'(together)':34} {total.score:6.1%}  killed {total.killed}/{total.decided}{flag}"
        )
    for r in results:
        for mutant in r.survived:
            print(f"    survived: {mutant}")
            if diff:
                print("      " + show(work, mutant).replace("\n", "\n      "))
        if r.sql_case and diff:
            print(f"    SQL in another letter case ({r.module}): {', '.join(r.sql_case)}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(BY_NAME))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATION_JOBS", "1")))
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("--diff", action="store_true", help="print each survivor's diff")
    parser.add_argument("--report-only", action="store_true", help="report the last run's verdicts")
    parser.add_argument(
        "--again", action="store_true", help="retest only the last run's survivors (new tests)"
    )
    args = parser.parse_args(argv)
    # Stopped with SIGTERM, still drop the run's shared database (shared_database).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    unknown = [n for n in args.targets if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    chosen = [BY_NAME[n] for n in args.targets] or list(TARGETS)
    missing = [
        v for v in ("CONCORD_TEST_DATABASE_URL", "CONCORD_TEST_NATS_URL") if not os.environ.get(v)
    ]
    ok = True
    for target in chosen:
        work = args.work / target.name
        seconds = None
        if not args.report_only:
            if target.services and missing:
                print(f"\n== {target.name}: skipped, set {' and '.join(missing)} (real services)")
                ok = False
                continue
            again = (
                [m.split(" ", 1)[0] for r in scores(target, work) for m in r.survived]
                if args.again
                else []
            )
            if args.again and not again:
                print(f"\n== {target.name}: no survivors to retest")
            else:
                prepare(target, work)
                jobs = 1 if target.serial else args.jobs
                seconds = run_mutmut(target, work, jobs, again)
        ok = report(target, scores(target, work), seconds, work, args.diff) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
