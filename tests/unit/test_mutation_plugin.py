"""The mutation runs' pytest plugin: each mutant's tests quickest first, file by file,
and a timeout per timed test."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from tests.mutation.plugin import (
    HANG_FACTOR,
    HANG_FLOOR,
    STATS,
    hang_timeout,
    pytest_collection_modifyitems,
    quickest_first,
)


@dataclass
class _Item:
    nodeid: str
    markers: list[pytest.Mark] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.nodeid.partition("::")[0])

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return next((m for m in self.markers if m.name == name), None)

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.markers.append(marker.mark)


def _order(nodeids: list[str], durations: dict[str, float]) -> list[str]:
    items = cast(list[pytest.Item], [_Item(n) for n in nodeids])
    return [i.nodeid for i in quickest_first(items, durations)]


def test_quickest_first_file_by_file() -> None:
    durations = {
        "a.py::slow": 3.0,
        "a.py::quick": 0.5,
        "b.py::quicker": 0.1,
        "b.py::slowest": 9.0,
        "c.py::middling": 1.0,
    }
    got = _order(
        ["a.py::slow", "c.py::middling", "b.py::slowest", "a.py::quick", "b.py::quicker"], durations
    )
    # b holds the quickest test, then a (0.5), then c (1.0); each file's tests together.
    assert got == ["b.py::quicker", "b.py::slowest", "a.py::quick", "a.py::slow", "c.py::middling"]


def test_an_untimed_test_counts_as_quick_and_keeps_its_place() -> None:
    durations = {"a.py::timed": 2.0, "b.py::timed": 1.0}
    got = _order(["a.py::timed", "a.py::new", "a.py::newer", "b.py::timed"], durations)
    assert got == ["a.py::new", "a.py::newer", "a.py::timed", "b.py::timed"]


def test_hang_timeout() -> None:
    assert hang_timeout(0.0) == HANG_FLOOR
    assert hang_timeout(HANG_FLOOR / HANG_FACTOR / 2) == HANG_FLOOR
    assert hang_timeout(2.0) == 2.0 * HANG_FACTOR > HANG_FLOOR


def _timeout(item: _Item) -> float | None:
    mark = item.get_closest_marker("timeout")
    return None if mark is None else float(mark.args[0])


def test_the_hook_needs_mutmuts_durations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mutmut runs pytest where it keeps ``mutmut-stats.json``: there the tests are
    reordered and timed out; anywhere else (a plain run) nothing changes."""
    monkeypatch.chdir(tmp_path)
    items = [
        _Item("a.py::slow"),
        _Item("a.py::quick"),
        _Item("a.py::own", [pytest.mark.timeout(3).mark]),
    ]
    plain = list(items)
    pytest_collection_modifyitems(cast(list[pytest.Item], plain))
    assert plain == items
    assert [_timeout(i) for i in items] == [None, None, 3.0]

    durations = {"a.py::slow": 2.0, "a.py::quick": 0.1, "a.py::own": 1.0}
    (tmp_path / STATS).write_text(json.dumps({"duration_by_test": durations}))
    pytest_collection_modifyitems(cast(list[pytest.Item], items))
    assert [i.nodeid for i in items] == ["a.py::quick", "a.py::own", "a.py::slow"]
    # A timeout the test names itself is kept.
    assert [_timeout(i) for i in items] == [HANG_FLOOR, 3.0, 2.0 * HANG_FACTOR]


def test_unreadable_stats_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / STATS).write_text("{not json")
    items = [_Item("a.py::b"), _Item("a.py::a")]
    pytest_collection_modifyitems(cast(list[pytest.Item], items))
    assert [i.nodeid for i in items] == ["a.py::b", "a.py::a"]
    assert [_timeout(i) for i in items] == [None, None]
