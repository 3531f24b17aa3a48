"""How far the read model and the relay are behind the log: ``lag_totals``,
``lag_by_space`` and ``lag_of_spaces`` on a database of its own, where no projector or
relay moves anything, so every figure is known exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from projector.readmodel import lag_by_space, lag_of_spaces, lag_totals
from tests.conftest import TEST_SECRET


@pytest.fixture
async def still(fresh_database: Callable[..., Awaitable[str]]) -> AsyncIterator[asyncpg.Pool]:
    """A pool on an empty, migrated database that no projector or relay works on."""
    dsn = await fresh_database()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def test_lag_counts_every_event_not_yet_projected_or_relayed(still: asyncpg.Pool) -> None:
    assert await lag_totals(still) == (0, 0)
    assert await lag_by_space(still) == []
    owner = new_id()
    async with PostgresEventStore(still, secret_key=TEST_SECRET) as store:
        one = await store.create_space(name="one", creator_user_id=owner, personal=True)
        two = await store.create_space(name="two", creator_user_id=owner, personal=False)
        ops = [op(one, entity_id=f"t-{i}", lamport=i + 1) for i in range(3)]
        out = await store.append(user_id=owner, device_id=new_id(), ops=ops)
    assert [r.status for r in out.results] == ["applied"] * 3
    # Heads 4 and 1, nothing projected or relayed yet.
    assert await lag_totals(still) == (5, 5)
    lags = {x.space_id: (x.head, x.projector_lag, x.outbox_lag) for x in await lag_by_space(still)}
    assert lags == {one: (4, 4, 4), two: (1, 1, 1)}
    # The projector reaches the head of ``one``; the relay publishes up to seq 1 of both.
    await _project(still, one, 4)
    await _relay(still, one, 1)
    await _relay(still, two, 1)
    assert await lag_totals(still) == (1, 3)
    [worst, other] = await lag_by_space(still)
    assert (worst.space_id, worst.projector_lag, worst.outbox_lag) == (one, 0, 3)
    assert (other.space_id, other.projector_lag, other.outbox_lag) == (two, 1, 0)
    # The sandbox's figures: the lag of the spaces asked for, behind or not.
    [of_two] = await lag_of_spaces(still, [two])
    assert (of_two.space_id, of_two.head, of_two.projector_lag, of_two.outbox_lag) == (two, 1, 1, 0)
    await _project(still, two, 1)
    await _relay(still, one, 4)
    assert await lag_totals(still) == (0, 0)
    assert await lag_by_space(still) == []
    lags = {
        x.space_id: (x.head, x.projector_lag, x.outbox_lag)
        for x in await lag_of_spaces(still, [one, two, new_id()])
    }
    assert lags == {one: (4, 0, 0), two: (1, 0, 0)}


async def _project(pool: asyncpg.Pool, space: str, seq: int) -> None:
    """What the projector records once it has applied ``space`` up to ``seq``."""
    await pool.execute(
        "INSERT INTO projector_checkpoints (space_id, seq) VALUES ($1, $2) "
        "ON CONFLICT (space_id) DO UPDATE SET seq = excluded.seq",
        space,
        seq,
    )


async def _relay(pool: asyncpg.Pool, space: str, seq: int) -> None:
    """What the relay records once it has published ``space`` up to ``seq``."""
    await pool.execute(
        "INSERT INTO outbox_cursors (space_id, published_seq) VALUES ($1, $2) "
        "ON CONFLICT (space_id) DO UPDATE SET published_seq = excluded.published_seq",
        space,
        seq,
    )
