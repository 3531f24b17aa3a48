"""Closed-loop write load over WebSocket: the engine of ``ingest`` and ``hotspace``.

Each device pushes ``ops_per_push`` field sets over its own tasks and waits for the
``push_result`` before its next push (as fast as acks allow). Acks come after the
COMMIT, so every ``applied`` op counted is durable. The window is on the shared wall
clock: pushes start at ``start``, figures count acks received in [``from``, ``end``]
(a warm-up before), and the load stops at ``end``. Then the projector's and the relay's
lag are read from PostgreSQL at once and polled until both are drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
import websockets

from bench.e2e import report as rep
from bench.e2e.accounts import Device
from bench.e2e.drivers import Drivers, Link, split
from bench.e2e.profiling import Profile, Profiler
from bench.e2e.stack import Stack
from bench.e2e.wsclient import Socket, Writer, close_reason
from concord.child import ConcordProcess

#: Sockets a driver opens at once (the gateway's accept backlog stays small).
CONNECT_BATCH = 100


@dataclass
class Assignment:
    """One device of the load: who it is, where it writes, which tasks are its own."""

    token: str
    space_id: str
    prefix: str


@dataclass
class IngestPlan:
    ws_url: str
    devices: list[Assignment]
    ops_per_push: int
    tasks: int = 1000


async def open_sockets(
    url: str, items: Sequence[tuple[str, list[tuple[str, int]]]], *, deflate: bool = False
) -> list[Socket]:
    """Sockets for (token, subscriptions) pairs, ``CONNECT_BATCH`` at a time (offering
    permessage-deflate when ``deflate``)."""
    sockets: list[Socket] = []
    for i in range(0, len(items), CONNECT_BATCH):
        batch = items[i : i + CONNECT_BATCH]
        sockets += await asyncio.gather(
            *(Socket.open(url, tok, subs, deflate=deflate) for tok, subs in batch)
        )
    return sockets


async def drive_ingest(plan: IngestPlan, link: Link) -> dict[str, Any]:
    """A driver process: its devices push in a closed loop through the window."""
    sockets = await open_sockets(plan.ws_url, [(d.token, []) for d in plan.devices])
    writers = [Writer(d.space_id, d.prefix, plan.tasks) for d in plan.devices]
    go = await link.ready(len(sockets))
    start, begin, end = go["start"], go["from"], go["end"]
    latencies: list[float] = []
    counted = {"ops": 0, "pushes": 0, "rejected": 0, "acked": 0}
    errors: list[str] = []
    closed: list[str] = []

    async def device(sock: Socket, writer: Writer) -> None:
        try:
            await pushes(sock, writer)
        except websockets.ConnectionClosed as exc:  # recorded and reported, not raised
            closed.append(close_reason(exc))

    async def pushes(sock: Socket, writer: Writer) -> None:
        await asyncio.sleep(max(0.0, start - time.time()))
        while time.time() < end:
            batch, data = writer.push(plan.ops_per_push)
            sent = time.perf_counter()
            await sock.send_raw(data)
            while True:
                msg = await sock.recv()
                if msg.type == "push_result" and msg.batch_id == batch:
                    break
                if msg.type == "error":
                    errors.append(str(msg.error))
                    return
            took = time.perf_counter() - sent
            acked = time.time()
            results = msg.results or []
            applied = sum(1 for r in results if r.status == "applied")
            counted["acked"] += applied
            if len(results) != plan.ops_per_push or applied != len(results):
                counted["rejected"] += len(results) - applied
                if len(errors) < 5:
                    errors.append(str([r for r in results if r.status != "applied"][:1]))
            if begin <= acked <= end:
                counted["ops"] += applied
                counted["pushes"] += 1
                latencies.append(took)

    ticker = link.progress_every_second(lambda: counted["acked"])
    await asyncio.gather(*(device(s, w) for s, w in zip(sockets, writers, strict=True)))
    ticker.cancel()
    link.progress(counted["acked"])
    await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    return {**counted, "latencies": latencies, "errors": errors, "closed": closed}


@dataclass
class Measurement:
    label: str
    devices: int
    spaces: int
    ops_per_push: int
    seconds: float
    ops: int = 0
    pushes: int = 0
    rejected: int = 0
    latencies: list[float] = field(default_factory=list)
    lag_at_stop: tuple[int, int] = (0, 0)
    peak_lag: tuple[int, int] = (0, 0)
    drained: tuple[float | None, float | None] = (None, None)
    cpu: rep.Cpu = (0.0, {}, 0.0)
    errors: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return rep.percentile(self.latencies, q)


@dataclass
class Window:
    """What one measured window gave: the drivers' results and what was seen meanwhile."""

    go: dict[str, float]
    results: list[Any]
    cpu: rep.Cpu
    profiles: list[Profile]
    peak_lag: tuple[int, int]


def profile_targets(gateways: Sequence[ConcordProcess]) -> dict[str, int]:
    """name -> pid of what to sample: a gateway, or each of its ``--workers`` processes
    (the supervisor of several serves nothing itself; multiprocessing's resource tracker,
    also its child, is left out)."""
    targets: dict[str, int] = {}
    for g in gateways:
        with contextlib.suppress(psutil.Error):
            children = [c for c in g.ps().children() if "spawn_main" in " ".join(c.cmdline())]
            if children:
                targets.update({f"{g.name}.{i}": c.pid for i, c in enumerate(children, 1)})
                continue
        targets[g.name] = g.pid
    return targets


async def timed_phase(
    stack: Stack,
    drivers: Drivers,
    *,
    label: str,
    warm: float,
    seconds: float,
    unit: str,
    profile: str | None = None,
    profile_gateways: int = 1,
) -> Window:
    """Start the drivers' window; show progress; sample lag; measure CPU (and profile)."""
    start = time.time() + 1.0
    go = {"start": start, "from": start + warm, "end": start + warm + seconds}
    meter = rep.CpuMeter(
        {
            **{g.name: [g.ps()] for g in stack.gateways},
            **{w.name: [w.ps()] for w in stack.workers},
            "drivers": drivers.ps(),
        }
    )
    drivers.go(go)
    profiler = None
    peak = (0, 0)
    with rep.phase_progress(f"{label} ({unit})", warm + seconds + 1.0) as tick:
        await asyncio.sleep(max(0.0, go["from"] - time.time()))
        meter.start()
        if profile:
            targets = profile_targets(stack.gateways[:profile_gateways])
            targets.update({w.name: w.pid for w in stack.workers if w.name == "projector"})
            profiler = Profiler(profile, targets, seconds)
            profiler.start()
        while time.time() < go["end"]:
            stack.check_alive()
            if stack.workers:
                projector, relay = await stack.lag()
                peak = (max(peak[0], projector), max(peak[1], relay))
            tick(time.time() - start, f"{sum(drivers.progress):,} {unit}")
            await asyncio.sleep(min(1.0, max(0.0, go["end"] - time.time())))
        cpu = meter.stop()
        results = await drivers.results(within=seconds + 120)
    profiles = await profiler.finish() if profiler else []
    return Window(go, results, cpu, profiles, peak)


async def drain(
    stack: Stack, within: float
) -> tuple[tuple[int, int], tuple[float | None, float | None]]:
    """The lag right after the load stopped, and how long each part took to reach 0."""
    began = time.monotonic()
    at_stop = await stack.lag()
    done: list[float | None] = [None if at_stop[0] else 0.0, None if at_stop[1] else 0.0]
    with rep.phase_progress("draining (events behind)", float(max(at_stop) or 1)) as tick:
        while None in done and time.monotonic() - began < within:
            await asyncio.sleep(0.25)
            lag = await stack.lag()
            for i in (0, 1):
                if done[i] is None and lag[i] == 0:
                    done[i] = time.monotonic() - began
            tick(max(at_stop) - max(lag), f"projector {lag[0]:,}, relay {lag[1]:,}")
    return at_stop, (done[0], done[1])


async def ingest(
    stack: Stack,
    devices: Sequence[Assignment],
    *,
    label: str,
    ops_per_push: int,
    seconds: float,
    warm: float,
    drivers: int,
    drain_timeout: float,
    profile: str | None = None,
) -> Measurement:
    """One closed-loop load: the devices push until the window ends; then the drain."""
    url = stack.gateways[0].ws_url
    plans = [IngestPlan(url, list(part), ops_per_push) for part in split(devices, drivers)]
    pool = Drivers("bench.e2e.load:drive_ingest", plans).start()
    try:
        with rep.phase_progress(f"{label}: connecting {len(devices)} devices", None):
            await pool.ready()
        window = await timed_phase(
            stack, pool, label=label, warm=warm, seconds=seconds, unit="ops acked",
            profile=profile,
        )  # fmt: skip
    finally:
        pool.stop()
    m = Measurement(
        label=label,
        devices=len(devices),
        spaces=len({d.space_id for d in devices}),
        ops_per_push=ops_per_push,
        seconds=seconds,
        cpu=window.cpu,
        peak_lag=window.peak_lag,
        profiles=window.profiles,
    )
    for r in window.results:
        m.ops += r["ops"]
        m.pushes += r["pushes"]
        m.rejected += r["rejected"]
        m.latencies += r["latencies"]
        m.errors += r["errors"]
        m.closed += r["closed"]
    if m.rejected or m.errors:
        raise RuntimeError(f"{label}: {m.rejected} ops not applied: {m.errors[:3]}")
    if stack.workers:
        m.lag_at_stop, m.drained = await drain(stack, drain_timeout)
    return m


def assignments(users: Sequence[Device], spaces: Sequence[str], tag: str) -> list[Assignment]:
    """Device i writes in ``spaces[i % len(spaces)]``, on tasks of its own."""
    return [Assignment(u.token, spaces[i % len(spaces)], f"{tag}-{i}") for i, u in enumerate(users)]


def seconds_or_dash(value: float | None, timeout: float) -> str:
    return f"{value:.1f}" if value is not None else f"> {timeout:.0f}"
