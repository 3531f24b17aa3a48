"""``concord lab chaos --quick``: about 10,000 ops by 50 devices under every fault kind
end with every property holding (the checker's bite: test_lab_chaos_breaks.py).

Each run starts its own embedded PostgreSQL and NATS (not the test run's services):
the faults restart them.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.chaos_support import PROPERTIES, concord_lab_chaos, verdicts


@pytest.mark.timeout(900)
async def test_quick_chaos_run_passes() -> None:
    code, out = await concord_lab_chaos("--quick", "--seed", "7", within=840)
    print(out)
    assert verdicts(out) == dict.fromkeys(PROPERTIES, "HOLDS"), out
    assert "PASS: every property holds" in out
    assert code == 0
    faults = re.search(r"faults injected\s+(\d+): (.*)", out)
    assert faults is not None
    assert int(faults.group(1)) >= 14, "every fault kind is injected"
    made = re.search(r"ops attempted \(made on devices\)\s+(\d+)", out)
    assert made is not None
    assert int(made.group(1)) >= 10_000
