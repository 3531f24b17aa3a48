"""Kill the projector process (SIGKILL) at random points of a 20,000-event stream: after
each restart it resumes from its checkpoints, so no event is applied twice or skipped."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from core.settings import Settings, with_overrides
from crdt import decode_state
from eventstore.postgres import PostgresEventStore
from projector.stream import Names
from tests.conftest import TEST_SECRET, service_env
from tests.integration.test_projector_support import (
    assert_matches_replay,
    caught_up,
    checkpoint,
    counter_of,
    delete_stream,
    eventually,
    head,
    increments,
    new_space,
)

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 20_000
SPACES = 4
KILLS = 5
ROUND = 100


# Every committed checkpoint move, recorded by the database itself: a batch that was
# applied twice (or an event skipped) would show as moves that do not tile 0..head.
_AUDIT = """
CREATE TABLE checkpoint_moves (space_id uuid, old_seq bigint, new_seq bigint);
CREATE FUNCTION record_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO checkpoint_moves
    VALUES (NEW.space_id, CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.seq END, NEW.seq);
    RETURN NEW;
END $$;
CREATE TRIGGER record_move AFTER INSERT OR UPDATE ON projector_checkpoints
    FOR EACH ROW EXECUTE FUNCTION record_move();
"""


@dataclass
class Scratch:
    settings: Settings
    pool: asyncpg.Pool
    store: PostgresEventStore


@pytest.fixture
async def scratch(
    settings: Settings, fresh_database: Callable[..., Awaitable[str]]
) -> AsyncIterator[Scratch]:
    """A database of its own (with the audit trigger), so the moves are all this test's."""
    dsn = await fresh_database()
    own = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    await own.execute(_AUDIT)
    try:
        async with PostgresEventStore(own, secret_key=TEST_SECRET) as store:
            yield Scratch(with_overrides(settings, database_url=dsn), own, store)
    finally:
        await own.close()
        await delete_stream(settings.nats_url or "", Names(settings.nats_prefix))


async def _assert_moves_tile(pool: asyncpg.Pool, space: str, head: int) -> None:
    rows = await pool.fetch(
        "SELECT old_seq, new_seq FROM checkpoint_moves "
        "WHERE space_id = $1 AND old_seq IS NOT NULL ORDER BY new_seq",
        space,
    )
    reached = 0
    for old, new in rows:
        assert old == reached, f"batch ({old}, {new}] after checkpoint {reached}"
        reached = new
    assert reached == head


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """The projector process; its log goes to a file (a pipe nobody reads would fill up
    and block it)."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "concord", "projector"],
            env=service_env(settings),
            cwd=ROOT,
            stdout=sink,
            stderr=sink,
        )


async def _projected(pool: asyncpg.Pool, spaces: list[tuple[str, str]]) -> int:
    return sum([await checkpoint(pool, s) for s, _ in spaces])


async def _moved(pool: asyncpg.Pool, spaces: list[tuple[str, str]], before: int) -> bool:
    return await _projected(pool, spaces) > before


async def _sums(pool: asyncpg.Pool, space: str) -> dict[str, int]:
    """Sum of every counter's increments, straight from the log."""
    rows = await pool.fetch(
        "SELECT entity_id, sum((value::text)::bigint)::bigint FROM events "
        "WHERE space_id = $1 AND kind = 'inc' GROUP BY entity_id",
        space,
    )
    return {r[0]: r[1] for r in rows}


async def test_sigkill_at_random_points_never_applies_twice(
    scratch: Scratch, tmp_path: Path
) -> None:
    pool, store, settings = scratch.pool, scratch.store, scratch.settings
    log = tmp_path / "projector.log"
    rng = random.Random(7)
    spaces = [await new_space(store) for _ in range(SPACES)]

    async def write() -> None:
        """20,000 increments at a steady pace (~15 s), so the kills land mid-stream."""
        for _ in range(EVENTS // SPACES // ROUND):
            for space, owner in spaces:
                await increments(store, space, owner, ROUND, entities=25)
            await asyncio.sleep(0.25)

    started = time.monotonic()
    writer = asyncio.create_task(write())
    kills = 0
    proc: subprocess.Popen[bytes] | None = None
    progress: list[tuple[int, bool]] = []
    try:
        while kills < KILLS:
            before = await _projected(pool, spaces)
            proc = _start(settings, log)
            # Once it is visibly applying batches, kill it at a random moment.
            await eventually(partial(_moved, pool, spaces, before), within=30)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            progress.append((await _projected(pool, spaces), writer.done()))
        await writer
        print(f"writer done after {time.monotonic() - started:.1f} s; progress {progress}")
        proc = _start(settings, log)
        try:
            await caught_up(pool, [s for s, _ in spaces], within=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert proc.returncode == 0, log.read_text()[-2000:]
    finally:
        writer.cancel()
        if proc is not None and proc.poll() is None:  # a failure left it running
            proc.kill()
            proc.wait(timeout=10)
    # The kills hit a projector in the middle of the stream (the writer still writing).
    assert sum(not done for _, done in progress) >= 3, progress
    for space, _ in spaces:
        sums = await _sums(pool, space)
        rows = await pool.fetch(
            "SELECT entity_id, state FROM entity_states "
            "WHERE space_id = $1 AND entity_type = 'task'",
            space,
        )
        counters = {r[0]: counter_of(decode_state(bytes(r[1]))) for r in rows}
        assert counters == sums
        await _assert_moves_tile(pool, space, await head(pool, space))
    await assert_matches_replay(pool, store, [s for s, _ in spaces])
