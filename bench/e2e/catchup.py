"""Catch-up: a device subscribing with ``after=0`` to a space of 200,000 events.

    .venv/bin/python -m bench.e2e.catchup [--events 200000] [--rounds 3]

The space (a user's personal space) is filled through the store's own append path
(``PostgresEventStore.append``, pushes of 1,000 field sets), then ``VACUUM ANALYZE``.
Timed, ``--rounds`` times each, alternating:

- the device: connect, ``hello`` subscribing with ``after=0``, every ``events``
  message decoded, until ``caught_up`` (checked: every seq once, the last one the head);
- a raw ordered ``SELECT`` of the same rows and columns the store reads
  (``eventstore.rows.READ_COLUMNS``), asyncpg ``fetch`` in keyset pages of 200 (the
  gateway's page) and of 1,000 rows, in this process;
- the store's own ``read`` in pages of 200 (rows decoded into events), in this process.

The ratio is the device's rate over the raw read's (pages of 200).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from bench.e2e import cli
from bench.e2e import report as rep
from bench.e2e.accounts import Accounts, Device
from bench.e2e.profiling import Profiler, add_to_report
from bench.e2e.stack import SECRET, Stack, open_stack
from bench.e2e.wsclient import Socket, Writer
from eventstore.postgres import PostgresEventStore
from eventstore.rows import READ_COLUMNS

PAGE = 200  # gateway.ws.subscription.PAGE


async def preload(stack: Stack, owner: Device, events: int, batch: int = 1000) -> int:
    """Append ``events`` - 1 field sets (seq 1 is the space's member_added); the head."""
    assert stack.pool is not None
    writer = Writer(owner.personal_space_id, "pre", tasks=5000)
    remaining = events - 1
    async with PostgresEventStore(stack.pool, secret_key=SECRET) as store:
        with rep.phase_progress(f"preloading {events:,} events", float(events)) as tick:
            done = 1
            queue = asyncio.Queue[list[object]](maxsize=4)

            async def produce() -> None:
                left = remaining
                while left > 0:
                    size = min(batch, left)
                    await queue.put([writer.op() for _ in range(size)])
                    left -= size
                for _ in range(2):
                    await queue.put([])

            async def consume() -> None:
                nonlocal done
                while ops := await queue.get():
                    outcome = await store.append(
                        user_id=owner.user_id, device_id=owner.device_id, ops=ops
                    )
                    bad = [r for r in outcome.results if r.status != "applied"]
                    if bad:
                        raise RuntimeError(f"preload rejected: {bad[0]}")
                    done += len(ops)
                    tick(done, f"{done:,}")

            await asyncio.gather(produce(), consume(), consume())
    await stack.pool.execute("VACUUM ANALYZE events")
    head: int = await stack.pool.fetchval(
        "SELECT head FROM spaces WHERE space_id = $1", uuid.UUID(owner.personal_space_id)
    )
    return head


async def over_websocket(url: str, device: Device, head: int) -> float:
    """Seconds from connecting to ``caught_up``; every seq checked."""
    began = time.perf_counter()
    sock = await Socket.open(url, device.token, [(device.personal_space_id, 0)])
    expected = 1
    try:
        while True:
            msg = await sock.recv()
            if msg.type == "events":
                for event in msg.events or []:
                    if event.seq != expected:
                        raise RuntimeError(f"catch-up gap: got seq {event.seq}, not {expected}")
                    expected += 1
            elif msg.type == "caught_up":
                break
        took = time.perf_counter() - began
    finally:
        await sock.close()
    if expected - 1 != head:
        raise RuntimeError(f"caught_up after {expected - 1} events, head is {head}")
    return took


async def raw_select(dsn: str, space_id: str, head: int, page: int) -> float:
    """Seconds to fetch every row of the space in keyset pages (a fresh connection)."""
    conn = await asyncpg.connect(dsn)
    try:
        sid = uuid.UUID(space_id)
        query = (
            f"SELECT {READ_COLUMNS} FROM events WHERE space_id = $1 AND seq > $2 "
            "ORDER BY seq LIMIT $3"
        )
        statement = await conn.prepare(query)
        began = time.perf_counter()
        after, rows = 0, 0
        while True:
            fetched = await statement.fetch(sid, after, page)
            if not fetched:
                break
            rows += len(fetched)
            after = fetched[-1]["seq"]
        took = time.perf_counter() - began
    finally:
        await conn.close()
    if rows != head:
        raise RuntimeError(f"raw read {rows} rows, head is {head}")
    return took


async def store_read(stack: Stack, space_id: str, head: int) -> float:
    assert stack.pool is not None
    async with PostgresEventStore(stack.pool, secret_key=SECRET) as store:
        began = time.perf_counter()
        after = 0
        while events := await store.read(space_id, after, PAGE):
            after = events[-1].seq
        took = time.perf_counter() - began
    if after != head:
        raise RuntimeError(f"store read up to {after}, head is {head}")
    return took


QUICK = {"events": 5_000, "rounds": 1}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)


async def workload(args: argparse.Namespace, report: rep.Report) -> None:
    async with open_stack(args, projector=False, scheduler=False) as stack:
        await cli.describe(stack, report)
        gateway = stack.gateways[0]
        async with Accounts(gateway.url) as accounts:
            owner = (await accounts.users(1))[0]
        head = await preload(stack, owner, args.events)
        times: dict[str, list[float]] = {}
        paths: dict[str, Callable[[], Awaitable[float]]] = {
            "device over WebSocket, after=0 to caught_up": lambda: over_websocket(
                gateway.ws_url, owner, head
            ),
            f"raw SELECT, pages of {PAGE}": lambda: raw_select(
                stack.database_url, owner.personal_space_id, head, PAGE
            ),
            "raw SELECT, pages of 1,000": lambda: raw_select(
                stack.database_url, owner.personal_space_id, head, 1000
            ),
            f"the store's read(), pages of {PAGE}": lambda: store_read(
                stack, owner.personal_space_id, head
            ),
        }
        with rep.phase_progress("timing", float(args.rounds * len(paths))) as tick:
            for round_ in range(args.rounds):
                for i, (name, path) in enumerate(paths.items()):
                    times.setdefault(name, []).append(await path())
                    stack.check_alive()
                    tick(round_ * len(paths) + i + 1, name)
        if args.profile:  # catch-ups one after the other, the gateway under py-spy
            over_ws = "device over WebSocket, after=0 to caught_up"
            seconds = max(10.0, 3 * statistics.median(times[over_ws]))
            profiler = Profiler("catchup", {gateway.name: gateway.pid}, seconds)
            profiler.start()
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                await paths[over_ws]()
            add_to_report(report, await profiler.finish())
    table = report.table(
        f"Catch-up of one space of {head:,} events (best and median of {args.rounds})",
        ["path", "best s", "events/s (best)", "median s", "events/s (median)"],
    )
    for name, got in times.items():
        best, median = min(got), statistics.median(got)
        table.add(
            name, f"{best:.3f}", rep.rate(head / best), f"{median:.3f}", rep.rate(head / median)
        )
    device = times["device over WebSocket, after=0 to caught_up"]
    raw = times[f"raw SELECT, pages of {PAGE}"]
    ratio = statistics.median(raw) / statistics.median(device)
    report.ratio("catch-up over WebSocket / raw SELECT (pages of 200), medians", ratio)
    report.figures["events"] = head
    report.figures["ws_events_per_s"] = head / statistics.median(device)
    report.figures["raw_events_per_s"] = head / statistics.median(raw)
    report.figures["ratio"] = ratio
    report.notes.append(
        "Only a gateway runs (no projector or scheduler: catch-up reads the log alone); the "
        "raw reads and the store's read run in the bench's own process, the device's decoding "
        "in it too (msgspec), so the WebSocket figure includes the client's work."
    )


if __name__ == "__main__":
    cli.run("catchup", __doc__, workload, configure, QUICK)
