"""Carry out the fault schedule against the cluster and the devices, one fault after
the other at its offset, counting what was injected by kind."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable

from lab.chaos.cluster import Cluster
from lab.chaos.schedule import Fault
from lab.chaos.workload import World

#: A stalled projector stays stopped this many times the fault's seconds: long enough
#: for a lag to build up that it must then work off.
STALL_FACTOR = 4


async def inject(cluster: Cluster, world: World, fault: Fault, rng: random.Random) -> str:
    """Do one fault; returns a line saying what happened."""
    verb, _, target = fault.kind.partition(" ")
    seconds = fault.seconds
    if verb == "kill":
        await cluster.kill(target)
        await asyncio.sleep(seconds)
        await cluster.launch(target)
        return f"SIGKILL {target}, restarted {seconds}s later"
    if verb == "stall":
        await cluster.pause(target, seconds * STALL_FACTOR)
        return f"SIGSTOP {target} for {seconds * STALL_FACTOR:.1f}s, then SIGCONT"
    if verb == "pause":
        await cluster.pause(target, seconds)
        return f"SIGSTOP {target} for {seconds}s, then SIGCONT"
    if fault.kind == "restart nats":
        await cluster.restart_nats(seconds)
        return f"nats-server stopped for {seconds}s"
    if fault.kind == "restart postgres":
        await cluster.restart_postgres(seconds)
        return f"PostgreSQL stopped (immediate) for {seconds}s"
    if fault.kind == "terminate backends":
        return f"pg_terminate_backend: {await cluster.terminate_backends()} connections"
    if verb == "swallow":
        gateway = target.split()[-1]
        await cluster.swallow_answers(gateway, seconds)
        return f"answers of {gateway} dropped for {seconds}s after reaching it"
    if fault.kind == "duplicate pushes":
        open_ = [s for s in world.sims if s.device is not None]
        chosen = rng.sample(open_, min(8, len(open_)))
        for sim in chosen:
            assert sim.device is not None
            sim.device.faults.drop_results += 1
            sim.device.faults.cut_after_send += 1
        return f"{len(chosen)} devices: next push_result dropped, next push cut after send"
    raise ValueError(f"unknown fault {fault.kind!r}")


async def run_faults(
    cluster: Cluster,
    world: World,
    schedule: list[Fault],
    started: float,
    counts: Counter[str],
    say: Callable[[str], None],
    seed: int,
) -> None:
    rng = random.Random(f"chaos-fault-targets-{seed}")
    for fault in schedule:
        delay = started + fault.at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            what = await inject(cluster, world, fault, rng)
        except Exception as exc:  # a fault that could not be done is reported, not fatal
            what = f"could not be injected: {type(exc).__name__}: {exc}"
        else:
            counts[fault.kind] += 1
        say(f"fault t+{time.monotonic() - started:6.1f}s {fault.kind}: {what}")
