"""Reminder timing precision: how late do reminders fire, in the real services?

    .venv/bin/python -m bench.reminder_lateness_bench \\
        --dsn postgresql://postgres@127.0.0.1:5432/test --nats nats://127.0.0.1:4222

Creates a scratch database (dropped at the end), runs the projector and the scheduler as
``concord dev`` runs them (in this process, real clock, real NATS), writes ``--reminders``
tasks whose ``remind_at`` values are spread over ``--spread`` seconds starting ``--lead``
seconds after the writes begin (10 writers, 100 tasks per push, at once; the bench says
when a write finished after its first due time, which would make the run meaningless),
waits until every one has fired, and prints the lateness distribution (firing time
minus due time, as recorded in the ``reminders`` table) and the firing rate from the
first due time to the last firing. Targets: p99 <= 250 ms for the default 300 over
20 s; for 10,000 due within a minute (``--reminders 10000 --spread 60 --lead 30``),
p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import asyncpg

from core.settings import Settings
from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from projector.runner import in_process as projector_in_process
from scheduler.service import SchedulerService
from scheduler.testing import TaskWriter

SECRET = "bench-secret-key-0123456789abcdef-0123456789"


def _with_db(dsn: str, name: str) -> str:
    return urlparse(dsn)._replace(path=f"/{name}").geturl()


async def _write(store: PostgresEventStore, count: int, spread: float, lead: float) -> datetime:
    """Write the tasks (10 writers at once, 100 tasks per push); the first due time."""
    writers = [await TaskWriter.new_space(store, f"lateness-{i}") for i in range(10)]
    rng = random.Random(7)
    start = datetime.now(UTC) + timedelta(seconds=lead)
    dues = [start + timedelta(seconds=rng.uniform(0, spread)) for _ in range(count)]

    async def write(k: int, writer: TaskWriter) -> None:
        mine = list(range(k, count, len(writers)))
        for at in range(0, len(mine), 100):
            ops = []
            for i in mine[at : at + 100]:
                remind_at = dues[i].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                ops += [writer.op(f"t-{i}", "set", "title", "task")]
                ops += [writer.op(f"t-{i}", "set", "remind_at", remind_at)]
            await writer.push(ops)

    await asyncio.gather(*(write(k, w) for k, w in enumerate(writers)))
    return min(dues)


async def run(dsn: str, nats_url: str, count: int, spread: float, lead: float) -> None:
    name = f"concord_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    target = _with_db(dsn, name)
    try:
        conn = await asyncpg.connect(target)
        await migrate(conn)
        await conn.close()
        settings = Settings(
            database_url=target, nats_url=nats_url, nats_prefix=f"lb{secrets.token_hex(3)}",
            secret_key=SECRET, admin_token="bench", data_dir=Path("/tmp"),
        )  # fmt: skip
        pool = await asyncpg.create_pool(target, min_size=1, max_size=4)
        async with (
            projector_in_process(settings),
            SchedulerService(settings),
            PostgresEventStore(pool, secret_key=SECRET) as store,
        ):
            began = time.monotonic()
            first_due = await _write(store, count, spread, lead)
            print(f"wrote {count} reminders in {time.monotonic() - began:.1f} s", flush=True)
            if datetime.now(UTC) > first_due:
                print("WARNING: the writes ended after the first due time: raise --lead")
            deadline = time.monotonic() + lead + spread + 120
            fired = 0
            while time.monotonic() < deadline:
                fired = await pool.fetchval("SELECT count(*) FROM reminders WHERE status = 'fired'")
                if fired >= count:
                    break
                await asyncio.sleep(0.5)
            rows = await pool.fetch(
                "SELECT lateness_ms, fire_at, fired_at FROM reminders WHERE status = 'fired'"
            )
        await pool.close()
        late = sorted(r["lateness_ms"] for r in rows)
        if not late:
            print("no reminder fired")
            return
        q = statistics.quantiles(late, n=100, method="inclusive")
        span = (max(r["fired_at"] for r in rows) - min(r["fire_at"] for r in rows)).total_seconds()
        busiest: dict[int, int] = {}
        for r in rows:
            second = int(r["fired_at"].timestamp())
            busiest[second] = busiest.get(second, 0) + 1
        print(
            f"firings/s, first due to last firing: {len(late) / span:.0f} (offered "
            f"{count / spread:.0f}/s); busiest second {max(busiest.values())}"
        )
        print(
            f"fired {len(late)}/{count}; lateness ms: p50 {q[49]:.0f}  p95 {q[94]:.0f}  "
            f"p99 {q[98]:.0f}  max {late[-1]}"
        )
    finally:
        with contextlib.suppress(Exception):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--reminders", type=int, default=300)
    parser.add_argument("--spread", type=float, default=20.0, help="seconds")
    parser.add_argument("--lead", type=float, default=5.0, help="seconds")
    args = parser.parse_args()
    asyncio.run(run(args.dsn, args.nats, args.reminders, args.spread, args.lead))


if __name__ == "__main__":
    main()
