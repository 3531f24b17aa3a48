"""``concord lab SCENARIO|all [--against URL --admin-token T]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concord.command import CommandError

if TYPE_CHECKING:
    from lab.chaos.checker import Verdict
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
    parser.add_argument(
        "scenario",
        choices=[*NAMES, "all", "chaos"],
        help="a scenario, all, or chaos (many devices under every fault; docs/reliability.md)",
    )
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
    chaos = parser.add_argument_group("chaos")
    chaos.add_argument(
        "--seed", type=int, help="chaos: the fault schedule's seed (default: random)"
    )
    chaos.add_argument("--quick", action="store_true", help="chaos: about 10,000 ops (CI)")
    chaos.add_argument("--ops", type=int, metavar="N", help="chaos: ops in all (default 100000)")
    chaos.add_argument(
        "--rate", type=float, metavar="R", help="chaos: ops per second over all devices (110)"
    )
    chaos.add_argument("--users", type=int, default=10, help="chaos: users (default 10)")
    chaos.add_argument(
        "--devices-per-user", type=int, default=5, metavar="N", help="chaos: default 5"
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
    if args.scenario == "chaos":
        cmd_chaos(args)
        return
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


def cmd_chaos(args: argparse.Namespace) -> None:
    """``concord lab chaos``: exit 0 only when every property held."""
    logging.getLogger("concord.client").setLevel(logging.CRITICAL)
    from core.breaks import BREAK_ENV
    from lab.chaos.run import ChaosConfig, run_chaos

    if args.against:
        raise CommandError("concord lab chaos starts its own servers: --against is not for it")
    if args.users < 4 or args.devices_per_user < 1:
        raise CommandError("concord lab chaos needs --users 4 or more and --devices-per-user 1+")
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    ops = args.ops or (10_000 if args.quick else 100_000)
    command = f"concord lab chaos --seed {seed} --ops {ops}"
    if (args.users, args.devices_per_user) != (10, 5):
        command += f" --users {args.users} --devices-per-user {args.devices_per_user}"
    config = ChaosConfig(
        seed=seed,
        ops=ops,
        users=args.users,
        devices_per_user=args.devices_per_user,
        data_dir=args.data_dir,
        command=command,
    )
    if args.rate:
        config.rate = args.rate
        config.command += f" --rate {args.rate:g}"
    breaks = os.environ.get(BREAK_ENV, "")
    config.breaks = tuple(b for b in breaks.split(",") if b)
    try:
        verdicts = asyncio.run(_until_signalled_chaos(run_chaos(config)))
    except asyncio.CancelledError:
        raise SystemExit(143) from None
    if not all(v.holds for v in verdicts):
        raise SystemExit(1)


async def _until_signalled_chaos(work: Coroutine[Any, Any, list[Verdict]]) -> list[Verdict]:
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task
