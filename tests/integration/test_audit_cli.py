"""`concord audit export|verify|replay` as a user runs them (subprocesses, real database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from tests.conftest import TEST_SECRET

Factory = Callable[..., Awaitable[str]]


def concord(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    env["CONCORD_DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "concord", "audit", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def _space_with_history(dsn: str) -> str:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
            user = new_id()
            space = await store.create_space(name="audit", creator_user_id=user, personal=True)
            first = op(space, value="one", lamport=1)
            second = op(space, value="two", lamport=2, pred=[first["op_id"]])
            await store.append(user_id=user, device_id=new_id(), ops=[first, second])
            return space
    finally:
        await pool.close()


async def test_export_verify_replay(fresh_database: Factory) -> None:
    dsn = await fresh_database()
    space = await _space_with_history(dsn)

    exported = concord(dsn, "export", space)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3]
    assert lines[0]["kind"] == "member_added"

    verified = concord(dsn, "verify", space)
    assert verified.returncode == 0, verified.stderr
    assert "OK" in verified.stdout
    assert concord(dsn, "verify", "--all").returncode == 0

    now = json.loads(concord(dsn, "replay", space, "--entity", "task/t-1").stdout)
    before = json.loads(concord(dsn, "replay", space, "--as-of-seq", "2").stdout)
    assert json.dumps(now).count('"two"') >= 1
    assert '"two"' not in json.dumps(before)
    assert '"one"' in json.dumps(before)


async def test_verify_exits_1_on_a_tampered_log(fresh_database: Factory) -> None:
    dsn = await fresh_database()
    space = await _space_with_history(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
            await conn.execute(
                "UPDATE events SET value = '\"evil\"' WHERE space_id = $1 AND seq = 2", space
            )
            await conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
    finally:
        await conn.close()
    result = concord(dsn, "verify", space)
    assert result.returncode == 1
    assert f"BROKEN {space}: first broken seq 2" in result.stdout
    assert concord(dsn, "verify", "--all").returncode == 1


async def test_bad_input_is_one_line(fresh_database: Factory) -> None:
    dsn = await fresh_database()
    for args, fragment in (
        (("export", new_id()), "no such space"),
        (("verify", new_id()), "no such space"),
        (("verify", "not-a-space"), "no such space"),
        (("replay", new_id(), "--entity", "nope"), "--entity"),
        (("replay", new_id(), "--as-of", "yesterday"), "--as-of"),
    ):
        result = concord(dsn, *args)
        assert result.returncode == 2, result.stderr
        assert fragment in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "OK" not in result.stdout
