"""A pytest plugin for mutation runs: the ``mutation`` Hypothesis profile, and the cheap
tests first.

Loaded with ``-p tests.mutation.plugin --hypothesis-profile=mutation`` by ``run.py``. Each
mutant reruns the property tests, so they draw fewer examples than ``ci`` and are
derandomised (the same examples for every mutant, no example database): a score does not
move between two runs of the same code.

mutmut runs each mutant's tests with ``-x``, in no particular order: the first failure
ends the run, so the tests that took least time when mutmut timed them
(``mutmut-stats.json``) run first, one file after another (a file's module fixtures are
made once), the file whose quickest test is quickest first. A mutant is killed as
surely, sooner; the verdicts do not depend on the order, as the tests do not. Each timed
test also gets a timeout of its own, ``HANG_FACTOR`` times its time but at least
``HANG_FLOOR`` seconds: a mutant that makes a test wait forever (a lost wake-up, say)
fails that test then, instead of running into mutmut's limit (15 times the time of all
the mutant's tests) or the suite's 120 s. A hang is a verdict of killed either way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

MUTATION_EXAMPLES = 50

settings.register_profile(
    "mutation",
    max_examples=MUTATION_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


#: A timed test's timeout in a mutant run: this many times its time, at least the floor.
HANG_FACTOR = 20
HANG_FLOOR = 10.0

#: Where mutmut keeps each test's duration (it runs pytest in its ``mutants`` directory).
STATS = Path("mutmut-stats.json")


def _durations() -> dict[str, float]:
    try:
        stats = json.loads(STATS.read_text())
    except (OSError, ValueError):
        return {}
    durations = stats.get("duration_by_test", {}) if isinstance(stats, dict) else {}
    return {str(k): float(v) for k, v in durations.items()}


def quickest_first(items: list[pytest.Item], durations: dict[str, float]) -> list[pytest.Item]:
    """``items`` by file, each file's quickest test first; files by their quickest test.
    A test not timed counts as taking no time (stable: those keep their order)."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(str(item.path), []).append(item)

    def took(item: pytest.Item) -> float:
        return durations.get(item.nodeid, 0.0)

    ordered = [sorted(group, key=took) for group in files.values()]
    ordered.sort(key=lambda group: took(group[0]))
    return [item for group in ordered for item in group]


def hang_timeout(took: float) -> float:
    """The timeout of a test that took ``took`` seconds when mutmut timed it."""
    return max(HANG_FLOOR, HANG_FACTOR * took)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    durations = _durations()
    if not durations:
        return
    items[:] = quickest_first(items, durations)
    for item in items:
        took = durations.get(item.nodeid)
        if took is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(hang_timeout(took)))
