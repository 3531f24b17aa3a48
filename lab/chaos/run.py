"""``concord lab chaos``: start the cluster, run the workload under the fault schedule,
heal, check, print the report. Exit status 0 only when every property holds."""

from __future__ import annotations

import asyncio
import functools
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import asyncpg

from lab.chaos.checker import Verdict, run_checks
from lab.chaos.cluster import ACCESS_TTL, Cluster
from lab.chaos.faults import run_faults
from lab.chaos.model import Sim
from lab.chaos.report import Figures, print_report
from lab.chaos.schedule import Fault, make_schedule
from lab.chaos.workload import (
    World,
    churn_members,
    close_device,
    drive,
    open_device,
    remove,
    set_up,
    with_retries,
)

#: How long healing may take: queues drained, projector and devices caught up.
HEAL_SECONDS = 180.0


@dataclass
class ChaosConfig:
    seed: int
    ops: int = 100_000
    users: int = 10
    devices_per_user: int = 5
    rate: float = 110.0  # ops per second over all devices, while the chaos lasts
    breaks: tuple[str, ...] = ()
    data_dir: Path | None = None
    command: str = "concord lab chaos"

    @property
    def devices(self) -> int:
        return self.users * self.devices_per_user

    @property
    def chaos_seconds(self) -> float:
        return max(30.0, self.ops / self.rate)


@dataclass
class Run:
    config: ChaosConfig
    out: TextIO
    figures: Figures = field(default_factory=Figures)
    faults: Counter[str] = field(default_factory=Counter)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def _dump_tasks(out: TextIO) -> None:
    """SIGUSR1: print where every task of the run waits (a hung run says why)."""
    for task in asyncio.all_tasks():
        print(f"-- {task.get_name()}", file=out)
        task.print_stack(limit=12, file=out)
    out.flush()


async def run_chaos(config: ChaosConfig, out: TextIO = sys.stdout) -> list[Verdict]:
    run = Run(config, out)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks, out)
    root = config.data_dir or Path(tempfile.mkdtemp(prefix="concord-chaos-"))
    cluster = Cluster(root / "cluster", breaks=config.breaks)
    schedule = make_schedule(config.seed, config.chaos_seconds)
    run.say(f"concord lab chaos: seed {config.seed} (replay: {config.command})")
    run.say(
        f"  {config.ops} ops over {config.chaos_seconds:.0f}s by {config.devices} devices of "
        f"{config.users} users in {config.users * 2} spaces; access tokens live {ACCESS_TTL}s"
        + (f"; BROKEN BUILD: {','.join(config.breaks)}" if config.breaks else "")
    )
    run.say(f"fault schedule ({len(schedule)} faults):")
    for fault in schedule:
        run.say(f"  {fault.describe()}")
    world = World(cluster, root / "devices", random.Random(f"chaos-work-{config.seed}"))
    world.workdir.mkdir(parents=True, exist_ok=True)
    try:
        await cluster.start()
        run.say(f"cluster up: {', '.join(cluster.procs)}; PostgreSQL, NATS under {root}")
        await set_up(world, config.users, config.devices_per_user)
        run.say(
            f"{len(world.users)} users, {len(world.roles) * 2} spaces, {len(world.sims)} devices"
        )
        lagging = await _chaos_then_heal(run, cluster, world, schedule)
        pool = await asyncpg.create_pool(cluster.dsn, min_size=1, max_size=4)
        try:
            verdicts = await run_checks(world, pool, lagging)
        finally:
            await pool.close()
        await run.figures.collect(world, cluster, run.faults)
        print_report(run.say, config, run.figures, verdicts)
        for line in server_lines_of(verdicts, cluster.root):
            run.say(line)
        return verdicts
    except Exception:
        run.say("the run itself failed (not a verdict on Concord):")
        run.say(traceback.format_exc())
        raise
    finally:
        await world.close()
        await cluster.close()
        if config.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)


#: How much of each server log line naming a failed verdict's reference is shown.
LINE_CHARS = 4000


def server_lines_of(verdicts: list[Verdict], logs: Path) -> list[str]:
    """For a failing verdict that quotes an ``internal`` error's reference (the gateway
    logs the error and its traceback under it), the server log lines naming it: the
    evidence a CI run would otherwise delete with the cluster's directory."""
    references = {
        ref
        for v in verdicts
        if not v.holds
        for ref in re.findall(r"reference ([0-9a-f]{32})", v.detail)
    }
    if not references:
        return []
    found = ["", "== server log lines of the references above"]
    for path in sorted(logs.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if any(ref in line for ref in references):
                found.append(f"{path.name}: {line[:LINE_CHARS]}")
    if len(found) == 2:
        found.append("(none: the logs hold no line naming them)")
    return found


async def _chaos_then_heal(
    run: Run, cluster: Cluster, world: World, schedule: list[Fault]
) -> dict[str, str]:
    config = run.config
    started = time.monotonic()
    until = started + config.chaos_seconds
    per_device = config.ops // config.devices
    pace = config.chaos_seconds / max(1, per_device) * 0.9
    rng = random.Random(f"chaos-members-{config.seed}")
    lag = asyncio.create_task(run.figures.sample_lag(cluster))
    progress = asyncio.create_task(_progress(run, world, started))
    # A loaded machine writes slower than the pace asks: devices may go on past the
    # fault schedule (three times as long at most) until they made their share.
    late = until + 3 * config.chaos_seconds
    drivers = [drive(world, s, per_device, late, pace) for s in world.sims]
    await asyncio.gather(
        run_faults(cluster, world, schedule, started, run.faults, run.say, config.seed),
        churn_members(world, until, rng),
        *drivers,
    )
    run.say(f"chaos over after {time.monotonic() - started:.0f}s; healing")
    await cluster.heal()
    lagging = await _heal(run, cluster, world)
    progress.cancel()
    lag.cancel()
    return lagging


async def _progress(run: Run, world: World, started: float) -> None:
    """A line every 15 s; when nothing moved for a minute, where every task waits."""
    last, still = (-1, -1), 0
    while True:
        await asyncio.sleep(15)
        made = sum(len(s.made) for s in world.sims)
        acked = sum(len(s.acked) for s in world.sims)
        queued = sum(len(s.device.replica.pending) for s in world.sims if s.device is not None)
        run.say(
            f"  t+{time.monotonic() - started:5.0f}s: {made} ops made, {acked} acknowledged, "
            f"{queued} queued"
        )
        still = still + 1 if (made, acked) == last and queued else 0
        last = (made, acked)
        if still == 4:
            run.say("  nothing moved for a minute with ops queued: every task's stack follows")
            _dump_tasks(run.out)


async def _heal(run: Run, cluster: Cluster, world: World) -> dict[str, str]:
    """Every device open and online; queues drained; one last write each (so live
    delivery is exercised after the faults); then wait, without resubscribing, until
    every device holds every head of its spaces. Returns the devices that did not."""
    deadline = time.monotonic() + HEAL_SECONDS
    for sim in world.sims:
        if sim.device is None:
            await open_device(world, sim)
        assert sim.device is not None
        sim.device.go_online()
        sim.device.faults.drop_results = sim.device.faults.cut_after_send = 0
    await _until(
        lambda: all(not s.device.replica.pending for s in world.sims if s.device), deadline
    )
    await _subscribe_members(cluster, world)
    await asyncio.sleep(2)  # the subscriptions are live
    shared = await _last_removal(world)
    for sim in world.sims:
        assert sim.device is not None
        spaces = [sim.user.personal_space] + (
            [shared] if shared in world.writable(sim.user) else []
        )
        for space in spaces:
            op_id = await sim.device.set(space, "list", "final", "name", sim.name)
            sim.made[op_id] = sim.device.replica.pending[op_id]
    await _until(
        lambda: all(not s.device.replica.pending for s in world.sims if s.device), deadline
    )
    conn = await asyncpg.connect(cluster.dsn)
    try:
        lagging: dict[str, str] = {}
        while time.monotonic() < deadline:
            lagging = await _behind(conn, world)
            projected = await conn.fetchval(
                "SELECT count(*) FROM spaces s LEFT JOIN projector_checkpoints c "
                "USING (space_id) WHERE coalesce(c.seq, 0) < s.head"
            )
            if not lagging and projected == 0:
                break
            await asyncio.sleep(1.0)
        run.say(f"healed in {HEAL_SECONDS - (deadline - time.monotonic()):.0f}s")
    finally:
        await conn.close()
    await asyncio.sleep(5)  # reminders due at the very end: one sweep more
    within = max(15.0, deadline - time.monotonic())
    await asyncio.gather(*(_sync(run, sim, within) for sim in world.sims))
    return lagging


async def _last_removal(world: World) -> str | None:
    """One removal after healing, with every device connected, then writes in that
    space: a removal that does not end delivery cannot hide behind a reconnect."""
    rng = random.Random(f"chaos-last-removal-{len(world.sims)}")
    for space in sorted(world.shared):
        owner = world.shared[space]
        members = sorted(e for e, role in world.roles[space].items() if e != owner.email)
        if members:
            email = rng.choice(members)
            user = next(u for u in world.users if u.email == email)
            await with_retries(functools.partial(remove, world, space, user))
            return space
    return None


async def _subscribe_members(cluster: Cluster, world: World) -> None:
    """As an app does when it reads its memberships: every device subscribes to every
    space its user is a member of (the lab's own record may have raced a removal)."""
    conn = await asyncpg.connect(cluster.dsn)
    try:
        rows = await conn.fetch("SELECT space_id::text, user_id::text FROM members")
    finally:
        await conn.close()
    for space, user in rows:
        for sim in world.sims:
            if sim.user.user_id == user and sim.device is not None:
                sim.device.subscribe(space)


async def _sync(run: Run, sim: Sim, within: float) -> None:
    assert sim.device is not None
    try:
        await sim.device.sync(within=within)
    except Exception as exc:  # the checker reports what is left in its queue
        run.say(f"  {sim.name}: sync failed: {type(exc).__name__}: {exc}")


async def _behind(conn: asyncpg.Connection, world: World) -> dict[str, str]:
    """Devices whose cursor is short of the head of a space their user is a member of."""
    rows = await conn.fetch(
        "SELECT m.space_id::text, m.user_id::text, s.head FROM members m JOIN spaces s "
        "USING (space_id)"
    )
    heads: dict[str, list[tuple[str, int]]] = {}
    for space, user, head in rows:
        heads.setdefault(user, []).append((space, int(head)))
    behind: dict[str, str] = {}
    for sim in world.sims:
        assert sim.device is not None
        for space, head in heads.get(sim.user.user_id, []):
            if sim.device.cursor(space) < head:
                behind[sim.name] = f"{space} at {sim.device.cursor(space)} of {head}"
    return behind


async def _until(check: Callable[[], bool], deadline: float) -> bool:
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


__all__ = ["ChaosConfig", "close_device", "run_chaos"]
