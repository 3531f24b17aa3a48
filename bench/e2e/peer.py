"""Peer: the same ingest and fan-out workloads against Concord and Hocuspocus, one run.

    .venv/bin/python -m bench.e2e.peer

Hocuspocus (``@hocuspocus/server`` with ``@hocuspocus/extension-sqlite``, versions
pinned in bench/peer/package.json and its lock file) is installed by the bench itself
into the gitignored bench/peer/node_modules (``npm ci``; Node 20 and npm needed), and
driven by bench/peer/driver.mjs: ``@hocuspocus/provider`` devices over ``ws``, all in
one Node process. Concord is driven by the Python drivers of ``ingest`` and
``fanout``. The shapes match: in ingest, ``--devices`` devices each on a document (a
space) of its own, a push is 100 field sets over the device's 1,000 tasks (for
Hocuspocus one Y.Doc transaction of 100 map sets, a root map per task), and the next
push waits for the server's ack (Concord's ``push_result``; Hocuspocus's SyncStatus
message); in fan-out, ``--spaces`` documents of ``--per-space`` sockets, one writer at
a steady total rate (each of ``--rates``), the rest receiving, latency = receipt minus
send time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.e2e import cli
from bench.e2e import report as rep
from bench.e2e.accounts import Accounts
from bench.e2e.fanout import FanoutResult, combine
from bench.e2e.fanout import measure as concord_fanout
from bench.e2e.load import Measurement, assignments, drain
from bench.e2e.load import ingest as concord_ingest
from bench.e2e.stack import open_stack
from concord.embedded import free_port

PEER = Path(__file__).resolve().parents[1] / "peer"
STAMP = PEER / "node_modules" / ".concord-bench-lock"

DURABILITY = (
    "**What differs in durability.** Concord answers `push_result` only after the "
    "push's PostgreSQL transaction has committed (`synchronous_commit=on`, `fsync=on` "
    "here): an acknowledged op survives a crash of any process, the machine's included. "
    "Hocuspocus acknowledges an update (its SyncStatus message) as soon as it is applied "
    "to the document in the server's memory; the SQLite extension stores the whole "
    "document state later, debounced (2 s after the last change, at most 10 s after "
    "the first unstored one), without waiting for the write, so a crash loses up to "
    "about 10 s of acknowledged updates. Hocuspocus also runs here without "
    "authentication, per-op validation, idempotency keys or an ordered per-space log, "
    "all of which Concord does on every push."
)


def ensure_installed() -> None:
    """``npm ci`` into bench/peer/node_modules unless the lock file is unchanged."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"the peer workload needs {tool} (Node 20 or later) on PATH")
    lock = (PEER / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    with rep.phase_progress("npm ci (Hocuspocus; builds sqlite3 the first time)", None):
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PEER,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"npm ci failed in {PEER}:\n{done.stderr[-3000:]}")
    STAMP.write_text(digest)


def node_version() -> str:
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


class NodeProcess:
    """A Node script of bench/peer speaking JSON lines on stdio."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def start(cls, script: str, *args: str, log: Path) -> NodeProcess:
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                "node", script, *args, cwd=PEER, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err, limit=256 * 1024 * 1024,
            )  # fmt: skip
        return cls(proc, log)

    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    async def line(self, within: float) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not raw:
            await self.proc.wait()
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"node exited ({self.proc.returncode}):\n{tail}")
        return raw.decode()

    async def send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def hocuspocus_phase(
    server: NodeProcess, plan: dict[str, Any], *, warm: float, seconds: float, tail: float,
    scratch: Path, label: str,
) -> tuple[dict[str, Any], rep.Cpu]:  # fmt: skip
    """Run driver.mjs with ``plan``: wait for ready, start the window, collect."""
    driver = await NodeProcess.start("driver.mjs", json.dumps(plan), log=scratch / "driver.log")
    try:
        with rep.phase_progress(f"Hocuspocus {label}: connecting", None):
            await driver.line(600)
        start = time.time() + 1.0
        go = {"start": start, "from": start + warm, "end": start + warm + seconds}
        meter = rep.CpuMeter({"hocuspocus": [server.ps()], "node driver": [driver.ps()]})
        await driver.send(go)
        with rep.phase_progress(f"Hocuspocus {label}", warm + seconds + 1.0) as tick:
            await asyncio.sleep(max(0.0, go["from"] - time.time()))
            meter.start()
            while time.time() < go["end"]:
                tick(time.time() - start, "")
                await asyncio.sleep(min(0.5, max(0.0, go["end"] - time.time())))
            cpu = meter.stop()
            result: dict[str, Any] = json.loads(await driver.line(seconds + tail + 120))["result"]
    finally:
        await driver.stop()
    return result, cpu


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=50, help="ingest devices")
    parser.add_argument("--ops-per-push", type=int, default=100)
    parser.add_argument("--spaces", type=int, default=100, help="fan-out spaces (documents)")
    parser.add_argument("--per-space", type=int, default=10)
    parser.add_argument("--rates", default="100,500", help="fan-out writes/s in all, each run")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warm", type=float, default=3.0)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--drivers", type=int, default=2, help="Concord driver processes")


QUICK = {
    "devices": 4, "ops_per_push": 20, "spaces": 4, "per_space": 3, "rates": "40",
    "seconds": 2.0, "warm": 0.5, "grace": 3.0,
}  # fmt: skip


def rates(args: argparse.Namespace) -> list[float]:
    return [float(x) for x in args.rates.split(",")]


async def run_concord(
    args: argparse.Namespace, report: rep.Report
) -> tuple[Measurement, list[FanoutResult]]:
    async with open_stack(args) as stack:
        await cli.describe(stack, report)
        n = args.spaces * args.per_space
        async with Accounts(stack.gateways[0].url) as accounts:
            with rep.phase_progress(f"Concord: registering {max(n, args.devices)} users", None):
                users = await accounts.users(max(n, args.devices))
            groups = [users[i : i + args.per_space] for i in range(0, n, args.per_space)]
            with rep.phase_progress(f"Concord: {args.spaces} shared spaces", None):
                spaces = await accounts.shared_spaces(groups)
        writers = users[: args.devices]
        ingest = await concord_ingest(
            stack, assignments(writers, [u.personal_space_id for u in writers], "peer"),
            label="Concord ingest", ops_per_push=args.ops_per_push, seconds=args.seconds,
            warm=args.warm, drivers=1, drain_timeout=180.0,
            profile="peer-ingest" if args.profile else None,
        )  # fmt: skip
        fanouts = []
        for rate in rates(args):
            await drain(stack, 120.0)
            fanouts.append(
                await concord_fanout(
                    stack, groups, spaces, gateways=1, rate=rate, seconds=args.seconds,
                    warm=args.warm, grace=args.grace, drivers=args.drivers,
                    profile=f"peer-fanout-{rate:.0f}" if args.profile else None,
                )
            )  # fmt: skip
    return ingest, fanouts


async def run_hocuspocus(
    args: argparse.Namespace,
) -> tuple[Measurement, list[FanoutResult]]:
    ensure_installed()
    scratch = Path(tempfile.mkdtemp(prefix="concord-bench-peer-"))
    port = free_port()
    server = await NodeProcess.start(
        "server.mjs", str(port), str(scratch / "hocuspocus.sqlite"), log=scratch / "server.log"
    )
    try:
        ready = await server.line(60)
        if not ready.startswith("ready"):
            raise RuntimeError(f"Hocuspocus did not start: {ready}")
        url = f"ws://127.0.0.1:{port}"
        common = {"warm": args.warm, "seconds": args.seconds, "scratch": scratch}
        raw, cpu = await hocuspocus_phase(
            server,
            {"mode": "ingest", "url": url, "devices": args.devices,
             "opsPerPush": args.ops_per_push, "tag": "ingest"},
            tail=0.0, label="ingest", **common,
        )  # fmt: skip
        ingest = Measurement(
            "Hocuspocus ingest", args.devices, args.devices, args.ops_per_push, args.seconds,
            ops=raw["ops"], pushes=raw["pushes"], latencies=raw["latencies"], cpu=cpu,
        )  # fmt: skip
        fanouts = []
        for rate in rates(args):
            raw, cpu = await hocuspocus_phase(
                server,
                {"mode": "fanout", "url": url, "docs": args.spaces, "perDoc": args.per_space,
                 "rate": rate, "grace": args.grace, "phase": f"h{rate:.0f}",
                 "tag": f"fanout-{rate:.0f}"},
                tail=args.grace, label=f"fan-out {rate:,.0f}/s", **common,
            )  # fmt: skip
            converted = {
                "writes": {int(s): [(k, True) for k in ks] for s, ks in raw["writes"].items()},
                "acks": raw["acks"],
                "skipped": 0,
                "unanswered": 0,
                "closed": [],
                "received": [(s, [(k, lat) for k, lat in got]) for s, got in raw["received"]],
            }
            label = f"Hocuspocus fan-out {rate:,.0f}/s"
            fanouts.append(combine(label, 1, rate, args.seconds, [converted], args.per_space - 1))
            fanouts[-1].cpu = cpu
    finally:
        await server.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)
    return ingest, fanouts


def _cpu_summary(cpu: rep.Cpu) -> str:
    wall, used, busy = cpu
    parts = [f"{k} {100 * v / wall:.0f}%" for k, v in used.items() if v > 0.01 * wall]
    return ", ".join(parts) + f"; machine {100 * busy:.0f}%"


async def workload(args: argparse.Namespace, report: rep.Report) -> None:
    c_ingest, c_fanouts = await run_concord(args, report)
    h_ingest, h_fanouts = await run_hocuspocus(args)
    ingest = report.table(
        f"Ingest: {args.devices} devices, {args.ops_per_push} field sets per push, next push "
        "after the ack",
        ["server", "ops/s", "pushes/s", "ack p50 ms", "ack p95 ms", "ack p99 ms",
         "CPU, % of one core"],
    )  # fmt: skip
    for name, m in (
        ("Concord (ack after COMMIT)", c_ingest),
        ("Hocuspocus (ack from memory)", h_ingest),
    ):
        ingest.add(
            name, rep.rate(m.ops_per_s), rep.rate(m.pushes / m.seconds), rep.ms(m.p(50)),
            rep.ms(m.p(95)), rep.ms(m.p(99)), _cpu_summary(m.cpu),
        )  # fmt: skip
    fan = report.table(
        f"Fan-out: {args.spaces} spaces/documents x {args.per_space} sockets (one writer, "
        "the rest receiving), one server",
        ["server", "writes/s offered", "writes", "latency p50 ms", "p95 ms", "p99 ms", "max ms",
         "delivered to every subscriber", "CPU, % of one core"],
    )  # fmt: skip
    for c, h in zip(c_fanouts, h_fanouts, strict=True):
        for name, f in (("Concord", c), ("Hocuspocus", h)):
            share = f.delivered_all / f.writes if f.writes else 0.0
            fan.add(
                name, f"{f.rate:,.0f}", f"{f.writes:,}", f"{f.p(50):.1f}", f"{f.p(95):.1f}",
                f"{f.p(99):.1f}", f"{f.p(100):.1f}", f"{100 * share:.2f}%", _cpu_summary(f.cpu),
            )  # fmt: skip
            who = name.lower()
            report.figures[f"{who}_fanout_p99_ms_{f.rate:.0f}"] = f.p(99)
            report.figures[f"{who}_delivered_all_{f.rate:.0f}"] = share
    if h_ingest.ops_per_s:
        report.ratio("Concord / Hocuspocus, ingest ops/s", c_ingest.ops_per_s / h_ingest.ops_per_s)
    for c, h in zip(c_fanouts, h_fanouts, strict=True):
        if h.p(99):
            report.ratio(
                f"Concord / Hocuspocus, fan-out p99 latency at {c.rate:,.0f} writes/s",
                c.p(99) / h.p(99), "lower is better for Concord",
            )  # fmt: skip
    report.figures.update(
        concord_ops_per_s=c_ingest.ops_per_s, hocuspocus_ops_per_s=h_ingest.ops_per_s
    )
    report.notes.append(
        f"{args.seconds:g} s measured after {args.warm:g} s of warm-up per phase. Concord: "
        f"{cli.gateway_note(args)}, the projector and the scheduler as separate processes, "
        "Python driver "
        f"processes; Hocuspocus 3.4.4 (Node {node_version()}, SQLite extension, one server "
        "process), Node driver process."
    )
    report.notes.append(DURABILITY)


if __name__ == "__main__":
    cli.run("peer", __doc__, workload, configure, QUICK)
