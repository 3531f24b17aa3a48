"""The rebuild's bulk phase: fold the log from seq 1 into the shadow tables.

Merging runs in Python, so one process is bound by one core. With ``workers > 1`` the
spaces are split into contiguous ranges of space_id (balanced by event count) across
worker processes (``python -m projector.bulk``), each folding its range in its own
snapshot and COPYing it. A range reads as one scan of the primary key, in its order; a
list of ids (``space_id = ANY(...)``) would make PostgreSQL scan and sort the table. A
space is folded by exactly one worker, and its shadow checkpoint is the last seq that
worker folded, so the shadow is consistent space by space whatever the snapshots; what
was appended meanwhile is caught up afterwards (``projector.rebuild``).

Workers report on stdout: ``p <events>`` as they go, ``r <events> <spaces> <entities>``
at the end.

No event stops the bulk phase either: a space with an event that cannot be folded, and
the spaces of a write PostgreSQL refuses (a value it cannot store), are left without a
shadow checkpoint; the catch-up then projects them from seq 1 with the live code, which
quarantines the event to blame (docs/projector.md, "Quarantine").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from crdt import encode_state
from eventstore.errors import is_transient
from eventstore.reads import SpaceRange, everything
from eventstore.rows import Conn
from projector.folding import SpaceFold, fold_spaces
from projector.tables import SHADOW, STATE_COLUMNS
from projector.typed import derive

_FLUSH_ENTITIES = 5000
#: The first and last space_id of a worker's range.
Range = SpaceRange

log = logging.getLogger("concord.projector.rebuild")


@dataclass
class Counts:
    events: int = 0
    spaces: int = 0
    entities: int = 0


class ShadowWriter:
    """Buffers folded spaces and COPYs states with their checkpoints, one transaction per
    flush (a space's states and checkpoint always land together), while the next spaces
    are being folded."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.states: list[tuple[object, ...]] = []
        self.checkpoints: list[tuple[uuid.UUID, int]] = []
        self._pending: asyncio.Future[None] | None = None

    def add(self, fold: SpaceFold) -> None:
        if fold.failed is not None:
            log.warning(
                "space %s: event %d cannot be folded; left to the catch-up",
                fold.space_id,
                fold.failed,
            )
            return
        sid = uuid.UUID(fold.space_id)
        for key, state in fold.states.items():
            typed, _ = derive(state)
            data = encode_state(state, settled=True)
            self.states.append((sid, *key, data, fold.last[key], *typed))
        self.checkpoints.append((sid, fold.seq))

    async def flush(self, *, unless_small: bool = False) -> None:
        """Start writing what is buffered, once the previous write is done."""
        if unless_small and len(self.states) < _FLUSH_ENTITIES:
            return
        await self.drain()
        if self.checkpoints:
            states, checkpoints = self.states, self.checkpoints
            self.states, self.checkpoints = [], []
            self._pending = asyncio.ensure_future(self._write(states, checkpoints))

    async def drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def _write(
        self, states: list[tuple[object, ...]], checkpoints: list[tuple[uuid.UUID, int]]
    ) -> None:
        try:
            async with self.conn.transaction():
                await self.conn.copy_records_to_table(
                    SHADOW.states, records=states, columns=STATE_COLUMNS
                )
                await self.conn.copy_records_to_table(
                    SHADOW.checkpoints, records=checkpoints, columns=("space_id", "seq")
                )
        except Exception as exc:
            if is_transient(exc):
                raise
            # Nothing of these spaces was written: no checkpoint, so the catch-up
            # projects them from seq 1 and quarantines whatever event is to blame.
            log.warning("%d spaces left to the catch-up: %r", len(checkpoints), exc)


async def fold_into_shadow(
    reader: Conn,
    writer_conn: Conn,
    space_range: Range | None,
    on_events: Callable[[int], None],
) -> Counts:
    """Fold the spaces of ``space_range`` (all when None) in one REPEATABLE READ snapshot
    of ``reader`` and write them to the shadow tables through ``writer_conn``."""
    counts = Counts()
    writer = ShadowWriter(writer_conn)
    try:
        async with (
            reader.transaction(isolation="repeatable_read", readonly=True),
            _gc_paused(),
        ):
            async for fold in fold_spaces(everything(reader, spaces=space_range), on_events):
                writer.add(fold)
                counts.spaces += 1
                counts.entities += len(fold.states)
                counts.events += fold.count
                await writer.flush(unless_small=True)
        await writer.flush()
    finally:
        await writer.drain()  # the connection is handed back only when idle
    return counts


@contextlib.asynccontextmanager
async def _gc_paused() -> AsyncIterator[None]:
    """No cyclic GC while folding: the fold makes hundreds of thousands of long-lived
    objects (states, heads, op ids) and no cycles, and each collection would walk them
    all again for nothing (measured: ~10-15% of a rebuild)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def plan(spaces: list[tuple[uuid.UUID, int]], workers: int) -> list[Range]:
    """Cut the spaces, in space_id order, into at most ``workers`` contiguous ranges of
    about equal event counts: range k ends near k/workers of all events, before or after
    the space that crosses that mark, whichever lands closer to it."""
    ordered = sorted(spaces)
    total = sum(head for _, head in ordered)
    ranges: list[Range] = []
    first, previous = ordered[0][0], ordered[0][0]
    load = 0
    for space_id, head in ordered:
        mark = total * (len(ranges) + 1) / workers
        closing = len(ranges) < workers - 1
        if closing and load and load + head > mark and mark - load < load + head - mark:
            ranges.append((first, previous))  # ends before this space
            first = space_id
        load += head
        previous = space_id
    ranges.append((first, previous))
    return ranges


async def _run_worker(dsn: str, space_range: Range, on_events: Callable[[int], None]) -> Counts:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "projector.bulk", dsn,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    counts = Counts()
    try:
        proc.stdin.write(json.dumps([str(s) for s in space_range]).encode())
        proc.stdin.close()
        errors = asyncio.ensure_future(proc.stderr.read())
        async for line in proc.stdout:
            kind, *numbers = line.split()
            if kind == b"p":
                on_events(int(numbers[0]))
            elif kind == b"r":
                counts = Counts(*(int(n) for n in numbers))
        if await proc.wait() != 0:
            raise RuntimeError((await errors).decode(errors="replace")[-2000:])
        return counts
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def fold_here(
    pool: asyncpg.Pool, space_range: Range | None, on_events: Callable[[int], None]
) -> Counts:
    """Fold the spaces of ``space_range`` (all when None) in this process, on two of the
    pool's connections (a snapshot to read, one to write the shadow)."""
    async with pool.acquire() as reader, pool.acquire() as writer:
        return await fold_into_shadow(reader, writer, space_range, on_events)


async def fold_in_workers(
    pool: asyncpg.Pool,
    dsn: str,
    spaces: list[tuple[uuid.UUID, int]],
    workers: int,
    on_events: Callable[[int], None],
) -> Counts:
    """Run the bulk fold in ``workers`` processes: this one (the first range, while the
    others start) and worker processes; their counts added up."""
    here, *elsewhere = plan(spaces, workers)
    # A TaskGroup: when one worker fails, the others are cancelled (and killed).
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_run_worker(dsn, r, on_events)) for r in elsewhere]
        await asyncio.sleep(0)  # let the workers' processes be spawned first
        tasks.append(group.create_task(fold_here(pool, here, on_events)))
    results = [t.result() for t in tasks]
    return Counts(
        events=sum(r.events for r in results),
        spaces=sum(r.spaces for r in results),
        entities=sum(r.entities for r in results),
    )


async def _worker(dsn: str, space_range: Range) -> None:
    reader = await asyncpg.connect(dsn)
    writer = await asyncpg.connect(dsn)
    try:
        counts = await fold_into_shadow(
            reader, writer, space_range, lambda n: print(f"p {n}", flush=True)
        )
        print(f"r {counts.events} {counts.spaces} {counts.entities}", flush=True)
    finally:
        for conn in (reader, writer):
            with contextlib.suppress(Exception):
                await conn.close()


if __name__ == "__main__":
    first, last = (uuid.UUID(s) for s in json.loads(sys.stdin.read()))
    asyncio.run(_worker(sys.argv[1], (first, last)))
