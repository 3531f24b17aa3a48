"""Audit tooling behind ``concord audit export|verify|replay`` (the CLI: concord/audit.py).

Everything streams through server-side cursors, so a space of any size is handled in
flat memory; each function reads one consistent snapshot (REPEATABLE READ, read only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import asyncpg
import msgspec
from rich.console import Console
from rich.progress import Progress

from core.errors import NotFound
from core.ids import canonical_id
from crdt import DEFAULT_SCHEMA, Schema
from eventstore import reads
from eventstore.errors import translated
from eventstore.rows import Conn, event_from_row

_ENCODE = msgspec.json.Encoder().encode
#: Spaces with more events than this get a progress bar when one is asked for.
PROGRESS_THRESHOLD = 10_000
#: Progress bars go to stderr: the export itself may be on stdout.
_STDERR = Console(stderr=True)


@asynccontextmanager
async def _snapshot(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    with translated():
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield conn


async def _head(conn: Conn, space_id: str) -> tuple[str, int]:
    sid = canonical_id(space_id)
    head = (
        None
        if sid is None
        else await conn.fetchval("SELECT head FROM spaces WHERE space_id = $1", sid)
    )
    if sid is None or head is None:
        raise NotFound(f"no such space: {space_id}")
    return sid, int(head)


async def export(pool: asyncpg.Pool, space_id: str, out: TextIO, progress: bool = False) -> int:
    """Write every event of the space to ``out`` as JSON lines (the wire ``Event`` form),
    in seq order; return how many. A progress bar (on stderr) for large spaces."""
    async with _snapshot(pool) as conn:
        sid, head = await _head(conn, space_id)
        show = progress and head >= PROGRESS_THRESHOLD
        with Progress(console=_STDERR, disable=not show, transient=True) as bar:
            task = bar.add_task(f"export {sid}", total=head)
            written = 0
            async for row in reads.stream(conn, sid, prefetch=5000):
                out.write(_ENCODE(event_from_row(row)).decode())
                out.write("\n")
                written += 1
                if written % 1000 == 0:
                    bar.update(task, completed=written)
    return written


@dataclass
class VerifyReport:
    """``concord audit verify``: how many spaces were checked, and the broken ones with
    the first broken seq of each."""

    checked: int = 0
    broken: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.broken


async def verify(pool: asyncpg.Pool, space_id: str) -> int | None:
    """Recompute the hash chain of one space: its first broken seq, or None when intact.
    A space that does not exist is :class:`NotFound`, as for export and replay (an
    unknown or mistyped id must never read as a verified chain)."""
    async with _snapshot(pool) as conn:
        sid, _ = await _head(conn, space_id)
        return await reads.verify(conn, sid)


async def verify_all(pool: asyncpg.Pool, progress: bool = False) -> VerifyReport:
    """Recompute the hash chain of every space (one snapshot per space)."""
    with translated():
        ids = [
            str(r["space_id"])
            for r in await pool.fetch("SELECT space_id FROM spaces ORDER BY space_id")
        ]
    report = VerifyReport()
    with Progress(console=_STDERR, disable=not progress, transient=True) as bar:
        task = bar.add_task("verify", total=len(ids))
        for sid in ids:
            async with _snapshot(pool) as conn:
                broken = await reads.verify(conn, sid)
            report.checked += 1
            if broken is not None:
                report.broken[sid] = broken
            bar.advance(task)
    return report


async def replay(
    pool: asyncpg.Pool,
    space_id: str,
    as_of_seq: int | None = None,
    as_of: datetime | None = None,
    entity: tuple[str, str] | None = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> dict[str, Any]:
    """The space (or one ``(entity_type, entity_id)``) folded from the log alone, as of a
    seq or a time (the last event recorded at or before ``as_of``; both given: the
    earlier). JSON-ready: ``{"space_id", "seq", "entities": [view, ...]}``."""
    async with _snapshot(pool) as conn:
        sid, head = await _head(conn, space_id)
        seq = head if as_of_seq is None else max(0, min(as_of_seq, head))
        if as_of is not None:
            at = await conn.fetchval(
                "SELECT coalesce(max(seq), 0) FROM events WHERE space_id = $1 "
                "AND seq <= $2 AND recorded_at <= $3",
                sid,
                seq,
                as_of,
            )
            seq = int(at)
        if entity is not None:
            one = await reads.replay_entity(conn, sid, entity[0], entity[1], seq)
            states = [] if one is None else [one]
        else:
            states = list((await reads.replay_space(conn, sid, seq)).values())
    views = [
        msgspec.to_builtins(s.view(schema.entity_types.get(s.entity_type)))
        for s in states
        if s.has_client_events
    ]
    return {"space_id": sid, "seq": seq, "entities": views}
