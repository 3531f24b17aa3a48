"""Reminder firing throughput: many reminders due at the same instant.

    .venv/bin/python -m bench.reminder_bench --dsn postgresql://postgres@127.0.0.1:5432/test

Creates a scratch database (dropped at the end), writes ``--reminders`` tasks with the
same ``remind_at`` spread over ``--spaces`` spaces through ``PostgresEventStore.append``,
projects them with the projector's apply step, lets ``--instances`` scheduler engines
learn of them by reconciliation, then moves their (manual) clock past the due time and
measures how long the engines take to fire everything (claim, append ``reminder_fired``,
mark fired), ``--batch`` reminders per claim. ``--appends batch`` (the default, what
the scheduler service runs) appends a claim's events in one transaction, the store's
``append_server_events``; ``--appends single`` appends them one ``append_server_event``
each, all of a claim at once (how the scheduler fired before the batch).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import asyncpg

from core.errors import ConcordError
from core.ports import ServerEvent, ServerOutcome
from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from projector.apply import apply_space
from scheduler.clock import ManualClock, format_time
from scheduler.engine import ReminderEngine
from scheduler.options import SchedulerOptions
from scheduler.testing import TaskWriter

SECRET = secrets.token_urlsafe(48)


class OneAppendEach(PostgresEventStore):
    """The store with its batch replaced by one ``append_server_event`` per event, run
    concurrently (``--appends single``): what the batch is measured against."""

    async def append_server_events(self, events: Sequence[ServerEvent]) -> list[ServerOutcome]:
        results = await asyncio.gather(
            *(
                self.append_server_event(
                    space_id=e.space_id,
                    kind=e.kind,
                    entity_type=e.entity_type,
                    entity_id=e.entity_id,
                    value=e.value,
                    key=e.key,
                )
                for e in events
            ),
            return_exceptions=True,
        )
        out: list[ServerOutcome] = []
        for result in results:
            if isinstance(result, BaseException) and not (
                isinstance(result, ConcordError) and not result.retryable
            ):
                raise result
            out.append(result)
        return out


def _with_database(dsn: str, name: str) -> str:
    return urlparse(dsn)._replace(path=f"/{name}").geturl()


async def _setup(pool: asyncpg.Pool, store: PostgresEventStore, args: argparse.Namespace) -> str:
    due = format_time(datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1))
    per_space = args.reminders // args.spaces
    for s in range(args.spaces):
        writer = await TaskWriter.new_space(store, f"bench-{s}")
        for start in range(0, per_space, 500):
            count = min(500, per_space - start)
            await writer.push(
                [writer.op(f"t{start + i}", "set", "remind_at", due) for i in range(count)]
            )
        async with pool.acquire() as conn:
            while await apply_space(conn, writer.space_id) is not None:
                pass
    return due


async def run(args: argparse.Namespace) -> None:
    name = f"concord_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = _with_database(args.dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        size = args.concurrency
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=args.instances * (size + 2))
        events_pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=args.instances * (size + 1)
        )
        kind = PostgresEventStore if args.appends == "batch" else OneAppendEach
        store = kind(events_pool, secret_key=SECRET)
        due = await _setup(pool, store, args)
        clock = ManualClock()
        options = SchedulerOptions(fire_concurrency=size, claim_batch=args.batch)
        engines = [
            ReminderEngine(
                pool=pool,
                events=store,
                clock=clock,
                instance=f"bench-{i}",
                max_lateness=86_400,
                options=options,
            )
            for i in range(args.instances)
        ]
        await engines[0].reconcile()
        clock.set(datetime.fromisoformat(due) + timedelta(seconds=1))
        started = time.perf_counter()
        done = await asyncio.gather(*(e.drain_due() for e in engines))
        elapsed = time.perf_counter() - started
        fired = sum(len(d) for d in done)
        print(
            f"{fired} reminders fired by {args.instances} engine(s), concurrency {size}, "
            f"{args.spaces} space(s), {args.batch} per claim, {args.appends} appends: "
            f"{elapsed:.2f} s, {fired / elapsed:.0f} reminders/s "
            f"(per engine: {[len(d) for d in done]})"
        )
        await store.close()
        await events_pool.close()
        await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--reminders", type=int, default=2000)
    parser.add_argument("--spaces", type=int, default=20)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=SchedulerOptions().claim_batch)
    parser.add_argument("--appends", choices=("batch", "single"), default="batch")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
