"""The pools of ``eventstore.pools``: a connection comes back to the pool without the
reset query (one round trip less per pooled query), and a transaction left open is
still ended."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from eventstore.pools import open_pool


async def test_a_released_connection_keeps_its_session_and_costs_no_reset_query(
    database_url: str,
) -> None:
    pool = await open_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SET application_name = 'kept-by-the-pool'")
        async with pool.acquire() as conn:
            # The same backend, its session as left: no RESET ALL ran on release.
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert await conn.fetchval("SHOW application_name") == "kept-by-the-pool"
            await conn.execute("RESET application_name")
    finally:
        await pool.close()


async def test_a_transaction_left_open_is_rolled_back_on_release(database_url: str) -> None:
    pool = await open_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS left_open (n int)")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO left_open VALUES (1)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM left_open") == 0
    finally:
        await pool.close()


#: What would outlive a release without the reset query: session-level advisory locks,
#: LISTEN, a SET that is not SET LOCAL, a cursor WITH HOLD.
_SESSION_STATE = re.compile(
    r"pg_advisory_lock\(|pg_try_advisory_lock\(|\bLISTEN\b|(\A|;)\s*SET\s+(?!LOCAL\b)|WITH\s+HOLD",
    re.IGNORECASE,
)


def test_no_sql_of_the_gateway_or_the_store_leaves_session_state() -> None:
    """The code that runs on the gateway's pool (``gateway/``, ``eventstore/``) writes no
    SQL that leaves session state behind (docstrings aside)."""
    root = Path(__file__).resolve().parents[2]
    found = []
    for package in ("gateway", "eventstore"):
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            prose = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                )
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in prose
                    and _SESSION_STATE.search(node.value)
                ):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []
    assert _SESSION_STATE.search("SELECT pg_try_advisory_lock($1, $2)")
    assert _SESSION_STATE.search("SET statement_timeout = 0")
    assert not _SESSION_STATE.search("SET LOCAL lock_timeout = '1s'")
    assert _SESSION_STATE.search("SELECT 1; SET search_path = x")
    assert not _SESSION_STATE.search("UPDATE spaces\nSET head = $1")
