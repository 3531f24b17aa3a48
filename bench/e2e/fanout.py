"""Fan-out: push-sent to event-received latency across shared spaces.

    .venv/bin/python -m bench.e2e.fanout [--spaces 100] [--per-space 10] [--rates 100,500]

``--spaces`` shared spaces with ``--per-space`` members each (one user per socket): one
writer per space pushes one-op pushes at a steady total rate (open loop, on a
fixed schedule), the other members are subscribed. The writer puts its send time
(``time.time_ns()``, one clock for every driver process of the machine) into the op's
value; each subscriber computes received minus sent per event. Reported: delivery
latency p50/p95/p99/max, the share of writes delivered to every subscriber (after a
grace period), and the writers' ack latency; for each of ``--rates`` (writes/s in all),
once with one gateway, once with two (writers on the first, subscribers split across
both: delivery then crosses NATS). Between phases the projector and relay drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import websockets

from bench.e2e import cli
from bench.e2e import report as rep
from bench.e2e.accounts import Accounts, Device
from bench.e2e.drivers import Drivers, Link, split
from bench.e2e.load import drain, open_sockets, timed_phase
from bench.e2e.profiling import Profile, add_to_report
from bench.e2e.stack import Stack, open_stack
from bench.e2e.wsclient import Socket, Writer, close_reason

#: Outstanding pushes a writer allows before it skips a beat (bounded, open loop).
MAX_OUTSTANDING = 100


@dataclass
class Member:
    ws_url: str
    token: str
    space_id: str
    space: int  # index of the space
    after: int = 0  # the seq the device already holds


@dataclass
class FanoutPlan:
    phase: str
    writers: list[Member]
    subscribers: list[Member]
    rate_per_writer: float
    grace: float


def _stamp(phase: str, k: int) -> str:
    return f"{phase}:{time.time_ns()}:{k}"


async def _subscriber(
    sock: Socket, phase: str, until: float, got: list[tuple[int, int]], count: list[int]
) -> None:
    """Record (k, latency ns) of every write of this phase received before ``until``.

    One deadline for the whole loop: ``asyncio.wait_for`` per message would wrap every
    receive in a task of its own, which cost the simulated sockets a large share of
    their CPU (measurement load on the cores Concord runs on)."""
    prefix = phase + ":"
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, until - time.time())):
            while True:
                msg = await sock.recv()
                if msg.type != "events" or not msg.events:
                    continue
                now = time.time_ns()
                for event in msg.events:
                    value = event.value
                    if isinstance(value, str) and value.startswith(prefix):
                        _, sent, k = value.split(":")
                        got.append((int(k), now - int(sent)))
                        count[0] += 1


async def _writer(
    sock: Socket, member: Member, plan: FanoutPlan, go: dict[str, Any], out: dict[str, Any]
) -> None:
    """Push one op every 1/rate s from a random phase; acks read by a second task."""
    writer = Writer(member.space_id, f"{plan.phase}-w{member.space}", tasks=20)
    interval = 1.0 / plan.rate_per_writer
    offset = (member.space * 0.6180339887 % 1.0) * interval  # spread writers over a beat
    sent_at: dict[str, tuple[int, float, bool]] = {}  # batch -> (k, sent, in the window)
    # (k, acked applied) of the writes sent in the window; kept in ``out`` from the start,
    # so a socket the server closes leaves what it did.
    writes: list[tuple[int, bool]] = out["writes"].setdefault(member.space, [])
    acks: list[float] = out["acks"]
    done = asyncio.Event()

    async def read_acks() -> None:
        while not (done.is_set() and not sent_at):
            msg = await sock.recv()
            if msg.type != "push_result" or msg.batch_id not in sent_at:
                continue
            k, sent, counted = sent_at.pop(msg.batch_id)
            ok = bool(msg.results) and all(r.status == "applied" for r in msg.results or [])
            if counted:
                writes.append((k, ok))
                acks.append(time.perf_counter() - sent)

    reader = asyncio.create_task(read_acks())
    k = 0
    try:
        while not reader.done():
            due = go["start"] + offset + k * interval
            if due >= go["end"]:
                break
            await asyncio.sleep(max(0.0, due - time.time()))
            if len(sent_at) >= MAX_OUTSTANDING:
                out["skipped"] += 1
            else:
                batch = f"{plan.phase}-{member.space}-{k}"
                op = writer.op(_stamp(plan.phase, k), field="title")
                sent_at[batch] = (k, time.perf_counter(), due >= go["from"])
                await sock.send({"type": "push", "batch_id": batch, "ops": [op]})
            k += 1
        done.set()
        if sent_at or reader.done():  # acks to wait for (bounded), or the reader's failure
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, plan.grace + 30)
    finally:
        reader.cancel()
        out["unanswered"] += len(sent_at)


async def _closed_ok(coro: Coroutine[Any, Any, None], closed: list[str]) -> None:
    """Run one socket's part; a close by the server is recorded, not raised."""
    try:
        await coro
    except websockets.ConnectionClosed as exc:
        closed.append(close_reason(exc))


async def drive_fanout(plan: FanoutPlan, link: Link) -> dict[str, Any]:
    subs: list[tuple[Member, Socket]] = []
    for url in sorted({m.ws_url for m in plan.subscribers}):
        mine = [m for m in plan.subscribers if m.ws_url == url]
        opened = await open_sockets(url, [(m.token, [(m.space_id, m.after)]) for m in mine])
        subs += list(zip(mine, opened, strict=True))
    for _, sock in subs:  # everything before this phase is history: drain to caught_up
        while (await sock.recv()).type != "caught_up":
            pass
    writers: list[tuple[Member, Socket]] = []
    for url in sorted({m.ws_url for m in plan.writers}):
        mine = [m for m in plan.writers if m.ws_url == url]
        writers += list(
            zip(mine, await open_sockets(url, [(m.token, []) for m in mine]), strict=True)
        )
    go = await link.ready(len(subs) + len(writers))
    until = go["end"] + plan.grace
    received: list[list[tuple[int, int]]] = [[] for _ in subs]
    count = [0]
    out: dict[str, Any] = {
        "writes": {}, "acks": [], "skipped": 0, "unanswered": 0, "closed": [],
    }  # fmt: skip

    ticker = link.progress_every_second(lambda: count[0])
    await asyncio.gather(
        *(
            _closed_ok(_subscriber(s, plan.phase, until, received[i], count), out["closed"])
            for i, (_, s) in enumerate(subs)
        ),
        *(_closed_ok(_writer(s, m, plan, go, out), out["closed"]) for m, s in writers),
    )
    ticker.cancel()
    await asyncio.gather(*(s.close() for _, s in [*subs, *writers]), return_exceptions=True)
    out["received"] = [(m.space, got) for (m, _), got in zip(subs, received, strict=True)]
    return out


@dataclass
class FanoutResult:
    label: str
    gateways: int
    rate: float
    seconds: float
    writes: int = 0
    delivered_all: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    acks: list[float] = field(default_factory=list)
    skipped: int = 0
    unanswered: int = 0
    failed_writes: int = 0
    closed: list[str] = field(default_factory=list)
    #: The gateways' own view (/metrics histograms over the phase): p50 and p99 bucket
    #: bounds of commit -> queued for the socket, and of push receipt -> result.
    server_fanout: tuple[str, str] = ("-", "-")
    server_push: tuple[str, str] = ("-", "-")
    cpu: rep.Cpu = (0.0, {}, 0.0)
    profiles: list[Profile] = field(default_factory=list)

    def p(self, q: float) -> float:
        return rep.percentile(self.latencies_ns, q) / 1e6


def combine(label: str, gateways: int, rate: float, seconds: float,
            results: list[dict[str, Any]], subscribers_per_space: int) -> FanoutResult:  # fmt: skip
    out = FanoutResult(label, gateways, rate, seconds)
    writes: dict[int, list[tuple[int, bool]]] = {}
    for r in results:
        writes.update(r["writes"])
        out.acks += r["acks"]
        out.skipped += r["skipped"]
        out.unanswered += r["unanswered"]
        out.closed += r["closed"]
    wanted = {space: {k for k, ok in ws if ok} for space, ws in writes.items()}
    out.failed_writes = sum(1 for ws in writes.values() for _, ok in ws if not ok)
    out.writes = sum(len(ks) for ks in wanted.values())
    reached: dict[tuple[int, int], int] = {}
    for r in results:
        for space, got in r["received"]:
            keys = wanted.get(space, set())
            for k, latency in got:
                if k in keys:
                    out.latencies_ns.append(latency)
                    reached[(space, k)] = reached.get((space, k), 0) + 1
    out.delivered_all = sum(1 for n in reached.values() if n >= subscribers_per_space)
    return out


async def scrape(stack: Stack, gateways: int, name: str) -> dict[float, float]:
    """A histogram summed over the first ``gateways`` gateways."""
    total: dict[float, float] = {}
    for gateway in stack.gateways[:gateways]:
        for le, count in (await stack.histogram(gateway, name)).items():
            total[le] = total.get(le, 0.0) + count
    return total


def quantiles(before: dict[float, float], after: dict[float, float]) -> tuple[str, str]:
    return rep.bucket_quantile(before, after, 0.5), rep.bucket_quantile(before, after, 0.99)


async def heads(stack: Stack, spaces: list[str]) -> dict[str, int]:
    assert stack.pool is not None
    rows = await stack.pool.fetch(
        "SELECT space_id::text, head FROM spaces WHERE space_id = ANY($1::uuid[])", spaces
    )
    return {r[0]: int(r[1]) for r in rows}


async def measure(
    stack: Stack,
    groups: list[list[Device]],
    spaces: list[str],
    *,
    gateways: int,
    rate: float,
    seconds: float,
    warm: float,
    grace: float,
    drivers: int,
    profile: str | None,
) -> FanoutResult:
    """One phase: writers on gateway 1, subscribers dealt over ``gateways`` gateways."""
    label = f"{rate:,.0f}/s, {gateways} gateway" + ("s" if gateways > 1 else "")
    phase = f"g{gateways}r{rate:.0f}"
    known = await heads(stack, spaces)
    urls = [g.ws_url for g in stack.gateways[:gateways]]
    writers: list[Member] = []
    subscribers: list[Member] = []
    for s, (group, space) in enumerate(zip(groups, spaces, strict=True)):
        writers.append(Member(urls[0], group[0].token, space, s))
        for j, member in enumerate(group[1:]):
            url = urls[(s + j) % len(urls)]
            subscribers.append(Member(url, member.token, space, s, known[space]))
    plans = [
        FanoutPlan(phase, w, sub, rate / len(spaces), grace)
        for w, sub in zip(split(writers, drivers), split(subscribers, drivers), strict=True)
    ]
    pool = Drivers("bench.e2e.fanout:drive_fanout", plans).start()
    try:
        with rep.phase_progress(f"{label}: connecting {len(writers) + len(subscribers)}", None):
            await pool.ready()
        fanout_before = await scrape(stack, gateways, "concord_fanout_seconds")
        push_before = await scrape(stack, 1, "concord_push_seconds")
        window = await timed_phase(
            stack, pool, label=label, warm=warm, seconds=seconds, unit="events received",
            profile=profile, profile_gateways=gateways,
        )  # fmt: skip
    finally:
        pool.stop()
    out = combine(label, gateways, rate, seconds, window.results, len(groups[0]) - 1)
    out.cpu, out.profiles = window.cpu, window.profiles
    out.server_fanout = quantiles(
        fanout_before, await scrape(stack, gateways, "concord_fanout_seconds")
    )
    out.server_push = quantiles(push_before, await scrape(stack, 1, "concord_push_seconds"))
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spaces", type=int, default=100)
    parser.add_argument("--per-space", type=int, default=10, help="sockets per space")
    parser.add_argument("--rates", default="100,500", help="writes/s over all spaces, each run")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warm", type=float, default=3.0)
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to wait for stragglers")
    parser.add_argument("--drivers", type=int, default=2, help="driver processes")
    parser.add_argument("--gateways", default="1,2", help="gateway counts to run, comma-separated")


QUICK = {"spaces": 4, "per_space": 3, "rates": "40", "seconds": 2.0, "warm": 0.5, "grace": 5.0}


def add_rows(report: rep.Report, title: str, runs: list[FanoutResult]) -> None:
    table = report.table(
        title,
        ["gateways", "writes/s (offered)", "deliveries", "latency p50 ms", "p95 ms", "p99 ms",
         "max ms", "delivered to every subscriber by the end of the grace", "ack p50 / p99 ms",
         "gateway: push p50 / p99 ms", "gateway: commit to queued p50 / p99 ms"],
    )  # fmt: skip
    for r in runs:
        share = r.delivered_all / r.writes if r.writes else 0.0
        table.add(
            r.gateways,
            f"{r.writes / r.seconds:,.0f} ({r.rate:,.0f})",
            f"{len(r.latencies_ns):,}",
            f"{r.p(50):.1f}",
            f"{r.p(95):.1f}",
            f"{r.p(99):.1f}",
            f"{r.p(100):.1f}",
            f"{100 * share:.2f}% of {r.writes:,}",
            f"{rep.ms(rep.percentile(r.acks, 50))} / {rep.ms(rep.percentile(r.acks, 99))}",
            " / ".join(r.server_push),
            " / ".join(r.server_fanout),
        )
        key = f"{r.gateways}gw-{r.rate:.0f}"
        report.figures[f"{key}.p99_ms"] = r.p(99)
        report.figures[f"{key}.delivered_all_share"] = share
        report.figures[f"{key}.writes"] = r.writes
        report.figures[f"{key}.closed"] = len(r.closed)
        if r.skipped or r.unanswered or r.failed_writes or r.closed:
            codes = sorted(set(r.closed))
            report.notes.append(
                f"{r.label}: {r.skipped} beats skipped (a writer had {MAX_OUTSTANDING} pushes "
                f"unanswered), {r.unanswered} pushes unanswered at the end, {r.failed_writes} "
                f"not applied, {len(r.closed)} sockets closed by the server"
                + (f" ({'; '.join(codes[:3])})" if codes else "")
                + "."
            )
    rep.cpu_table(
        report, "CPU over the measured window, % of one core", [(r.label, r.cpu) for r in runs]
    )
    for r in runs:
        add_to_report(report, r.profiles)


async def workload(args: argparse.Namespace, report: rep.Report) -> None:
    counts = [int(x) for x in args.gateways.split(",")]
    async with open_stack(args, gateways=max(counts)) as stack:
        await cli.describe(stack, report)
        n = args.spaces * args.per_space
        async with Accounts(stack.gateways[0].url) as accounts:
            with rep.phase_progress(f"registering {n} users", None):
                users = await accounts.users(n)
            groups = [users[i : i + args.per_space] for i in range(0, n, args.per_space)]
            with rep.phase_progress(f"{args.spaces} shared spaces, {n} members", None):
                spaces = await accounts.shared_spaces(groups)
        runs: list[FanoutResult] = []
        for rate in [float(x) for x in args.rates.split(",")]:
            for gateways in counts:
                if runs:  # start each phase from a quiet system
                    await drain(stack, 120.0)
                runs.append(
                    await measure(
                        stack, groups, spaces, gateways=gateways, rate=rate,
                        seconds=args.seconds, warm=args.warm, grace=args.grace,
                        drivers=args.drivers,
                        profile=f"fanout-{gateways}gw-{rate:.0f}" if args.profile else None,
                    )
                )  # fmt: skip
                rep.console.print(f"{runs[-1].label}: p99 {runs[-1].p(99):.1f} ms")
    add_rows(
        report,
        f"Fan-out: {args.spaces} spaces x {args.per_space} sockets (1 writer, "
        f"{args.per_space - 1} subscribers each), one-op pushes",
        runs,
    )
    report.notes.append(
        f"{args.seconds:g} s measured after {args.warm:g} s of warm-up, {args.grace:g} s "
        f"grace for deliveries; {args.drivers} driver process(es) on one clock; latency = "
        "receipt by the subscriber minus the writer's send time (including the COMMIT). The "
        "gateway columns are the gateways' own histograms (`concord_push_seconds`, "
        "`concord_fanout_seconds`: commit to queued for the socket) over the whole phase "
        "(warm-up and grace included), as the bounds of the buckets holding p50 and p99."
    )


if __name__ == "__main__":
    cli.run("fanout", __doc__, workload, configure, QUICK)
