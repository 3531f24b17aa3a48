"""What a field's history costs an append and the read model: a long history against none.

    .venv/bin/python -m bench.field_history_bench --dsn postgresql://postgres@127.0.0.1:5432/test

Creates a scratch database (dropped at the end) and one space, then stores ``--history``
sets of one field (``task/hot.title``, each naming the previous one in ``pred``, as a
device edits a title) through ``PostgresEventStore.append`` in pushes of 1,000, and
applies them to the read model (``projector.apply.apply_space``, batches of 5,000).
Then, ``--rounds`` times, alternately:

* *long history*: ``--ops`` one-op pushes, one after another, each a set of that field
  naming its head (the field's history grows by ``--ops`` each round);
* *fresh field*: ``--ops`` one-op pushes in the same space, each a set of a field never
  set before (a new task's title);
* *young field*: the same, each of a field with one earlier set (stored untimed just
  before), naming it: an op like the long-history one (a pred to look up, a heads row
  to rewrite) but for the history.

They differ only in the history of the field they set (same space, same size, same ops
per push), so the ratios of their per-op times are what the history costs. Printed per
round: wall µs per op (one push at a time, so that is the append's latency, commit
included) and the database backends' CPU µs per op; then the read model's wall µs per
event, applying each path's events one per batch (as a projector keeping up with one-op
pushes does: load the entity's state, apply, write it back, move the checkpoint); then
the medians of the round-by-round ratios.
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
from projector.apply import apply_space

FILL_BATCH = 1000
CATCH_UP_BATCH = 5000


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
    """Push ``ops`` one per push, in order: (wall µs per op, database CPU µs per op; 0
    when a backend left meanwhile, taking its CPU figure with it)."""
    device = str(uuid.uuid4())
    before = await _backend_cpu(dsn)
    wall = time.perf_counter()
    for raw in ops:
        await _push(store, user, device, [raw])
    wall = time.perf_counter() - wall
    after = await _backend_cpu(dsn)
    if before.keys() - after.keys():  # a backend left: its CPU is lost, say "not seen"
        return wall / len(ops) * 1e6, 0.0
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
        seconds = await _catch_up(pool, space)
        print(f"the read model applied them in {seconds:.1f} s (batches of {CATCH_UP_BATCH:,})")
        await pool.execute("VACUUM ANALYZE")
        await _rounds(dsn, pool, store, user, space, hot, args)


async def _catch_up(pool: asyncpg.Pool, space: str) -> float:
    """Apply the space's events to the read model, as the projector's catch-up does."""
    start = time.perf_counter()
    async with pool.acquire() as conn:
        while await apply_space(conn, space, max_events=CATCH_UP_BATCH) is not None:
            pass
    return time.perf_counter() - start


async def _projected(pool: asyncpg.Pool, space: str, count: int) -> float:
    """Apply the space's next ``count`` events one per batch (a projector keeping up
    with one-op pushes): wall µs per event, load, apply and write back of the state."""
    async with pool.acquire() as conn:
        start = time.perf_counter()
        for _ in range(count):
            applied = await apply_space(conn, space, max_events=1)
            if applied is None or applied.count != 1:
                raise RuntimeError(f"the read model applied {applied} instead of one event")
        return (time.perf_counter() - start) / count * 1e6


PATHS = ("long", "fresh", "young")


async def _rounds(
    dsn: str,
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    user: str,
    space: str,
    hot: Field,
    args: argparse.Namespace,
) -> None:
    """The three paths, ``--rounds`` times; per round µs/op of the append and of the
    read model, then the medians of the round-by-round ratios of the long history to
    each of the others."""
    made = 0
    ratios: dict[str, list[float]] = {
        f"{kind} {p}": [] for kind in ("wall", "cpu", "read model") for p in PATHS[1:]
    }
    print("µs per op: append, wall (one push at a time) / database CPU; read model, wall")
    print(f"{'round':<7}" + "".join(f"{p:>18}" for p in PATHS) + "".join(f"{p:>8}" for p in PATHS))
    for number in range(args.rounds):
        ops: dict[str, list[dict[str, Any]]] = {
            "long": [hot.next_op(space) for _ in range(args.ops)]
        }
        firsts: list[dict[str, Any]] = []
        for path in PATHS[1:]:
            ops[path] = []
            for _ in range(args.ops):
                made += 1
                raw = op(space, entity_id=f"{path}-{made}", lamport=hot.lamport)
                if path == "young":  # one earlier set, stored now, untimed
                    firsts.append(raw)
                    raw = op(
                        space,
                        entity_id=raw["entity_id"],
                        lamport=hot.lamport + 1,
                        pred=[raw["op_id"]],
                    )
                ops[path].append(raw)
        for i in range(0, len(firsts), FILL_BATCH):
            await _push(store, user, str(uuid.uuid4()), firsts[i : i + FILL_BATCH])
        got = {path: await _timed(dsn, store, user, ops[path]) for path in PATHS}
        async with pool.acquire() as conn:  # the young fields' first sets, untimed
            await apply_space(conn, space, max_events=len(firsts))
        projected = {path: await _projected(pool, space, args.ops) for path in PATHS}
        wall, cpu = got["long"]
        for path in PATHS[1:]:
            ratios[f"wall {path}"].append(wall / got[path][0])
            if cpu > 0 and got[path][1] > 0:  # 0: the backend was not seen (it left)
                ratios[f"cpu {path}"].append(cpu / got[path][1])
            ratios[f"read model {path}"].append(projected["long"] / projected[path])
        print(
            f"{number + 1:<7}"
            + "".join(f"{w:>10.0f} / {_cpu(c):>5}" for w, c in got.values())
            + "".join(f"{w:>8.0f}" for w in projected.values())
        )
    print(f"median of round-by-round ratios, field with {args.history:,}+ earlier sets ÷")
    for path, what in (("fresh", "a field never set"), ("young", "a field with one earlier set")):
        cpus = ratios[f"cpu {path}"]
        shown = f"{statistics.median(cpus):.2f}x" if cpus else "n/a"
        print(
            f"  {what}: append wall {statistics.median(ratios[f'wall {path}']):.2f}x, "
            f"database CPU {shown}; read model wall "
            f"{statistics.median(ratios[f'read model {path}']):.2f}x"
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
