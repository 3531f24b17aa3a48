"""Reminders: 10,000 reminders falling due within one minute.

    .venv/bin/python -m bench.e2e.reminders [--reminders 10000] [--spread 60] [--lead 20]

``--devices`` users push (over WebSocket, 100 ops per push) one ``remind_at`` set per
task, with due times spread uniformly over ``--spread`` seconds starting ``--lead``
seconds after the pushes begin. The projector projects them, the scheduler (its own
process) fires each one as a ``reminder_fired`` event. Reported from the scheduler's
``reminders`` table: how many fired, firings/s (overall, and the busiest second), and
lateness (firing time minus due time) p50/p95/p99/max; cross-checked against the
``reminder_fired`` events in the log.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime

from bench.e2e import cli
from bench.e2e import report as rep
from bench.e2e.accounts import Accounts
from bench.e2e.load import open_sockets
from bench.e2e.stack import open_stack
from bench.e2e.wsclient import ENCODE, Socket, Writer


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def push_all(sock: Socket, writer: Writer, dues: list[float], per_push: int) -> None:
    for i in range(0, len(dues), per_push):
        ops = [writer.op(iso(due), field="remind_at", task=i + j) for j, due in
               enumerate(dues[i : i + per_push])]  # fmt: skip
        batch = f"r{i}"
        await sock.send_raw(ENCODE({"type": "push", "batch_id": batch, "ops": ops}))
        while True:
            msg = await sock.recv()
            if msg.type == "push_result" and msg.batch_id == batch:
                break
        bad = [r for r in msg.results or [] if r.status != "applied"]
        if bad:
            raise RuntimeError(f"reminder push rejected: {bad[0]}")


QUICK = {"reminders": 200, "spread": 4.0, "lead": 4.0, "devices": 4, "timeout": 60.0}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reminders", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=60.0, help="due times over this many s")
    parser.add_argument("--lead", type=float, default=20.0, help="s from set-up to the first due")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=240.0, help="s after the last due time")


async def workload(args: argparse.Namespace, report: rep.Report) -> None:
    if args.profile:  # nothing here is a hot path: refuse rather than ignore the flag
        raise SystemExit(
            "--profile: this workload has no profile (ingest, fanout, hotspace, catchup do)"
        )
    async with open_stack(args) as stack:
        assert stack.pool is not None
        await cli.describe(stack, report)
        gateway = stack.gateways[0]
        async with Accounts(gateway.url) as accounts:
            users = await accounts.users(args.devices)
        sockets = await open_sockets(gateway.ws_url, [(u.token, []) for u in users])
        rng = random.Random(17)
        base = time.time() + args.lead
        dues = [base + rng.uniform(0, args.spread) for _ in range(args.reminders)]
        shares = [dues[i :: args.devices] for i in range(args.devices)]
        began = time.time()
        with rep.phase_progress(f"pushing {args.reminders:,} remind_at sets", None):
            await asyncio.gather(
                *(push_all(s, Writer(u.personal_space_id, "r", tasks=args.reminders), d, 100)
                  for s, u, d in zip(sockets, users, shares, strict=True))
            )  # fmt: skip
        pushed = time.time() - began
        await asyncio.gather(*(s.close() for s in sockets))
        meter = rep.CpuMeter({w.name: [w.ps()] for w in stack.processes})
        meter.start()
        deadline = base + args.spread + args.timeout
        counts: dict[str, int] = {}
        known_at: float | None = None  # every reminder has its row (the scheduler knows it)
        with rep.phase_progress("reminders firing", float(args.reminders)) as tick:
            while time.time() < deadline:
                stack.check_alive()
                rows = await stack.pool.fetch(
                    "SELECT status, count(*) FROM reminders GROUP BY status"
                )
                counts = {r[0]: int(r[1]) for r in rows}
                if known_at is None and sum(counts.values()) >= args.reminders:
                    known_at = time.time()
                finished = sum(counts.get(s, 0) for s in ("fired", "skipped", "dead"))
                tick(finished, ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
                if finished >= args.reminders:
                    break
                await asyncio.sleep(0.5)
        cpu = meter.stop()
        rows = await stack.pool.fetch(
            "SELECT lateness_ms, extract(epoch FROM fired_at)::float8 AS fired "
            "FROM reminders WHERE status = 'fired' ORDER BY fire_at"
        )
        events = await stack.pool.fetchval(
            "SELECT count(*) FROM events WHERE kind = 'reminder_fired'"
        )
    late = [float(r["lateness_ms"]) for r in rows]
    fired_at = sorted(float(r["fired"]) for r in rows)
    per_second: dict[int, int] = {}
    for at in fired_at:
        per_second[int(at)] = per_second.get(int(at), 0) + 1
    span = (fired_at[-1] - min(dues)) if fired_at else 0.0
    table = report.table(
        f"{args.reminders:,} reminders due over {args.spread:.0f} s "
        f"(first due {args.lead:.0f} s after the pushes began)",
        ["what", "value"],
    )
    table.add("remind_at pushes took, s", f"{pushed:.2f}")
    table.add(
        "every reminder scheduled (its row in `reminders`), s after the pushes began",
        f"{known_at - began:.1f}" if known_at else "never",
    )
    table.add("first due, s after the pushes began", f"{min(dues) - began:.1f}")
    table.add(
        "first firing, s after the first due time",
        f"{fired_at[0] - min(dues):.1f}" if fired_at else "-",
    )
    skipped, dead = counts.get("skipped", 0), counts.get("dead", 0)
    table.add(
        "fired / skipped / dead / not fired by the deadline",
        f"{len(late):,} / {skipped:,} / {dead:,} / {args.reminders - len(late) - skipped - dead:,}",
    )
    table.add("reminder_fired events in the log", f"{events:,}")
    table.add("firings/s, first due to last firing", rep.rate(len(late) / span) if span else "-")
    table.add("firings in the busiest second", f"{max(per_second.values(), default=0):,}")
    table.add("offered load, reminders due per second", rep.rate(args.reminders / args.spread))
    for q in (50, 95, 99):
        table.add(f"lateness p{q}, ms", rep.rate(rep.percentile(late, q)))
    table.add("lateness max, ms", rep.rate(max(late, default=0)))
    tenth = max(1, len(late) // 10)
    table.add(
        "lateness p50 of the first / last tenth due, ms",
        f"{rep.rate(rep.percentile(late[:tenth], 50))} / "
        f"{rep.rate(rep.percentile(late[-tenth:], 50))}",
    )
    wall, used, busy = cpu
    table.add(
        "CPU while firing, % of one core",
        ", ".join(f"{k} {100 * v / wall:.0f}%" for k, v in used.items())
        + f"; machine {100 * busy:.0f}%",
    )
    report.figures["fired"] = len(late)
    report.figures["events"] = events
    report.figures["p99_ms"] = rep.percentile(late, 99)
    report.figures["firings_per_s"] = len(late) / span if span else 0.0


if __name__ == "__main__":
    cli.run("reminders", __doc__, workload, configure, QUICK)
