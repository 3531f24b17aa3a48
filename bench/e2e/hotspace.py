"""Hot space: 200 devices writing into one shared space, against the same load over 20.

    .venv/bin/python -m bench.e2e.hotspace [--devices 200] [--spaces 20]

``--devices`` devices (``--spaces`` users with ``devices / spaces`` sign-ins each) push
``--ops-per-push`` field sets in a closed loop, as in ``ingest``: first all into one
space (every user a member), then each user's devices into a space of their own. A
space's appends are serialised by its row lock (gapless, commit-ordered seqs), so one
hot space is the worst case of the write path.
"""

from __future__ import annotations

import argparse

from bench.e2e import cli
from bench.e2e import report as rep
from bench.e2e.accounts import Accounts
from bench.e2e.ingest import add_rows
from bench.e2e.load import Assignment, ingest
from bench.e2e.stack import open_stack

QUICK = {
    "devices": 6, "spaces": 2, "ops_per_push": 20, "seconds": 2.0, "warm": 0.5,
    "drain_timeout": 60.0,
}  # fmt: skip


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--spaces", type=int, default=20, help="spaces of the spread-out run")
    parser.add_argument("--ops-per-push", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warm", type=float, default=3.0)
    parser.add_argument("--drivers", type=int, default=1)
    parser.add_argument("--drain-timeout", type=float, default=180.0)


async def workload(args: argparse.Namespace, report: rep.Report) -> None:
    per_user = args.devices // args.spaces
    async with open_stack(args) as stack:
        await cli.describe(stack, report)
        async with Accounts(stack.gateways[0].url) as accounts:
            with rep.phase_progress(f"{args.spaces} users, {args.devices} devices", None):
                users = await accounts.users(args.spaces)
                rows = await accounts.devices(users, per_user)
                (hot,) = await accounts.shared_spaces([users])
                spread = await accounts.shared_spaces([[u] for u in users])
        runs = []
        for label, space_of_user in (
            ("1 space", [hot] * len(users)),
            (f"{len(spread)} spaces", spread),
        ):
            devices = [
                Assignment(d.token, space_of_user[u], f"{label.split()[0]}s-{u}-{i}")
                for u, row in enumerate(rows)
                for i, d in enumerate(row)
            ]
            runs.append(
                await ingest(
                    stack, devices, label=label, ops_per_push=args.ops_per_push,
                    seconds=args.seconds, warm=args.warm, drivers=args.drivers,
                    drain_timeout=args.drain_timeout,
                    profile=f"hotspace-{label.replace(' ', '')}" if args.profile else None,
                )
            )  # fmt: skip
            rep.console.print(f"{label}: {runs[-1].ops_per_s:,.0f} ops/s")
    add_rows(report, f"Hot space: {args.devices} devices, one space against {args.spaces}", runs,
             args.drain_timeout)  # fmt: skip
    one, many = runs
    if many.ops_per_s:
        report.ratio("ops/s in 1 space / in many", one.ops_per_s / many.ops_per_s)
    if many.p(99):
        report.ratio("ack p99 in 1 space / in many", one.p(99) / many.p(99))
    report.figures["one_space_ops_per_s"] = one.ops_per_s
    report.figures["many_spaces_ops_per_s"] = many.ops_per_s


if __name__ == "__main__":
    cli.run("hotspace", __doc__, workload, configure, QUICK)
