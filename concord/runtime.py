"""Process-wide tuning that every Concord process applies at start (``concord ...``).

CPython's cyclic garbage collector runs a young-generation pass every 700 container
allocations and, every 10 of those, an older pass that walks every surviving object
again. A serving process allocates a few small objects per op (parsed ops, results,
events) and keeps none of them in cycles, so with the default thresholds it spends a
sixth of a write's CPU walking objects that reference counting frees anyway (measured
with ``bench/eventstore_bench.py``: see docs/benchmarks.md). Concord therefore

* freezes what exists after start-up (modules, settings, schema: never garbage), so no
  collection walks it again (https://docs.python.org/3/library/gc.html#gc.freeze);
* raises the young-generation threshold to 20,000 allocations and the older ones to 50
  and 100 passes: cycles are still collected, in passes a few MB apart.

``CONCORD_GC_THRESHOLD`` (three integers, ``"700,10,10"`` for CPython's defaults)
overrides the thresholds.
"""

from __future__ import annotations

import gc
import os

DEFAULT_THRESHOLDS = (20_000, 50, 100)


class RuntimeSettingError(ValueError):
    """``CONCORD_GC_THRESHOLD`` is not three positive integers."""


def gc_thresholds(environ: dict[str, str] | None = None) -> tuple[int, int, int]:
    """The thresholds to use: ``CONCORD_GC_THRESHOLD`` or the defaults."""
    raw = (os.environ if environ is None else environ).get("CONCORD_GC_THRESHOLD", "")
    if not raw.strip():
        return DEFAULT_THRESHOLDS
    parts = raw.split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise RuntimeSettingError(
            f"CONCORD_GC_THRESHOLD must be three positive integers like 700,10,10, got {raw!r}"
        )
    return values[0], values[1], values[2]


def tune_gc(environ: dict[str, str] | None = None) -> tuple[int, int, int]:
    """Freeze the objects made so far and set the collector's thresholds; returns them."""
    thresholds = gc_thresholds(environ)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return thresholds
