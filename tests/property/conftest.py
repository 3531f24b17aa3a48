"""Registers the Hypothesis profiles (`ci`, the default, and `thorough`): see profiles.py.

Select one with `--hypothesis-profile=thorough`; with none given, `ci` is loaded. A profile
with more examples than `ci` lifts the per-test timeout for the tests of this directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from tests.property import profiles

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if settings().max_examples <= profiles.CI_EXAMPLES:
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(0))
