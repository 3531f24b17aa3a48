"""The rebuild's bulk phase: fold the log from seq 1 into the shadow tables.

Merging runs in Python, so one process is bound by one core. With ``workers > 1`` the
spaces are split (balanced by event count) across worker processes (``python -m
projector.bulk``), each folding its spaces in its own snapshot and COPYing them. A
space is folded by exactly one worker, and its shadow checkpoint is the last seq that
worker folded, so the shadow is consistent space by space whatever the snapshots; what
was appended meanwhile is caught up afterwards (``projector.rebuild``).

Workers report on stdout: ``p <events>`` as they go, ``r <events> <spaces> <entities>``
at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from crdt import encode_state
from eventstore.rows import Conn
from projector.folding import ALL_EVENTS, SpaceFold, chunks, fold_spaces
from projector.tables import SHADOW, STATE_COLUMNS
from projector.typed import derive

_FLUSH_ENTITIES = 5000
SOME_EVENTS = ALL_EVENTS.replace(" ORDER BY", " WHERE e.space_id = ANY($1::uuid[]) ORDER BY")


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
        sid = uuid.UUID(fold.space_id)
        for key, state in fold.states.items():
            typed, _ = derive(state)
            self.states.append((sid, *key, encode_state(state), fold.last[key], *typed))
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
        async with self.conn.transaction():
            await self.conn.copy_records_to_table(
                SHADOW.states, records=states, columns=STATE_COLUMNS
            )
            await self.conn.copy_records_to_table(
                SHADOW.checkpoints, records=checkpoints, columns=("space_id", "seq")
            )


async def fold_into_shadow(
    reader: Conn,
    writer_conn: Conn,
    space_ids: list[uuid.UUID] | None,
    on_events: Callable[[int], None],
) -> Counts:
    """Fold the given spaces (all when None) in one REPEATABLE READ snapshot of
    ``reader`` and write them to the shadow tables through ``writer_conn``."""
    counts = Counts()
    writer = ShadowWriter(writer_conn)
    query, args = (ALL_EVENTS, ()) if space_ids is None else (SOME_EVENTS, (space_ids,))
    try:
        async with (
            reader.transaction(isolation="repeatable_read", readonly=True),
            _gc_paused(),
        ):
            async for fold in fold_spaces(chunks(reader, query, *args), on_events):
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


def plan(spaces: list[tuple[uuid.UUID, int]], workers: int) -> list[list[uuid.UUID]]:
    """Split spaces into ``workers`` groups of about equal event counts (largest first)."""
    groups: list[list[uuid.UUID]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for space_id, head in sorted(spaces, key=lambda s: -s[1]):
        lightest = loads.index(min(loads))
        groups[lightest].append(space_id)
        loads[lightest] += head
    return [g for g in groups if g]


async def _run_worker(dsn: str, group: list[uuid.UUID], on_events: Callable[[int], None]) -> Counts:
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
        proc.stdin.write(json.dumps([str(s) for s in group]).encode())
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


async def fold_in_workers(
    dsn: str, spaces: list[tuple[uuid.UUID, int]], workers: int, on_events: Callable[[int], None]
) -> Counts:
    """Run the bulk fold in worker processes; their counts added up."""
    # A TaskGroup: when one worker fails, the others are cancelled (and killed).
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_run_worker(dsn, g, on_events)) for g in plan(spaces, workers)]
    results = [t.result() for t in tasks]
    return Counts(
        events=sum(r.events for r in results),
        spaces=sum(r.spaces for r in results),
        entities=sum(r.entities for r in results),
    )


async def _worker(dsn: str, space_ids: list[uuid.UUID]) -> None:
    reader = await asyncpg.connect(dsn)
    writer = await asyncpg.connect(dsn)
    try:
        counts = await fold_into_shadow(
            reader, writer, space_ids, lambda n: print(f"p {n}", flush=True)
        )
        print(f"r {counts.events} {counts.spaces} {counts.entities}", flush=True)
    finally:
        for conn in (reader, writer):
            with contextlib.suppress(Exception):
                await conn.close()


if __name__ == "__main__":
    asyncio.run(_worker(sys.argv[1], [uuid.UUID(s) for s in json.loads(sys.stdin.read())]))
