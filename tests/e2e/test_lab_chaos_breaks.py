"""The checker of ``concord lab chaos`` bites: each deliberately broken build
(``CONCORD_TEST_BREAK``, core/breaks.py) runs a small chaos run, and the checker must
fail on the property that defect breaks: a checker that passes a broken server proves
nothing. (A file of its own, so that xdist runs it beside the quick run.)
"""

from __future__ import annotations

import pytest

from tests.e2e.chaos_support import SMALL, concord_lab_chaos, verdicts


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("defect", "seed", "fails"),
    [
        ("dedup", 11, "acknowledged-exactly-once"),
        ("checkpoint", 3, "converged"),
        ("removal", 2, "membership-respected"),
        ("hint", 5, "delivered-live"),
    ],
)
async def test_the_checker_fails_a_broken_build(defect: str, seed: int, fails: str) -> None:
    code, out = await concord_lab_chaos(*SMALL, "--seed", str(seed), within=540, breaks=defect)
    print(out)
    assert f"BROKEN BUILD: {defect}" in out
    assert verdicts(out).get(fails) == "FAILS", out
    assert code == 1
