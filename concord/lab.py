"""``concord lab SCENARIO|all [--against URL --admin-token T]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concord.command import CommandError

if TYPE_CHECKING:
    from lab.report import Outcome

HELP = "run reliability scenarios against a live server and report PASS/FAIL"
#: The scenarios, in the order ``all`` runs them (``lab.scenarios.SCENARIOS`` has the
#: code; it is imported only when the lab runs, so ``concord`` starts without the SDK's
#: dependencies).
NAMES = ("offline-replay", "multi-device-conflict", "auth-expiry-mid-queue", "missed-reminder")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``concord lab``."""
    parser = subparsers.add_parser(
        "lab",
        help=HELP,
        description=HELP + ". Without --against, a throwaway `concord dev` is started.",
    )
    parser.add_argument("scenario", choices=[*NAMES, "all"], help="a scenario, or all")
    parser.add_argument("--against", metavar="URL", help="a running server (http://host:port)")
    parser.add_argument(
        "--admin-token",
        metavar="TOKEN",
        help="the server's CONCORD_ADMIN_TOKEN (default: $CONCORD_ADMIN_TOKEN), for /metrics",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="keep the lab's own server data here (default: a temporary dir, removed)",
    )
    parser.set_defaults(handler=cmd_lab)


async def _until_signalled(work: Coroutine[Any, Any, list[Outcome]]) -> list[Outcome]:
    """Run ``work``; SIGTERM cancels it, so the lab's own server is still stopped."""
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


def cmd_lab(args: argparse.Namespace) -> None:
    for noisy in ("httpx", "concord.client"):  # the lab prints its own account
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from lab.runner import run_lab

    names = list(NAMES) if args.scenario == "all" else [args.scenario]
    token = args.admin_token or os.environ.get("CONCORD_ADMIN_TOKEN")
    if args.against and not token:
        raise CommandError("--admin-token (or CONCORD_ADMIN_TOKEN) is required with --against")
    try:
        outcomes = asyncio.run(
            _until_signalled(
                run_lab(names, against=args.against, admin_token=token, data_dir=args.data_dir)
            )
        )
    except asyncio.CancelledError:
        raise SystemExit(143) from None
    if any(o.status == "FAIL" for o in outcomes):
        raise SystemExit(1)
