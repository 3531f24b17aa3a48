"""What a field's history costs an append: a field with a long history against fresh ones.

    .venv/bin/python -m bench.field_history_bench --dsn postgresql://postgres@127.0.0.1:5432/test

Creates a scratch database (dropped at the end) and one space, then stores ``--history``
sets of one field (``task/hot.title``, each naming the previous one in ``pred``, as a
device edits a title) through ``PostgresEventStore.append`` in pushes of 1,000. Then,
``--rounds`` times, alternately:

* *long history*: ``--ops`` one-op pushes, one after another, each a set of that field
  naming its head (the field's history grows by ``--ops`` each round);
* *fresh field*: ``--ops`` one-op pushes in the same space, each a set of a field never
  set before (a new task's title).

The two differ only in the history of the field they set (same space, same size, same
ops per push), so the ratio of their per-op times is what the history costs. Printed per
round: wall µs per op (one push at a time, so that is the append's latency) and the
database backends' CPU µs per op; then the median of the round-by-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
import uuid
from typing import Any

import asyncpg

from bench.eventstore_bench import _backend_cpu, scratch_database
from concord.runtime import tune_gc
from eventstore.postgres import PostgresEventStore
from eventstore.testing import op

FILL_BATCH = 1000


class Field:
    """The hot field's chain: its head and the next lamport."""

    def __init__(self) -> None:
        self.head: str | None = None
        self.lamport = 0

    def next_op(self, space: str) -> dict[str, Any]:
        self.lamport += 1
        raw = op(
            space,
            entity_id="hot",
            value=f"edit {self.lamport}",
            lamport=self.lamport,
            pred=None if self.head is None else [self.head],
        )
        self.head = raw["op_id"]
        return raw


async def _push(store: PostgresEventStore, user: str, device: str, ops: list[Any]) -> None:
    out = await store.append(user_id=user, device_id=device, ops=ops)
    assert all(r.status == "applied" for r in out.results), out.results[:3]


async def _fill(
    store: PostgresEventStore, user: str, space: str, hot: Field, history: int
) -> float:
    device = str(uuid.uuid4())
    start = time.perf_counter()
    for done in range(0, history, FILL_BATCH):
        n = min(FILL_BATCH, history - done)
        await _push(store, user, device, [hot.next_op(space) for _ in range(n)])
    return time.perf_counter() - start


async def _timed(
    dsn: str, store: PostgresEventStore, user: str, ops: list[dict[str, Any]]
) -> tuple[float, float]:
    """Push ``ops`` one per push, in order: (wall µs per op, database CPU µs per op)."""
    device = str(uuid.uuid4())
    before = await _backend_cpu(dsn)
    wall = time.perf_counter()
    for raw in ops:
        await _push(store, user, device, [raw])
    wall = time.perf_counter() - wall
    after = await _backend_cpu(dsn)
    server = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return wall / len(ops) * 1e6, server / len(ops) * 1e6


async def bench(args: argparse.Namespace) -> None:
    async with scratch_database(args.dsn) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
        try:
            await _bench_in(pool, dsn, args)
        finally:
            await pool.close()


async def _bench_in(pool: asyncpg.Pool, dsn: str, args: argparse.Namespace) -> None:
    store = PostgresEventStore(pool, secret_key=secrets.token_hex(16), writers=1)
    user = str(uuid.uuid4())
    space = await store.create_space(name="history", creator_user_id=user, personal=False)
    hot = Field()
    async with store:
        seconds = await _fill(store, user, space, hot, args.history)
        print(
            f"stored {args.history:,} sets of one field in {seconds:.1f} s "
            f"({args.history / seconds:,.0f} ops/s, pushes of {FILL_BATCH})"
        )
        await pool.execute("VACUUM ANALYZE")
        fresh = 0
        walls: list[float] = []
        cpus: list[float] = []
        print(f"{'round':<7}{'long history µs/op':>20}{'fresh µs/op':>14}{'ratio':>8}"
              f"{'db CPU long':>13}{'db CPU fresh':>14}")  # fmt: skip
        for number in range(args.rounds):
            long_ops = [hot.next_op(space) for _ in range(args.ops)]
            fresh_ops = []
            for _ in range(args.ops):
                fresh += 1
                fresh_ops.append(op(space, entity_id=f"fresh-{fresh}", lamport=hot.lamport))
            long_wall, long_cpu = await _timed(dsn, store, user, long_ops)
            fresh_wall, fresh_cpu = await _timed(dsn, store, user, fresh_ops)
            walls.append(long_wall / fresh_wall)
            if long_cpu > 0 and fresh_cpu > 0:  # 0: the backend was not seen (it left)
                cpus.append(long_cpu / fresh_cpu)
            print(
                f"{number + 1:<7}{long_wall:>20.0f}{fresh_wall:>14.0f}"
                f"{long_wall / fresh_wall:>7.2f}x{_cpu(long_cpu):>13}{_cpu(fresh_cpu):>14}"
            )
    cpu = f"{statistics.median(cpus):.2f}x" if cpus else "n/a"
    print(
        f"median of round-by-round ratios (field with {args.history:,}+ earlier sets ÷ "
        f"fresh field): wall {statistics.median(walls):.2f}x, database CPU {cpu}"
    )


def _cpu(micros: float) -> str:
    return f"{micros:.0f}" if micros > 0 else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--history", type=int, default=100_000, help="earlier sets of the field")
    parser.add_argument("--ops", type=int, default=1000, help="one-op pushes per path and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if min(args.history, args.ops, args.rounds) < 1:
        parser.error("--history, --ops and --rounds must be at least 1")
    print(f"GC thresholds {tune_gc()} (as in every concord process)")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
