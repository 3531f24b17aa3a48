"""``concord lab chaos``: the quick run passes, and the checker bites.

The quick run (about 10,000 ops by 50 devices under every fault kind) must end with
every property holding. Then each deliberately broken build (``CONCORD_TEST_BREAK``,
core/breaks.py) runs a small chaos run, and the checker must fail on the property that
defect breaks: a checker that passes a broken server proves nothing.

Each run starts its own embedded PostgreSQL and NATS (not the test run's services):
the faults restart them.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest

#: A small run: 12 devices of 4 users, 30 s of chaos (every fault kind once).
SMALL = ("--ops", "1500", "--rate", "50", "--users", "4", "--devices-per-user", "3")


async def concord_lab_chaos(
    *args: str, within: float, breaks: str | None = None
) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    if breaks:
        env["CONCORD_TEST_BREAK"] = breaks
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "concord", "lab", "chaos", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.terminate()  # the run stops its own servers on SIGTERM
        out, _ = await proc.communicate()
        raise AssertionError(
            f"concord lab chaos did not finish in {within}s:\n{out.decode()}"
        ) from None
    return proc.returncode or 0, out.decode()


def verdicts(out: str) -> dict[str, str]:
    """property -> HOLDS or FAILS, from the report table."""
    return dict(re.findall(r"^  ([a-z-]+)\s+(HOLDS|FAILS)\s", out, re.MULTILINE))


PROPERTIES = {
    "acknowledged-exactly-once",
    "queues-accounted",
    "converged",
    "log-gapless-chained",
    "reminders-once",
    "membership-respected",
    "counters-sum",
    "delivered-live",
}


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
