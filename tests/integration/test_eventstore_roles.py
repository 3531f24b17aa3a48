"""The documented least-privilege role can run the store but cannot alter the log."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from eventstore.postgres import PostgresEventStore
from eventstore.roles import least_privilege_sql
from eventstore.testing import new_id, op
from tests.conftest import TEST_SECRET, Services

Factory = Callable[..., Awaitable[str]]


async def test_least_privilege_role(fresh_database: Factory, services: Services) -> None:
    dsn = await fresh_database()
    database = dsn.partition("?")[0].rpartition("/")[2]
    role = f"concord_app_{secrets.token_hex(4)}"
    owner = await asyncpg.connect(dsn)
    try:
        await owner.execute(least_privilege_sql(role, database, password="pw"))
        base, _, _ = dsn.partition("://")
        host_part = dsn.partition("@")[2]
        app_dsn = f"{base}://{role}:pw@{host_part}"
        pool = await asyncpg.create_pool(app_dsn, min_size=1, max_size=3)
        try:
            async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
                user = new_id()
                space = await store.create_space(name="lp", creator_user_id=user, personal=True)
                other = new_id()
                await store.change_member(space_id=space, user_id=other, role="editor", by=user)
                await store.change_member(space_id=space, user_id=other, role=None, by=user)
                out = await store.append(user_id=user, device_id=new_id(), ops=[op(space)])
                assert out.results[0].status == "applied"
                assert await store.verify(space) is None
            for statement in (
                "UPDATE events SET lamport = 0",
                "DELETE FROM events",
                "TRUNCATE events",
                "ALTER TABLE events DISABLE TRIGGER USER",
                "DROP TABLE events",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await pool.execute(statement)
        finally:
            await pool.close()
    finally:
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.close()
        admin = await asyncpg.connect(services.server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await admin.close()


async def test_every_table_has_grants(pool: asyncpg.Pool) -> None:
    """A migration that adds a table must give the application role its privileges."""
    from eventstore.roles import GRANTS

    tables = {
        r["tablename"]
        for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert tables - set(GRANTS) == set()


def test_the_role_sql_quotes_the_password_and_refuses_odd_names() -> None:
    with_password = least_privilege_sql("concord_app", "concord", password="it's")
    assert with_password.startswith("CREATE ROLE concord_app LOGIN PASSWORD 'it''s';\n")
    assert least_privilege_sql("concord_app", "concord").startswith(
        "CREATE ROLE concord_app LOGIN;\n"
    )
    for role, database in (("Concord", "concord"), ("concord_app", "concord; DROP TABLE x")):
        with pytest.raises(ValueError, match=r"^role and database must be plain lowercase"):
            least_privilege_sql(role, database)
