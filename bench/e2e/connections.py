"""Connections: memory of one gateway holding 10,000 idle authenticated sockets.

    .venv/bin/python -m bench.e2e.connections [--users 100] [--devices-per-user 100]

``--users`` users each sign in ``--devices-per-user`` times (one device per socket:
set-up reuses the users, so it costs 10,000 cheap sign-ins rather than 10,000
registrations); every socket sends ``hello`` subscribing to its user's personal space
and waits for ``caught_up``. The gateway's RSS (psutil) is read after start, after the
sign-ins (just before the sockets), with every socket caught up, and after a quiet
``--idle`` seconds (over which its CPU is measured too); the per-socket figure is the
growth from before the sockets to after the quiet period, divided by their number.
The drivers (several processes) and the gateway get their open-file limit raised.

``--deflate`` makes every device offer permessage-deflate, as browsers and Node's
``ws`` do; ``--server-compression`` runs the gateway with ``CONCORD_WS_COMPRESSION=true``,
which accepts the offer (off by default: docs/websocket.md, "Compression").
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from bench.e2e import cli
from bench.e2e import report as rep
from bench.e2e.accounts import Accounts
from bench.e2e.drivers import Drivers, Link, split
from bench.e2e.load import open_sockets
from bench.e2e.stack import open_stack, raise_nofile


@dataclass
class ConnectPlan:
    ws_url: str
    sockets: list[tuple[str, str]]  # (token, personal space)
    deflate: bool = False


async def drive_connections(plan: ConnectPlan, link: Link) -> dict[str, Any]:
    """Open every socket, wait for each ``caught_up``, hold them until told."""
    began = time.perf_counter()
    sockets = await open_sockets(
        plan.ws_url, [(t, [(s, 0)]) for t, s in plan.sockets], deflate=plan.deflate
    )
    for sock in sockets:
        while (await sock.recv()).type != "caught_up":
            pass
    took = time.perf_counter() - began
    await link.ready({"sockets": len(sockets), "seconds": took})
    await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    return {"closed": len(sockets)}


QUICK = {"users": 2, "devices_per_user": 10, "idle": 1.0}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--devices-per-user", type=int, default=100)
    parser.add_argument("--per-driver", type=int, default=2500, help="sockets per driver process")
    parser.add_argument("--idle", type=float, default=10.0, help="quiet seconds before reading")
    parser.add_argument(
        "--deflate", action="store_true", help="devices offer permessage-deflate (as browsers do)"
    )
    parser.add_argument(
        "--server-compression",
        action="store_true",
        help="the gateway accepts it (CONCORD_WS_COMPRESSION=true)",
    )


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


async def workload(args: argparse.Namespace, report: rep.Report) -> None:
    if args.profile:  # nothing here is a hot path: refuse rather than ignore the flag
        raise SystemExit(
            "--profile: this workload has no profile (ingest, fanout, hotspace, catchup do)"
        )
    if args.gateway_workers != 1:  # the memory of one process is the figure
        raise SystemExit("--gateway-workers: this workload measures one gateway process")
    total = args.users * args.devices_per_user
    nofile = total + 2000
    got = raise_nofile(nofile)
    env = {"CONCORD_WS_COMPRESSION": "true"} if args.server_compression else {}
    async with open_stack(args, projector=False, scheduler=False, nofile=nofile, env=env) as stack:
        await cli.describe(stack, report)
        gateway = stack.gateways[0]
        proc = gateway.ps()
        rss_start = proc.memory_info().rss
        async with Accounts(gateway.url) as accounts:
            with rep.phase_progress(f"registering {args.users} users", None):
                users = await accounts.users(args.users)
            with rep.phase_progress(f"{total - args.users:,} sign-ins", None):
                began = time.perf_counter()
                devices = [d for row in await accounts.devices(users, args.devices_per_user)
                           for d in row]  # fmt: skip
                signin_s = time.perf_counter() - began
        await asyncio.sleep(1)
        rss_before = proc.memory_info().rss
        drivers = max(1, math.ceil(total / args.per_driver))
        plans = [
            ConnectPlan(
                gateway.ws_url, [(d.token, d.personal_space_id) for d in part], args.deflate
            )
            for part in split(devices, drivers)
        ]
        pool = Drivers("bench.e2e.connections:drive_connections", plans).start()
        try:
            with rep.phase_progress(f"opening {total:,} sockets", None):
                ready = await pool.ready()
            stack.check_alive()
            rss_open = proc.memory_info().rss
            meter = rep.CpuMeter({"gateway": [proc]})
            meter.start()
            await asyncio.sleep(args.idle)
            idle_cpu = meter.stop()
            rss_idle = proc.memory_info().rss
            open_fds = proc.num_fds()
            pool.go("close")
            await pool.results()
        finally:
            pool.stop()
    held = sum(r["sockets"] for r in ready)
    per_socket = (rss_idle - rss_before) / held
    table = report.table(
        f"One gateway holding {held:,} idle authenticated sockets, each subscribed",
        ["what", "value"],
    )
    table.add("gateway RSS after start, MiB", mib(rss_start))
    table.add(f"after {total - args.users:,} sign-ins (before the sockets), MiB", mib(rss_before))
    table.add(f"with {held:,} sockets caught up, MiB", mib(rss_open))
    table.add(f"after {args.idle:.0f} s idle, MiB", mib(rss_idle))
    table.add("per socket, KiB", f"{per_socket / 1024:.1f}")
    table.add("gateway open files with the sockets", f"{open_fds:,}")
    table.add(
        "gateway CPU while idle, % of one core",
        f"{100 * idle_cpu[1]['gateway'] / idle_cpu[0]:.1f}%",
    )
    table.add("sign-ins/s (set-up)", rep.rate((total - args.users) / signin_s))
    connect_s = max(r["seconds"] for r in ready)
    table.add(
        f"sockets connected and caught up/s ({drivers} driver processes)",
        rep.rate(held / connect_s),
    )
    report.figures["sockets"] = held
    report.figures["per_socket_kib"] = per_socket / 1024
    offered = "offer permessage-deflate" if args.deflate else "offer no compression"
    accepted = "accepts it" if args.server_compression else "declines it (the default)"
    report.notes.append(
        f"Devices {offered}; the gateway {accepted}. "
        f"Open-file limit: {got:,} in the bench, raised towards {nofile:,} for the gateway and "
        "the drivers. Only a gateway runs (no projector or scheduler)."
    )


if __name__ == "__main__":
    cli.run("connections", __doc__, workload, configure, QUICK)
