"""Rebuild the read model from the log while the live one keeps serving.

1. **Bulk**: in one REPEATABLE READ snapshot, one ordered scan folds every space from
   seq 1 to its head into shadow tables (``entity_states_rebuild``,
   ``projector_checkpoints_rebuild``, ``projector_quarantine_rebuild``), written with
   COPY in the background. Every event is tried again, quarantined ones included.
2. **Catch up**: the shadow is brought towards the live heads with the live projector's
   own batch code, until little is left.
3. **Swap**: one transaction locks the live tables (checkpoints first, the order every
   writer uses, so it cannot deadlock), applies the last few events to the shadow,
   renames the shadow tables into place (the shadow's quarantine replaces the live one:
   what still cannot be applied is in it again) and drops the old ones. Readers and the live
   projector wait for that short moment, then carry on against the new tables
   (PostgreSQL looks a renamed name up again once it gets the lock).

Appends never touch these tables, so writes go on throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from eventstore.rows import Conn
from projector.apply import apply_space
from projector.bulk import fold_here, fold_in_workers
from projector.tables import LIVE, SHADOW, Tables

#: progress(phase, done, total): phases "rebuild" then "catch-up".
Progress = Callable[[str, int, int], None]

#: One rebuild at a time: a session advisory lock, in a key space of its own ("rbld"), so
#: that projector instances (``membership``, key space "proj") never count it as one of theirs.
REBUILD_LOCK = (0x72626C64, 0)
_SPACES = "SELECT space_id, head FROM spaces WHERE head > 0"
_SHADOW_LAGGING = f"""
SELECT s.space_id::text, s.head FROM spaces AS s
LEFT JOIN {SHADOW.checkpoints} AS c USING (space_id) WHERE s.head > coalesce(c.seq, 0)
"""
# Privileges granted on a live table (to the application role, say): LIKE does not copy
# them, so the swap grants them again on the table that takes its place.
_GRANTS = """
SELECT grantee, string_agg(privilege_type, ', ') FROM information_schema.role_table_grants
WHERE table_schema = current_schema() AND table_name = $1
  AND grantee <> (SELECT tableowner FROM pg_tables
                  WHERE schemaname = current_schema() AND tablename = $1)
GROUP BY grantee
"""
_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = $1::regclass
"""


class RebuildError(Exception):
    """The rebuild cannot start or finish (the live read model is untouched)."""


@dataclass
class RebuildReport:
    events: int = 0
    spaces: int = 0
    entities: int = 0
    bulk_seconds: float = 0.0
    catch_up_events: int = 0
    swap_wait_seconds: float = 0.0  # waiting for the lock (readers queue meanwhile)
    swap_seconds: float = 0.0  # holding it
    total_seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Bulk rebuild rate, events per second."""
        return self.events / self.bulk_seconds if self.bulk_seconds else 0.0


_DROP_SHADOW = f"DROP TABLE IF EXISTS {', '.join(SHADOW.each())}"


async def prepare_shadow(conn: Conn) -> None:
    """Fresh, empty shadow tables shaped exactly like the live ones (LIKE ... ALL)."""
    await conn.execute(_DROP_SHADOW)
    for live, shadow in zip(LIVE.each(), SHADOW.each(), strict=True):
        await conn.execute(f"CREATE TABLE {shadow} (LIKE {live} INCLUDING ALL)")


async def bulk_load(
    pool: asyncpg.Pool,
    report: RebuildReport,
    progress: Progress,
    *,
    dsn: str | None = None,
    workers: int = 1,
) -> None:
    """Fold the whole log into the shadow tables: here, or in ``workers`` processes."""
    started = time.perf_counter()
    spaces = [(r[0], r[1]) for r in await pool.fetch(_SPACES)]
    total, done = sum(head for _, head in spaces), 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress("rebuild", done, total)

    progress("rebuild", 0, total)
    if workers > 1 and dsn is not None and len(spaces) > 1:
        counts = await fold_in_workers(pool, dsn, spaces, workers, advance)
    else:
        counts = await fold_here(pool, None, advance)
    report.events, report.spaces, report.entities = counts.events, counts.spaces, counts.entities
    report.bulk_seconds = time.perf_counter() - started


async def catch_up(conn: Conn, tables: Tables = SHADOW, query: str = _SHADOW_LAGGING) -> int:
    """Apply every space of ``tables`` up to the current heads; the events applied."""
    applied = 0
    for space_id, head in await conn.fetch(query):
        while True:
            batch = await apply_space(conn, space_id, tables=tables, up_to=head)
            if batch is None:
                break
            applied += batch.count
            if batch.seq >= head:
                break
    return applied


async def _index_renames(conn: Conn) -> list[str]:
    """ALTER INDEX statements giving the shadow's indexes the live ones' names (matched
    by definition), to run once the live tables are gone."""

    def shape(row: asyncpg.Record) -> tuple[bool, str]:
        return bool(row[2]), str(row[1]).split(" USING ", 1)[1]

    statements = []
    for live, shadow in zip(LIVE.each(), SHADOW.each(), strict=True):
        fresh = {shape(r): r[0] for r in await conn.fetch(_INDEXES, shadow)}
        for row in await conn.fetch(_INDEXES, live):
            current = fresh.get(shape(row))
            if current is not None and current != row[0]:
                statements.append(f'ALTER INDEX "{current}" RENAME TO "{row[0]}"')
    return statements


async def _swap_script(conn: Conn) -> str:
    """The swap's DDL as one script (one round trip while the tables are locked)."""
    script = []
    for live, shadow in zip(LIVE.each(), SHADOW.each(), strict=True):
        script.append(f"ALTER TABLE {live} RENAME TO {live}_old")
        script.append(f"ALTER TABLE {shadow} RENAME TO {live}")
    # No CASCADE: should anything depend on the old tables (a view, a foreign key), the
    # swap fails and rolls back rather than silently dropping it.
    script.append(f"DROP TABLE {', '.join(f'{live}_old' for live in LIVE.each())}")
    script += await _index_renames(conn)
    for table in LIVE.each():
        for grantee, privileges in await conn.fetch(_GRANTS, table):
            who = "PUBLIC" if grantee == "PUBLIC" else f'"{grantee}"'
            script.append(f"GRANT {privileges} ON {table} TO {who}")
    return ";\n".join(script)


async def swap(conn: Conn, report: RebuildReport, lock_timeout_ms: int = 1000) -> None:
    """Finish the shadow and put it in place, in one transaction. Readers queue behind
    the lock request, so it gives up after ``lock_timeout_ms`` (the caller retries)."""
    script = await _swap_script(conn)
    started = time.perf_counter()
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        # Checkpoints first: the order of every writer's locks (apply.py), so no deadlock.
        await conn.execute(f"LOCK TABLE {', '.join(LIVE.each())} IN ACCESS EXCLUSIVE MODE")
        locked = time.perf_counter()
        report.catch_up_events += await catch_up(conn)
        await conn.execute(script)
    report.swap_wait_seconds += locked - started
    report.swap_seconds = time.perf_counter() - locked


async def rebuild(
    pool: asyncpg.Pool,
    *,
    progress: Progress | None = None,
    dsn: str | None = None,
    workers: int = 1,
    max_lag_before_swap: int = 200,
    swap_attempts: int = 10,
) -> RebuildReport:
    """Rebuild the read model from seq 1 into shadow tables, then swap them in.
    ``workers > 1`` (with the ``dsn`` they connect to) folds in that many processes."""
    report = RebuildReport()
    started = time.perf_counter()
    show = progress or (lambda phase, done, total: None)
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *REBUILD_LOCK):
            raise RebuildError("another rebuild is running")
        try:
            await prepare_shadow(conn)
            await bulk_load(pool, report, show, dsn=dsn, workers=workers)
            for _ in range(20):  # writers keep appending: close in until the gap is small
                caught = await catch_up(conn)
                report.catch_up_events += caught
                show("catch-up", report.catch_up_events, report.catch_up_events)
                if caught <= max_lag_before_swap:
                    break
            await _swap_with_retries(conn, report, swap_attempts)
        finally:
            await conn.execute(_DROP_SHADOW)
            await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", *REBUILD_LOCK)
    report.total_seconds = time.perf_counter() - started
    return report


async def _swap_with_retries(conn: Conn, report: RebuildReport, attempts: int) -> None:
    for attempt in range(attempts):
        try:
            await swap(conn, report)
            return
        except asyncpg.LockNotAvailableError as exc:
            if attempt == attempts - 1:
                raise RebuildError(f"could not lock the live read model: {exc}") from exc
            report.catch_up_events += await catch_up(conn)
