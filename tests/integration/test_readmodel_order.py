"""The read model lists entities in code-point order whatever the database's collation:
the order the gateway sorts a listing in when it folds one from the log instead
(docs/architecture.md invariant 4).

Regression: on a database whose default collation is a language one (what ``initdb``
picks from ``LANG=en_US.UTF-8``, or ICU), PostgreSQL listed ``a`` before ``B`` and
ordered ``task-1`` by its letters alone, so the read model's pages came in another order
than the log's, and a cursor from one path could skip or repeat entities on the other.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from eventstore.migrations import migrate
from projector.readmodel import list_entities
from tests.integration.test_projector_support import titled_state

#: Ids whose code-point order differs from a language collation's.
IDS = ["B", "Z", "a", "a-c", "a:b", "ab", "task-1", "task1", "task2", "é", "z"]
#: The language collations tried, in this order: (CREATE DATABASE clause, its name).
LANGUAGE = (
    ("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'", "en-US-x-icu"),
    ("LC_COLLATE 'en_US.utf8' LC_CTYPE 'en_US.utf8'", "en_US.utf8"),
)


@pytest.fixture
async def language_pool(
    pool: asyncpg.Pool, fresh_database: Callable[..., Awaitable[str]]
) -> AsyncIterator[tuple[asyncpg.Pool, str | None]]:
    """A migrated database whose default collation is a language one when the server has
    one (ICU's en-US, else libc's en_US.utf8), and the collation's name (None: the
    server has neither, and the database is the server's default)."""
    clause, chosen = "", None
    for candidate, collation in LANGUAGE:
        if await pool.fetchval("SELECT 1 FROM pg_collation WHERE collname = $1", collation):
            clause, chosen = candidate, collation
            break
    dsn = await fresh_database(migrated=False, options=f"TEMPLATE template0 {clause}")
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    language = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        yield language, chosen
    finally:
        await language.close()


async def test_entities_are_listed_in_code_point_order_under_a_language_collation(
    language_pool: tuple[asyncpg.Pool, str | None],
) -> None:
    pool, collation = language_pool
    space = str(uuid.uuid4())
    async with pool.acquire() as conn:
        if collation is not None:  # the database does order these ids otherwise
            ordered = await conn.fetchval(
                "SELECT array_agg(i ORDER BY i) FROM unnest($1::text[]) AS i", IDS
            )
            assert ordered != sorted(IDS), collation
        await conn.executemany(
            "INSERT INTO entity_states (space_id, entity_type, entity_id, state, applied_seq,"
            " has_client_events) VALUES ($1, 'task', $2, $3, 1, true)",
            [(uuid.UUID(space), i, titled_state("task", i)) for i in IDS],
        )
        columns = await conn.fetch(
            "SELECT attname, collname FROM pg_attribute JOIN pg_collation c"
            " ON c.oid = attcollation WHERE attrelid = 'entity_states'::regclass"
            " AND attname IN ('entity_type', 'entity_id')"
        )
    assert {r["attname"]: r["collname"] for r in columns} == {
        "entity_type": "C",
        "entity_id": "C",
    }
    listed: list[str] = []
    after = None
    for _ in range(len(IDS)):
        states, _, after = await list_entities(pool, space, None, False, 2, after)
        listed += [s.entity_id for s in states]
        if after is None:
            break
    assert listed == sorted(IDS)  # Python's order: the log's listing
