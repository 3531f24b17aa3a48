"""The migration runner: ordered, once each, safe when two processes start together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from eventstore.migrations import Migration, MigrationError, applied_versions, discover, migrate

Factory = Callable[..., Awaitable[str]]


def _scratch() -> list[Migration]:
    return [
        Migration(1, "one", "CREATE TABLE m_one (id int PRIMARY KEY)"),
        Migration(2, "two", "INSERT INTO m_one VALUES (1)"),
    ]


async def test_applies_in_order_once(fresh_database: Factory) -> None:
    dsn = await fresh_database(migrated=False)
    conn = await asyncpg.connect(dsn)
    try:
        assert await applied_versions(conn) == []
        assert await migrate(conn, _scratch()) == [1, 2]
        assert await migrate(conn, _scratch()) == []
        assert await conn.fetchval("SELECT count(*) FROM m_one") == 1
        assert await applied_versions(conn) == [1, 2]
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_once(fresh_database: Factory) -> None:
    dsn = await fresh_database(migrated=False)
    conns = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c, _scratch()) for c in conns))
        assert sorted(v for r in results for v in r) == [1, 2]
        assert await conns[0].fetchval("SELECT count(*) FROM m_one") == 1
    finally:
        for c in conns:
            await c.close()


async def test_edited_migration_is_refused(fresh_database: Factory) -> None:
    dsn = await fresh_database(migrated=False)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, _scratch())
        edited = [_scratch()[0], Migration(2, "two", "INSERT INTO m_one VALUES (2)")]
        with pytest.raises(MigrationError, match="edited after"):
            await migrate(conn, edited)
    finally:
        await conn.close()


async def test_failed_migration_leaves_nothing(fresh_database: Factory) -> None:
    dsn = await fresh_database(migrated=False)
    conn = await asyncpg.connect(dsn)
    try:
        broken = [*_scratch(), Migration(3, "bad", "CREATE TABLE m_two (x int); SELECT 1/0")]
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, broken)
        assert await applied_versions(conn) == [1, 2]
        assert await conn.fetchval("SELECT to_regclass('m_two')") is None
    finally:
        await conn.close()


def test_discover_rejects_bad_names(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1")
    (tmp_path / "oops.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        discover(tmp_path)


def test_discover_rejects_duplicate_versions(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0001_b.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="used twice"):
        discover(tmp_path)


def test_shipped_migrations_are_well_formed() -> None:
    versions = [m.version for m in discover()]
    assert versions == sorted(versions)


async def test_a_migrated_test_database_is_a_copy_of_the_template(
    fresh_database: Factory,
) -> None:
    """tests/conftest.py copies a migrated template instead of migrating each database:
    the copy holds every migration, and is a database of its own."""
    first, second = await fresh_database(), await fresh_database()
    assert first != second
    conns = [await asyncpg.connect(dsn) for dsn in (first, second)]
    try:
        for conn in conns:
            assert await applied_versions(conn) == [m.version for m in discover()]
            assert await migrate(conn) == []  # nothing left to apply
        await conns[0].execute("CREATE TABLE only_in_first (id int)")
        assert await conns[1].fetchval("SELECT to_regclass('only_in_first')") is None
        template = await conns[0].fetchval(
            "SELECT datname FROM pg_database WHERE datname LIKE 'concord\\_tpl\\_%' "
            "AND NOT datallowconn LIMIT 1"
        )
        assert template is not None  # nobody may connect to it: a copy needs it unused
    finally:
        for conn in conns:
            await conn.close()
