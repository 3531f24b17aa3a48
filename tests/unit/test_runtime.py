"""Process tuning applied by every ``concord`` command."""

from __future__ import annotations

import gc

import pytest

from concord.runtime import DEFAULT_THRESHOLDS, RuntimeSettingError, gc_thresholds, tune_gc


def test_defaults_and_override() -> None:
    assert gc_thresholds({}) == DEFAULT_THRESHOLDS
    assert gc_thresholds({"CONCORD_GC_THRESHOLD": " "}) == DEFAULT_THRESHOLDS
    assert gc_thresholds({"CONCORD_GC_THRESHOLD": "700,10,10"}) == (700, 10, 10)


@pytest.mark.parametrize("raw", ["700", "a,b,c", "700,10,0", "1,2,3,4", "700,-1,10"])
def test_bad_thresholds_name_the_variable(raw: str) -> None:
    with pytest.raises(RuntimeSettingError, match="CONCORD_GC_THRESHOLD"):
        gc_thresholds({"CONCORD_GC_THRESHOLD": raw})


def test_tune_gc_freezes_and_sets_thresholds() -> None:
    before = gc.get_threshold()
    try:
        assert tune_gc({"CONCORD_GC_THRESHOLD": "5000,20,30"}) == (5000, 20, 30)
        assert gc.get_threshold() == (5000, 20, 30)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
