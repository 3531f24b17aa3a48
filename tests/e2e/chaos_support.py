"""Running ``concord lab chaos`` from the tests: the command, and the verdicts of its
report. Each run starts its own embedded PostgreSQL and NATS (not the test run's
services): the faults restart them."""

from __future__ import annotations

import asyncio
import os
import re
import sys

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
