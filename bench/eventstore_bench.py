"""Event store write throughput against raw PostgreSQL and the eventsourcing library.

    .venv/bin/python -m bench.eventstore_bench --dsn postgresql://postgres@127.0.0.1:5432/test

Creates a scratch database (dropped at the end), then, from ``--writers`` concurrent
writers in batches of ``--batch``:

1. ``PostgresEventStore.append`` of ``--ops`` raw client ops (full validation, dedup,
   hashing, group commit), each writer in its own space (``--shared``: one space);
2. the very rows ``append`` stored, into a bare copy of the events table (same columns,
   no index, constraint or trigger) with asyncpg ``executemany``;
3. the same rows, same bare table, with asyncpg ``copy_records_to_table`` (and, to show
   what the indexes cost, into a copy of the events table with its three indexes);
4. the same ops (as JSON state) through eventsourcing's ``PostgresApplicationRecorder``
   (gapless notification ids, like Concord's seqs), from ``--writers`` threads.

All of it ``--rounds`` times (fresh spaces and tables each round; ``events`` keeps
growing, which only slows ``append``), reporting each path's best round: the machine is
shared and its speed drifts by tens of percent from one minute to the next. Then the
ratios round by round (every path of a round runs within the same minute) and their
median.

``--only-append`` runs path 1 alone and prints each round's rate, CPU per op and group
sizes: for comparing two trees, or group-commit settings, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import secrets
import statistics
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar
from urllib.parse import urlparse

import asyncpg
import msgspec
import psutil

from concord.runtime import tune_gc
from eventstore import append as append_mod
from eventstore import postgres as postgres_mod
from eventstore import writer as writer_mod
from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from eventstore.rows import EVENT_COLUMNS
from eventstore.testing import op

T = TypeVar("T")
Rows = list[tuple[Any, ...]]
TIMES: dict[str, float] = defaultdict(float)
STORES: list[PostgresEventStore] = []


def _timed(name: str, fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start

    return wrapper


def _timed_sync(name: str, fn: Callable[..., T]) -> Callable[..., T]:
    def wrapper(*args: Any, **kwargs: Any) -> T:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start

    return wrapper


def _wrap(owner: object, name: str, label: str, *, sync: bool = False) -> None:
    """Replace ``owner.name`` by a timed wrapper (module globals are looked up per call)."""
    fn = getattr(owner, name)
    setattr(owner, name, _timed_sync(label, fn) if sync else _timed(label, fn))


def instrument() -> None:
    """Time the phases of the write path."""
    _wrap(append_mod, "lock_spaces", "lock spaces")
    _wrap(append_mod, "_look_up", "roles+dedup+pred+heads lookup")
    _wrap(append_mod, "_plan_push", "pred+dedup+number+chain (CPU, in txn)", sync=True)
    _wrap(postgres_mod, "prepare", "parse+check+hash (CPU, caller task)", sync=True)
    _wrap(writer_mod.Batch, "copy", "COPY")
    _wrap(postgres_mod, "run_group", "transaction total")


def _with_database(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    return f"{base.rpartition('/')[0]}/{name}" + (f"?{query}" if query else "")


def make_ops(spaces: Sequence[str], writers: int, total: int, batch: int) -> list[list[list[Any]]]:
    """Per writer, its batches of raw ops, as a device edits: ten sets of a task's title,
    each naming the previous one in ``pred`` (so most preds are looked up in the push,
    some in the database), lamport rising."""
    per_writer = total // writers
    plan: list[list[list[Any]]] = []
    for w in range(writers):
        space = spaces[w % len(spaces)]
        ops: list[Any] = []
        for i in range(per_writer):
            pred = [ops[-1]["op_id"]] if i % 10 else None
            title = f"task {i // 10} of writer {w}, edit {i % 10}"
            ops.append(
                op(space, entity_id=f"w{w}-t{i // 10}", value=title, lamport=i + 1, pred=pred)
            )
        plan.append([ops[i : i + batch] for i in range(0, len(ops), batch)])
    return plan


@dataclass
class Phase:
    """One measured path: wall time, this process's CPU, the database backends' CPU."""

    label: str
    wall: float
    client_cpu: float
    server_cpu: float


async def _backend_cpu(dsn: str) -> dict[int, float]:
    """CPU seconds so far of each backend connected to the bench database (local server)."""
    database = dsn.partition("?")[0].rpartition("/")[2]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await conn.close()
    used: dict[int, float] = {}
    for r in rows:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(r["pid"]).cpu_times()
            used[r["pid"]] = times.user + times.system
    return used


async def measure(label: str, dsn: str, work: Callable[[], Awaitable[None]]) -> Phase:
    """Run ``work`` and measure it (backends started during it count from zero)."""
    before = await _backend_cpu(dsn)
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = await _backend_cpu(dsn)
    server = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return Phase(label, wall, cpu, server)


class Tuning(TypedDict, total=False):
    """Group-commit settings of ``PostgresEventStore``."""

    writers: int
    max_group_ops: int
    spread_ops: int


async def run_append(
    pool: asyncpg.Pool,
    user: str,
    plan: list[list[list[Any]]],
    tuning: Tuning,
) -> Callable[[], Awaitable[None]]:
    """``tuning``: group-commit settings given on the command line (else the store's)."""
    store = PostgresEventStore(pool, secret_key=secrets.token_hex(16), **tuning)
    await store.start()
    STORES.append(store)

    async def writer(batches: list[list[Any]]) -> None:
        device = str(uuid.uuid4())
        for ops in batches:
            out = await store.append(user_id=user, device_id=device, ops=ops)
            assert all(r.status == "applied" for r in out.results), out.results[:3]

    async def work() -> None:
        await asyncio.gather(*(writer(b) for b in plan))
        await store.close()

    return work


async def run_raw(
    pool: asyncpg.Pool,
    rows: Rows,
    writers: int,
    batch: int,
    copy: bool,
    indexed: bool = False,
    number: int = 0,
) -> Callable[[], Awaitable[None]]:
    kind = ("indexed_" if indexed else "bare_") + ("copy" if copy else "executemany")
    table = f"{kind}_{number}"
    like = "LIKE events INCLUDING INDEXES" if indexed else "LIKE events"
    await pool.execute(f"CREATE TABLE {table} ({like})")
    columns = list(EVENT_COLUMNS)
    insert = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        f"({', '.join(f'${i + 1}' for i in range(len(columns)))})"
    )
    shares = [rows[w::writers] for w in range(writers)]

    async def writer(share: Rows) -> None:
        async with pool.acquire() as conn:
            for i in range(0, len(share), batch):
                chunk = share[i : i + batch]
                if copy:
                    await conn.copy_records_to_table(table, records=chunk, columns=columns)
                else:
                    await conn.executemany(insert, chunk)

    async def work() -> None:
        await asyncio.gather(*(writer(s) for s in shares))

    return work


def eventsourcing_work(
    dsn: str, plan: list[list[list[Any]]], writers: int, number: int = 0
) -> tuple[Callable[[], Awaitable[None]], Callable[[], None]]:
    """Writers as threads (the library is synchronous), each its own aggregate."""
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    url = urlparse(dsn)
    datastore = PostgresDatastore(
        dbname=url.path.lstrip("/"),
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or "",
        pool_size=writers,
    )
    recorder = PostgresApplicationRecorder(datastore, events_table_name=f"es_events_{number}")
    recorder.create_table()
    encode = msgspec.json.encode

    def writer(batches: list[list[Any]]) -> None:
        originator = uuid.uuid4()
        version = 0
        for ops in batches:
            events = []
            for raw in ops:
                version += 1
                events.append(StoredEvent(originator, version, "concord:Op", encode(raw)))
            recorder.insert_events(events)

    def run_all() -> None:
        threads = [threading.Thread(target=writer, args=(b,)) for b in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    async def work() -> None:
        run_all()  # blocks the loop on purpose: nothing else runs meanwhile

    return work, datastore.close


@contextlib.asynccontextmanager
async def scratch_database(server_dsn: str) -> AsyncIterator[str]:
    """A migrated database of its own (its DSN), dropped at the end."""
    name = f"concord_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = _with_database(server_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def bench(args: argparse.Namespace) -> None:
    async with scratch_database(args.dsn) as dsn:
        await _bench_in(dsn, args)


async def _bench_in(dsn: str, args: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=args.writers + 2, max_size=args.writers + 4)
    rounds: list[list[Phase]] = []
    try:
        for number in range(args.rounds):
            phases, total = await _round(pool, dsn, args, number)
            rounds.append(phases)
            if args.only_append:
                _print_append(number, total, phases[0])
                continue
            print(
                f"round {number + 1}: "
                + ", ".join(f"{p.label} {total / p.wall:,.0f}" for p in phases)
            )
    finally:
        await pool.close()
    if args.only_append:
        return
    _report(args, total, [min(same, key=lambda p: p.wall) for same in zip(*rounds, strict=True)])
    _report_rounds(rounds)


async def _round(
    pool: asyncpg.Pool, dsn: str, args: argparse.Namespace, number: int
) -> tuple[list[Phase], int]:
    """Every path once, on fresh spaces and tables: (phases, ops per path)."""
    phases: list[Phase] = []
    boot = PostgresEventStore(pool, secret_key="bench")
    user = str(uuid.uuid4())
    n_spaces = 1 if args.shared else args.writers
    spaces = [
        await boot.create_space(name=f"b{i}", creator_user_id=user, personal=False)
        for i in range(n_spaces)
    ]
    plan = make_ops(spaces, args.writers, args.ops, args.batch)
    total = sum(len(b) for batches in plan for b in batches)
    if args.profile and number == 0:
        instrument()
    tuning = Tuning()
    if args.store_writers is not None:
        tuning["writers"] = args.store_writers
    if args.max_group_ops is not None:
        tuning["max_group_ops"] = args.max_group_ops
    if args.spread_ops is not None:
        tuning["spread_ops"] = args.spread_ops
    work = await run_append(pool, user, plan, tuning)
    phases.append(await measure("PostgresEventStore.append", dsn, work))
    if args.only_append:
        return phases, total
    rows = [
        tuple(r)
        for r in await pool.fetch(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events "
            "WHERE kind = 'set' AND space_id = ANY($1::uuid[]) ORDER BY space_id, seq",
            spaces,
        )
    ]
    assert len(rows) == total
    for label, copy, indexed in (
        ("raw asyncpg executemany (bare table)", False, False),
        ("raw asyncpg COPY (bare table)", True, False),
        ("raw asyncpg COPY (events' 3 indexes)", True, True),
    ):
        work = await run_raw(pool, rows, args.writers, args.batch, copy, indexed, number)
        phases.append(await measure(label, dsn, work))
    if not args.skip_eventsourcing:
        work, close = eventsourcing_work(dsn, plan, args.writers, number)
        phases.append(await measure("eventsourcing PostgresApplicationRecorder", dsn, work))
        close()
    return phases, total


def _groups() -> str:
    """The last append's transactions and pushes per transaction."""
    groups = STORES[-1].committer.groups
    return f"{len(groups)} transactions, {sum(groups) / max(len(groups), 1):.1f} pushes each"


def _print_append(number: int, total: int, append: Phase) -> None:
    """One round of ``--only-append``: its rate, CPU per op and group sizes."""
    print(
        f"round {number + 1}: append {total / append.wall:,.0f} ops/s, client "
        f"{append.client_cpu / total * 1e6:.1f} µs/op, server {append.server_cpu / total * 1e6:.1f}"
        f" µs/op; {_groups()}"
    )


def _report(args: argparse.Namespace, total: int, phases: list[Phase]) -> None:
    print(f"best of {args.rounds} round(s) per path (the machine is shared; rates drift)")
    print(
        f"{total} ops, {args.writers} writers, batches of {args.batch}, "
        f"{'one shared space' if args.shared else 'one space per writer'}; "
        f"append: {_groups()}"
    )
    print(
        f"{'path':<42}{'seconds':>8}{'ops/s':>10}{'append ÷':>10}"
        f"{'client µs/op':>14}{'server µs/op':>14}"
    )
    append_rate = total / phases[0].wall
    for p in phases:
        rate = total / p.wall
        print(
            f"{p.label:<42}{p.wall:>8.2f}{rate:>10,.0f}{append_rate / rate:>9.2f}x"
            f"{p.client_cpu / total * 1e6:>14.1f}{p.server_cpu / total * 1e6:>14.1f}"
        )
    if TIMES:
        print("where append's time goes (summed over writer tasks, seconds):")
        for label, seconds in sorted(TIMES.items(), key=lambda kv: -kv[1]):
            print(f"  {label:<40}{seconds:>8.2f}")


def _report_rounds(rounds: list[list[Phase]]) -> None:
    """``append``'s rate divided by each path's, round by round (both measured in the same
    minute, so less exposed to the machine's drift than the best rounds), and the median;
    then the database's CPU per appended op over the path's, as the store's target is
    judged (docs/benchmarks.md, "Issue 17's targets"; lower is better)."""
    _print_ratios(rounds, "append ÷ path", lambda path, append: path.wall / append.wall)
    _print_ratios(
        rounds,
        "database CPU per op, append ÷ path",
        lambda path, append: append.server_cpu / path.server_cpu if path.server_cpu else math.nan,
    )


def _print_ratios(
    rounds: list[list[Phase]], title: str, ratio: Callable[[Phase, Phase], float]
) -> None:
    """``ratio(path, append)`` for every path but append's, round by round, and the median."""
    print(f"{title}, round by round (median):")
    for column in list(zip(*rounds, strict=True))[1:]:
        ratios = [ratio(p, r[0]) for p, r in zip(column, rounds, strict=True)]
        shown = ", ".join(f"{x:.2f}x" for x in ratios)
        print(f"  {column[0].label:<42}{shown} ({statistics.median(ratios):.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--writers", type=int, default=8, help="concurrent client writers")
    # Group commit: the store's own defaults unless given (docs/eventstore.md).
    parser.add_argument("--store-writers", type=int, help="group-commit writers")
    parser.add_argument("--max-group-ops", type=int, help="ops per transaction, one space")
    parser.add_argument("--spread-ops", type=int, help="ops per transaction across spaces")
    parser.add_argument("--shared", action="store_true", help="all writers in one space")
    parser.add_argument("--profile", action="store_true", help="time append's phases")
    parser.add_argument(
        "--rounds", type=int, default=2, help="run every path this often; report each best"
    )
    parser.add_argument("--skip-eventsourcing", action="store_true")
    parser.add_argument(
        "--only-append",
        action="store_true",
        help="measure the append alone, round by round (to compare trees or settings)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    # The garbage-collector tuning every concord process applies at start (concord/runtime.py);
    # CONCORD_GC_THRESHOLD=700,10,10 measures with CPython's defaults.
    print(f"GC thresholds {tune_gc()} (as in every concord process)")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
