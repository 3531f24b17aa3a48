"""Run scenarios one after the other against one server and collect their outcomes."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from lab.context import Lab
from lab.report import Outcome, Report, summary
from lab.scenarios import SCENARIOS
from lab.server import LabServer, OwnServer

#: No scenario may run longer than this (seconds); a hung one fails, the rest go on.
SCENARIO_TIMEOUT = 600.0


async def run_scenarios(
    names: list[str], server: LabServer, out: TextIO = sys.stdout
) -> list[Outcome]:
    workdir = Path(tempfile.mkdtemp(prefix="concord-lab-devices-"))
    lab = Lab(server, workdir)
    outcomes: list[Outcome] = []
    try:
        for name in names:
            report = Report(name, out)
            meter = lab.meter()
            error: BaseException | None = None
            try:
                await meter.start()
                await asyncio.wait_for(SCENARIOS[name](lab, report, meter), SCENARIO_TIMEOUT)
            except Exception as exc:  # a scenario's failure is its verdict, not the run's
                error = exc
            outcomes.append(report.finish(meter if meter.last else None, error))
    finally:
        await lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return outcomes


async def run_lab(
    names: list[str],
    *,
    against: str | None,
    admin_token: str | None,
    data_dir: Path | None = None,
    out: TextIO = sys.stdout,
) -> list[Outcome]:
    """Against a given server, or a throwaway ``concord dev`` of the lab's own."""
    if against:
        if not admin_token:
            raise ValueError("--admin-token (or CONCORD_ADMIN_TOKEN) is needed with --against")
        server: LabServer = LabServer(against, admin_token)
    else:
        server = OwnServer(data_dir)
    print(f"concord lab: {server.describe()}", file=out, flush=True)
    try:
        if isinstance(server, OwnServer):
            await server.start()
            print(f"concord lab: own server ready at {server.url}", file=out, flush=True)
        outcomes = await run_scenarios(names, server, out)
    finally:
        await server.close()
    if len(names) > 1:
        summary(outcomes, lambda line: print(line, file=out, flush=True))
    return outcomes
