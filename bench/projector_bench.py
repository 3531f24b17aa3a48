"""Projector rebuild throughput against a raw ordered read of the same events.

    .venv/bin/python -m bench.projector_bench \\
        --dsn postgresql://postgres@127.0.0.1:5432/test --nats nats://127.0.0.1:4222

Creates a scratch database (dropped at the end), then:

1. appends ``--events`` events through ``PostgresEventStore.append`` (tasks with titles,
   done flags, tags, reminders and many counter increments) over ``--spaces`` spaces;
2. starts the live projector (in process) and times its catch-up from zero;
3. times a raw ordered SELECT of every event, in a process of its own like the rebuild
   (the projector's columns, and the full event columns) through the same chunked
   cursor the rebuild uses;
4. rebuilds the read model while a writer keeps appending and readers keep reading
   (``get_entity``, ``list_entities``), counting failed reads and the slowest one;
5. checks that, after the swap, the read model equals a replay of the log (verify);
6. splits the rebuild's time: fetch, row decoding, merging, deriving and encoding, COPY.

``--relay-only`` stops after step 1 and times the outbox relay alone instead (nothing
else in the process): events/s and CPU per event to publish the whole backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats

from core.natsbus import NatsBus
from core.ops import op_from_row
from core.settings import Settings
from crdt import EntityState, encode_state
from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from eventstore.reads import ALL_OP_ROWS, chunks
from eventstore.rows import STORED_COLUMNS
from eventstore.testing import new_id, op
from projector.readmodel import get_entity, lag_totals, list_entities
from projector.relay import Relay
from projector.runner import running
from projector.service import ProjectorOptions
from projector.stream import Names
from projector.tables import STATE_COLUMNS
from projector.typed import derive
from projector.verify import verify

ROOT = __file__.rsplit("/bench/", 1)[0]
Read = tuple[int, float]
#: The latest set of each (task, field), per space: the writer continues from them.
HEADS: dict[str, dict[tuple[str, str], str]] = {}
SECRET = "bench-secret-key-0123456789abcdef-0123456789"
#: The raw baseline: the stored columns as they are, no formatting (as measured before
#: reads formatted ids and times in PostgreSQL), so the ratio stays comparable.
RAW_FULL = f"SELECT {STORED_COLUMNS} FROM events ORDER BY space_id, seq"


@dataclass
class Live:
    """What the writer and the readers did while the rebuild ran."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    written: int = 0
    reads: int = 0
    failed: int = 0
    slowest: float = 0.0


#: (field, value of the i-th op) of the sets, in turn; the rest are increments and tags.
_SETS = (
    ("done", lambda i: i % 20 == 6),
    ("remind_at", lambda i: f"2030-01-{1 + i % 28:02}T09:00:00Z"),
    ("title", lambda i: f"task {i}"),
)


def _task_ops(space: str, n: int, start: int, heads: dict[tuple[str, str], str]) -> list[Any]:
    """``n`` ops on 500 tasks: 60% counter increments, 10% tag adds, 30% sets. A set
    names the field's previous set in ``pred`` (``heads``), as a device in sync does."""
    ops = []
    for i in range(start, start + n):
        task, lamport, kind = f"t-{i % 500}", i + 1, i % 10
        if kind < 6:
            made = op(
                space, entity_id=task, kind="inc", field="pomodoros", value=1, lamport=lamport
            )
        elif kind == 6:
            made = op(
                space,
                entity_id=task,
                kind="add",
                field="tags",
                value=f"tag{i % 7}",
                lamport=lamport,
            )
        else:
            name, value = _SETS[kind - 7]
            pred = [heads[(task, name)]] if (task, name) in heads else []
            made = op(space, entity_id=task, field=name, value=value(i), pred=pred, lamport=lamport)
            heads[(task, name)] = made["op_id"]
        ops.append(made)
    return ops


async def fill(store: PostgresEventStore, spaces: int, events: int) -> list[tuple[str, str]]:
    """Append ``events`` events over ``spaces`` spaces, four pushers at a time."""
    made = []
    for _ in range(spaces):
        owner = new_id()
        made.append(
            (await store.create_space(name="b", creator_user_id=owner, personal=False), owner)
        )
    per_space = events // spaces - 1  # seq 1 of each space is its member_added

    async def one(space: str, owner: str) -> None:
        device, heads = new_id(), HEADS.setdefault(space, {})
        for start in range(0, per_space, 1000):
            batch = _task_ops(space, min(1000, per_space - start), start, heads)
            outcome = await store.append(user_id=owner, device_id=device, ops=batch)
            assert all(r.status == "applied" for r in outcome.results)

    for i in range(0, spaces, 4):
        await asyncio.gather(*(one(s, o) for s, o in made[i : i + 4]))
    return made


#: The raw reads: the projector's columns (what the rebuild reads), every column.
RAW_QUERIES = {"proj": ALL_OP_ROWS, "full": RAW_FULL}


async def raw_read_here(dsn: str, which: str) -> Read:
    """(rows, seconds) of reading a raw query through the rebuild's chunked cursor."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = 0
        started = time.perf_counter()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for chunk in chunks(conn, RAW_QUERIES[which]):
                rows += len(chunk)
        return rows, time.perf_counter() - started
    finally:
        await conn.close()


async def raw_read(dsn: str, which: str) -> Read:
    """A raw read in its own process, like the rebuild: this process's event loop is
    busy with the live load, which would slow the read and flatter the ratio."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.projector_bench", "--dsn", dsn, "--raw-read", which,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode:
        raise SystemExit(f"raw read failed: {err.decode()[-2000:]}")
    rows, seconds = out.split()
    return int(rows), float(seconds)


async def writer(store: PostgresEventStore, spaces: list[tuple[str, str]], live: Live) -> None:
    """About 500 events a second into four spaces, until told to stop."""
    device, n = new_id(), 10**7
    while not live.stop.is_set():
        for space, owner in spaces[:4]:
            batch = _task_ops(space, 50, n, HEADS.setdefault(space, {}))
            n += 50
            await store.append(user_id=owner, device_id=device, ops=batch)
            live.written += 50
        await asyncio.sleep(0.4)


async def reader(pool: asyncpg.Pool, spaces: list[tuple[str, str]], live: Live) -> None:
    while not live.stop.is_set():
        for space, _ in spaces:
            started = time.perf_counter()
            try:
                state, _ = await get_entity(pool, space, "task", "t-7")
                page, _, _ = await list_entities(pool, space, "task", False, 20, None)
                if state is None or len(page) != 20:
                    raise AssertionError("read returned nothing")
                live.reads += 1
            except Exception as exc:
                live.failed += 1
                print(f"  read failed: {exc!r}")
            live.slowest = max(live.slowest, time.perf_counter() - started)
            await asyncio.sleep(0.02)  # a steady read load: ~50 entity reads + pages a second


async def breakdown(pool: asyncpg.Pool) -> dict[str, float]:
    """Where a rebuild's time goes: the bulk phase redone with a stopwatch per step."""
    times = dict.fromkeys(("fetch", "decode", "merge", "derive+encode", "copy"), 0.0)
    async with pool.acquire() as conn, pool.acquire() as out:
        await out.execute("CREATE TEMP TABLE scratch_states (LIKE entity_states)")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(ALL_OP_ROWS)
            states: dict[tuple[str, str, str], EntityState] = {}
            while True:
                t0 = time.perf_counter()
                rows = await cursor.fetch(5000)
                t1 = time.perf_counter()
                if not rows:
                    break
                ops = [(row[10], op_from_row(row)) for row in rows]
                t2 = time.perf_counter()
                for space, o in ops:
                    key = (space, o.entity_type, o.entity_id)
                    state = states.get(key)
                    if state is None:
                        state = states[key] = EntityState(o.entity_type, o.entity_id)
                    state.apply(o)
                t3 = time.perf_counter()
                times["fetch"] += t1 - t0
                times["decode"] += t2 - t1
                times["merge"] += t3 - t2
        t4 = time.perf_counter()
        records = [
            (uuid.UUID(k[0]), k[1], k[2], encode_state(s, settled=True), 0, *derive(s)[0])
            for k, s in states.items()
        ]
        t5 = time.perf_counter()
        await out.copy_records_to_table("scratch_states", records=records, columns=STATE_COLUMNS)
        times["derive+encode"] = t5 - t4
        times["copy"] = time.perf_counter() - t5
    return times


@contextlib.asynccontextmanager
async def scratch_database(server_dsn: str) -> AsyncIterator[str]:
    name = f"concord_bench_projector_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, query = server_dsn.partition("?")
    dsn = f"{base.rpartition('/')[0]}/{name}" + (f"?{query}" if query else "")
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def wait_for(pool: asyncpg.Pool, which: int) -> None:
    """Until nothing is left to project (``which`` 0) or to relay (1)."""
    while True:
        if not (await lag_totals(pool))[which]:
            return
        await asyncio.sleep(0.1)


def rate(n: int, seconds: float) -> str:
    return f"{n:>9,} events in {seconds:6.2f} s = {n / seconds:>9,.0f} events/s"


async def main(args: argparse.Namespace) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{os.cpu_count()} cores, load average {load}; {args.events:,} events; "
        f"rebuild with {args.workers} worker process(es)"
    )
    async with scratch_database(args.dsn) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=12, command_timeout=None)
        settings = Settings(
            database_url=dsn, nats_url=args.nats, nats_prefix=f"bench{secrets.token_hex(3)}"
        )
        try:
            async with PostgresEventStore(pool, secret_key=SECRET) as store:
                t0 = time.perf_counter()
                spaces = await fill(store, args.spaces, args.events)
                total = await pool.fetchval("SELECT sum(head)::bigint FROM spaces")
                print(f"append (store, 4 pushers)     {rate(total, time.perf_counter() - t0)}")
                # A rebuild reads an old log: vacuumed, hint bits set, statistics known.
                await pool.execute("VACUUM ANALYZE events")
                if args.relay_only:
                    await relay_alone(pool, settings, total)
                    return
                ok = await run_phases(pool, store, spaces, settings, total, args.workers)
        finally:
            await pool.close()
            await drop_stream(args.nats, Names(settings.nats_prefix))
    if not ok:
        raise SystemExit(1)


@dataclass
class Rebuilt:
    """What ``concord projector rebuild`` reported."""

    line: str
    events: int
    rate: float


async def rebuild_process(dsn: str, workers: int) -> Rebuilt:
    """Run the rebuild as an operator does: its own process (``concord projector
    rebuild``), so that the writer, the readers and the live projector of this process
    do not share its CPU."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "concord", "projector", "rebuild", "--database-url", dsn,
        "--workers", str(workers),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode:
        raise SystemExit(f"rebuild failed: {err.decode()[-2000:]}")
    line = out.decode().strip().splitlines()[-1]
    found = re.search(r"rebuilt ([\d,]+) events .*\(([\d,]+) events/s\)", line)
    assert found is not None, line
    return Rebuilt(line, int(found[1].replace(",", "")), float(found[2].replace(",", "")))


def compare(rebuilt: Rebuilt, before: list[Read], after: list[Read]) -> None:
    """Print the raw reads (before and after the rebuild) and the rebuild's ratio to
    their mean: the machine is shared, so one raw read alone can mislead."""
    pairs = (("proj. columns", before[0], after[0]), ("all columns", before[1], after[1]))
    for label, one, two in pairs:
        print(f"raw ordered SELECT, {label:<14}{rate(*one)}  then {rate(*two)}")
    figures = f"{rebuilt.events:>9,} events at {rebuilt.rate:>9,.0f} events/s"
    print(f"rebuild (`concord projector rebuild`) {figures}")
    for label, one, two in pairs:
        raw_rate = (one[0] + two[0]) / (one[1] + two[1])
        print(f"  = {rebuilt.rate / raw_rate:.2f}x the raw read rate ({label})")
    print(f"  {rebuilt.line}")


async def run_phases(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    spaces: list[tuple[str, str]],
    settings: Settings,
    total: int,
    workers: int,
) -> bool:
    """Catch-up, raw reads, the rebuild under load, verify; True when all is well."""
    assert settings.database_url is not None
    options = ProjectorOptions(tick_interval=0.5)
    async with running(settings, options=options):
        t0 = time.perf_counter()
        await wait_for(pool, 0)
        print(f"live projector catch-up       {rate(total, time.perf_counter() - t0)}")
        # The relay publishes the backlog to the stream meanwhile (and the projector
        # consumes it, finding it applied): let that finish before measuring reads.
        await wait_for(pool, 1)
        print(f"relay, whole backlog          {rate(total, time.perf_counter() - t0)}")
        # Everything below runs under the same live load (a writer, readers, the live
        # projector and relay): the raw reads before and after the rebuild as well.
        live = Live()
        side = [
            asyncio.create_task(writer(store, spaces, live)),
            asyncio.create_task(reader(pool, spaces, live)),
        ]
        try:
            dsn = settings.database_url
            before = [await raw_read(dsn, "proj"), await raw_read(dsn, "full")]
            cpu, wall = time.process_time(), time.perf_counter()
            rebuilt = await rebuild_process(settings.database_url, workers)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            after = [await raw_read(dsn, "proj"), await raw_read(dsn, "full")]
        finally:
            live.stop.set()
            await asyncio.gather(*side)
        compare(rebuilt, before, after)
        print(
            f"  this process (writer, readers, live projector and relay) used {cpu:.2f} s "
            f"of CPU during the rebuild's {wall:.2f} s"
        )
        print(
            f"  meanwhile: {live.written:,} events appended, {live.reads:,} reads "
            f"({live.failed} failed, slowest {live.slowest * 1000:.0f} ms)"
        )
        await wait_for(pool, 0)
        differences = await verify(pool)
        print(f"verify after the swap: {len(differences)} entities differ")
        for d in differences[:5]:
            print(f"  {d.space_id} {d.entity_type} {d.entity_id}: {d.problem}")
    times = await breakdown(pool)
    spent = sum(times.values())
    print("where the rebuild's time goes (bulk phase redone with a stopwatch):")
    for name, seconds in times.items():
        print(f"  {name:<14} {seconds:6.2f} s  {100 * seconds / spent:5.1f}%")
    return not differences and not live.failed


async def drop_stream(url: str, names: Names) -> None:
    with contextlib.suppress(Exception):
        nc = await nats.connect(url)
        await nc.jetstream().delete_stream(names.stream)
        await nc.close()


async def relay_alone(pool: asyncpg.Pool, settings: Settings, total: int) -> None:
    """Publish the whole backlog with the relay alone; its rate and CPU per event (the
    first cycle, which also creates the stream, is left out)."""
    bus = NatsBus(settings.nats_url or "", prefix=settings.nats_prefix, name="bench-relay")
    await bus.start()
    try:
        if not await bus.wait_connected(10):
            raise SystemExit("NATS is not reachable")
        relay = Relay(pool, bus, Names(settings.nats_prefix))
        await relay.relay_once()
        first = relay.published
        wall, cpu = time.perf_counter(), time.process_time()
        while await pool.fetchval("SELECT count(*) FROM outbox"):
            await relay.relay_once()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        done = relay.published - first
        print(f"relay alone, after its first cycle {rate(done, wall)}")
        print(
            f"  {cpu:.2f} s of CPU: {1e6 * cpu / max(done, 1):.1f} us per event ({total:,} in all)"
        )
    finally:
        await bus.close()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--spaces", type=int, default=20)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--relay-only", action="store_true", help="time the relay alone")
    parser.add_argument("--raw-read", choices=sorted(RAW_QUERIES), help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.raw_read:  # one raw read (a child of the bench): rows and seconds
        print(*asyncio.run(raw_read_here(arguments.dsn, arguments.raw_read)))
    else:
        asyncio.run(main(arguments))
