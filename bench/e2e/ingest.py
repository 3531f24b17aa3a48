"""Ingest: N devices pushing over WebSocket as fast as acks allow.

    .venv/bin/python -m bench.e2e.ingest [--devices 50,200] [--ops-per-push 100,1]

Each device is a user of its own (writing in its personal space), pushes
``--ops-per-push`` field sets over its own 1,000 tasks, and waits for each
``push_result`` before the next push. Reported per configuration: durable ops/s (acks
come after COMMIT), pushes/s, ack latency p50/p95/p99, then the projector's and the
relay's lag (events committed but not yet projected / published to JetStream, read
from PostgreSQL) when the load stops, and how long each takes to drain.
"""

from __future__ import annotations

import argparse

from bench.e2e import cli
from bench.e2e import report as rep
from bench.e2e.accounts import Accounts
from bench.e2e.load import Measurement, assignments, ingest, seconds_or_dash
from bench.e2e.profiling import add_to_report
from bench.e2e.stack import open_stack


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", default="50,200", help="device counts, comma-separated")
    parser.add_argument("--ops-per-push", default="100,1", help="ops per push, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--warm", type=float, default=3.0, help="warm-up seconds per run")
    parser.add_argument("--drivers", type=int, default=1, help="driver processes")
    parser.add_argument("--drain-timeout", type=float, default=180.0)


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


#: Seconds, not minutes: the smoke test's sizes.
QUICK = {"devices": "4", "ops_per_push": "20,1", "seconds": 2.0, "warm": 0.5, "drain_timeout": 60.0}


def add_rows(report: rep.Report, title: str, runs: list[Measurement], drain_timeout: float) -> None:
    table = report.table(
        title,
        ["devices / spaces", "ops per push", "durable ops/s", "pushes/s", "ack p50 ms",
         "ack p95 ms", "ack p99 ms", "lag at stop (projector / relay)",
         "drained in s (projector / relay)", "peak lag during load"],
    )  # fmt: skip
    for m in runs:
        table.add(
            f"{m.devices} / {m.spaces}",
            m.ops_per_push,
            rep.rate(m.ops_per_s),
            rep.rate(m.pushes / m.seconds),
            rep.ms(m.p(50)),
            rep.ms(m.p(95)),
            rep.ms(m.p(99)),
            f"{m.lag_at_stop[0]:,} / {m.lag_at_stop[1]:,}",
            f"{seconds_or_dash(m.drained[0], drain_timeout)} / "
            f"{seconds_or_dash(m.drained[1], drain_timeout)}",
            f"{m.peak_lag[0]:,} / {m.peak_lag[1]:,}",
        )
        key = f"{m.label}"
        report.figures[f"{key}.ops_per_s"] = m.ops_per_s
        report.figures[f"{key}.ack_p99_ms"] = m.p(99) * 1000
        report.figures[f"{key}.rejected"] = m.rejected
        report.figures[f"{key}.pushes"] = m.pushes
        report.figures[f"{key}.closed"] = len(m.closed)
        wall, used, _ = m.cpu
        gateway = sum(cpu for name, cpu in used.items() if name.startswith("gateway"))
        report.figures[f"{key}.gateway_cpu_cores"] = gateway / wall if wall else 0.0
        if m.closed:
            report.notes.append(
                f"{m.label}: {len(m.closed)} sockets closed by the server during the run "
                f"({'; '.join(sorted(set(m.closed))[:3])}); their devices stopped pushing."
            )
    rep.cpu_table(
        report,
        "CPU over the measured window, % of one core (PostgreSQL: all its processes on the "
        "machine; drivers: the simulated devices)",
        [(m.label, m.cpu) for m in runs],
    )
    for m in runs:
        add_to_report(report, m.profiles)


async def workload(args: argparse.Namespace, report: rep.Report) -> None:
    devices, batches = sizes(args.devices), sizes(args.ops_per_push)
    async with open_stack(args) as stack:
        await cli.describe(stack, report)
        async with Accounts(stack.gateways[0].url) as accounts:
            with rep.phase_progress(f"registering {max(devices)} users", None):
                users = await accounts.users(max(devices))
        runs = []
        for n in devices:
            for per_push in batches:
                label = f"{n}x{per_push}"
                devs = assignments(users[:n], [u.personal_space_id for u in users[:n]], label)
                runs.append(
                    await ingest(
                        stack, devs, label=label, ops_per_push=per_push, seconds=args.seconds,
                        warm=args.warm, drivers=args.drivers, drain_timeout=args.drain_timeout,
                        profile=f"ingest-{label}" if args.profile else None,
                    )
                )  # fmt: skip
                rep.console.print(
                    f"{label}: {runs[-1].ops_per_s:,.0f} ops/s, ack p99 "
                    f"{runs[-1].p(99) * 1000:.1f} ms"
                )
    add_rows(
        report, "Ingest over WebSocket (each device in its own space)", runs, args.drain_timeout
    )
    report.notes.append(
        f"{args.seconds:g} s measured after {args.warm:g} s of warm-up per run; "
        f"{cli.gateway_note(args)}, the projector and the scheduler as separate processes; "
        "devices in "
        f"{args.drivers} driver process(es); every ack counted is `applied` (after COMMIT)."
    )


if __name__ == "__main__":
    cli.run("ingest", __doc__, workload, configure, QUICK)
