"""The options every workload shares, and the run around a workload.

--dsn/--nats  the services (else CONCORD_TEST_DATABASE_URL/CONCORD_TEST_NATS_URL,
              else embedded ones)
--quick       tiny sizes, seconds (the smoke test's mode)
--record      append the result to docs/benchmarks.md
--json PATH   write the result (with its raw figures) as JSON
--profile     py-spy the gateway (and projector) during the load (bench/out/)
--gateway-workers N
              processes of each gateway (``concord gateway --workers N``, one port);
              default 1
--keep-logs   keep the Concord processes' logs (always kept when a run fails)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench.e2e import report as rep
from bench.e2e.stack import Stack

Workload = Callable[[argparse.Namespace, rep.Report], Coroutine[Any, Any, None]]


def _workers(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 64:  # what concord gateway --workers accepts
        raise argparse.ArgumentTypeError("between 1 and 64")
    return value


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    lines = (doc or name).strip().splitlines()
    made = argparse.ArgumentParser(
        prog=f"python -m bench.e2e.{name}",
        description=lines[0],
        epilog="\n".join(lines[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    made.add_argument("--dsn", help="PostgreSQL server DSN (a scratch database is made)")
    made.add_argument("--nats", help="NATS URL (with JetStream)")
    made.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for smoke tests")
    made.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    made.add_argument("--json", type=Path, help="write the result as JSON to this file")
    made.add_argument(
        "--profile", action="store_true", help="py-spy the gateway and projector under load"
    )
    made.add_argument(
        "--keep-logs", action="store_true", help="keep the processes' logs in bench/out/logs"
    )
    made.add_argument(
        "--gateway-workers",
        type=_workers,
        default=1,
        metavar="N",
        help="processes of each gateway, sharing its port (concord gateway --workers N)",
    )
    return made


def gateway_note(args: argparse.Namespace) -> str:
    """How each gateway ran, for a report's notes: "one gateway" or "one gateway of 2
    worker processes"."""
    workers: int = args.gateway_workers
    return "one gateway" + (f" of {workers} worker processes" if workers > 1 else "")


async def describe(stack: Stack, report: rep.Report) -> None:
    """What the record states about the services."""
    assert stack.pool is not None
    report.postgres = await rep.postgres_settings(stack.pool)
    report.services = stack.services.source


def main(name: str, workload: Workload, args: argparse.Namespace) -> int:
    report = rep.Report(
        workload=name,
        command=rep.command_line(),
        date=time.strftime("%Y-%m-%d %H:%M %Z"),
        machine=rep.machine(),
    )
    try:
        asyncio.run(workload(args, report))
    except KeyboardInterrupt:
        return 130
    rep.finish(report)
    rep.show(report)
    if args.json:
        rep.write_json(report, args.json)
    if args.record:
        rep.record(report)
    return 0


def run(
    name: str,
    doc: str | None,
    workload: Workload,
    configure: Callable[[argparse.ArgumentParser], None],
    quick: dict[str, Any],
) -> None:
    """Parse the shared options plus the workload's own (``configure(parser)``), run.

    ``--quick`` replaces the defaults by ``quick``; options given explicitly still win."""
    made = parser(name, doc)
    configure(made)
    args = made.parse_args()
    if args.quick:
        made.set_defaults(**quick)
        args = made.parse_args()
    sys.exit(main(name, workload, args))
