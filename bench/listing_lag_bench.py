"""What a listing costs while the projector is a few events behind an active space.

    .venv/bin/python -m bench.listing_lag_bench --dsn postgresql://postgres@127.0.0.1:5432/test

Creates a scratch database (dropped at the end) and one space holding ``--events``
field sets over ``--tasks`` tasks (pushes of 1,000), applies all but the last ``--lag``
of them to the read model (``projector.apply.apply_space``), then times, alternately,
``--rounds`` times each:

* *replay*: ``PostgresEventStore.replay_space``, the whole space folded from the log:
  what the gateway did for every listing as soon as the read model was behind the
  head at all;
* *read model + tail*: ``projector.readmodel.list_entities``, one page of ``--page``
  tasks, which folds the lag's events into the states they touch and answers at the
  head.

Prints the best and median wall milliseconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
import uuid

import asyncpg

from bench.eventstore_bench import scratch_database
from eventstore.postgres import PostgresEventStore
from eventstore.testing import op
from projector.apply import apply_space
from projector.readmodel import list_entities

PUSH = 1000


async def bench(args: argparse.Namespace) -> None:
    async with scratch_database(args.dsn) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
        try:
            async with PostgresEventStore(pool, secret_key=secrets.token_hex(16)) as store:
                await _bench_in(pool, store, args)
        finally:
            await pool.close()


async def _bench_in(
    pool: asyncpg.Pool, store: PostgresEventStore, args: argparse.Namespace
) -> None:
    user, device = str(uuid.uuid4()), str(uuid.uuid4())
    space = await store.create_space(name="lag", creator_user_id=user, personal=False)
    heads: dict[int, str] = {}
    ops = []
    for n in range(args.events):
        task = n % args.tasks
        raw = op(space, entity_id=f"t-{task}", value=f"v{n}", lamport=n + 1)
        if task in heads:
            raw["pred"] = [heads[task]]
        heads[task] = raw["op_id"]
        ops.append(raw)
    start = time.perf_counter()
    for i in range(0, len(ops), PUSH):
        out = await store.append(user_id=user, device_id=device, ops=ops[i : i + PUSH])
        if any(r.status != "applied" for r in out.results):
            raise RuntimeError(f"a push was not applied: {out.results[:3]}")
    head = args.events + 1  # the creator's member_added is seq 1
    async with pool.acquire() as conn:
        while await apply_space(conn, space, up_to=head - args.lag) is not None:
            pass
    print(
        f"{args.events:,} sets over {args.tasks:,} tasks stored and projected up to seq "
        f"{head - args.lag:,} (head {head:,}) in {time.perf_counter() - start:.1f} s"
    )
    times: dict[str, list[float]] = {"replay": [], "read model + tail": []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        states, seq = await store.replay_space(space)
        times["replay"].append(time.perf_counter() - t)
        if seq != head or len(states) != args.tasks + 1:  # the tasks and `_member`
            raise RuntimeError(f"the replay answered seq {seq} with {len(states)} entities")
        t = time.perf_counter()
        page, seq, _ = await list_entities(pool, space, "task", False, args.page, None)
        times["read model + tail"].append(time.perf_counter() - t)
        if seq != head or len(page) != min(args.page, args.tasks):
            raise RuntimeError(f"the listing answered seq {seq} with {len(page)} entities")
    print(f"one listing, {args.lag} events behind, wall ms (best / median of {args.rounds}):")
    for name, got in times.items():
        print(f"  {name:<18} {min(got) * 1e3:10.1f} / {statistics.median(got) * 1e3:10.1f}")
    ratio = statistics.median(times["replay"]) / statistics.median(times["read model + tail"])
    print(f"  replay ÷ read model + tail (medians): {ratio:,.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--lag", type=int, default=10, help="events the read model is behind")
    parser.add_argument("--page", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if min(args.events, args.tasks, args.rounds, args.page) < 1 or not 0 < args.lag < args.events:
        parser.error("sizes must be at least 1, and 0 < --lag < --events")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
