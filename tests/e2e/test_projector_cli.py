"""`concord projector`, `... rebuild` and `... verify` as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import psutil
import pytest

from core.settings import Settings, with_overrides
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from projector.stream import Names
from tests.conftest import TEST_SECRET, service_env
from tests.integration.test_projector_support import (
    caught_up,
    delete_stream,
    increments,
    new_space,
    push,
)

ROOT = Path(__file__).resolve().parents[2]


def _concord(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "concord", *args],
        env=service_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _start_service(
    settings: Settings, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "concord", "projector"],
            env=service_env(settings) if env is None else env,
            cwd=ROOT,
            stdout=sink,
            stderr=sink,
        )


async def test_projector_rebuild_and_verify_commands(
    settings: Settings, fresh_database: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    dsn = await fresh_database()
    own = with_overrides(settings, database_url=dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    log = tmp_path / "projector.log"
    try:
        async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
            space, owner = await new_space(store)
            await increments(store, space, owner, 300)
            title = op(space, entity_id="t-1", field="title", value="x", lamport=10_000)
            await push(store, owner, new_id(), [title])
            service = _start_service(own, log)
            try:
                await caught_up(pool, [space], within=60)
            finally:
                service.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(service.wait, 30) == 0, log.read_text()
        verified = await asyncio.to_thread(_concord, own, "projector", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "0 entities differ" in verified.stdout
        await pool.execute("UPDATE entity_states SET title = 'forged' WHERE entity_id = 't-1'")
        broken = await asyncio.to_thread(_concord, own, "projector", "verify")
        assert broken.returncode == 1
        assert f"{space} task t-1: columns" in broken.stdout
        rebuilt = await asyncio.to_thread(_concord, own, "projector", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "rebuilt 302 events of 1 spaces" in rebuilt.stdout
        final = await asyncio.to_thread(_concord, own, "projector", "verify")
        assert final.returncode == 0, final.stdout
    finally:
        await pool.close()
        await delete_stream(settings.nats_url or "", Names(settings.nats_prefix))


@pytest.mark.parametrize(("setting", "added"), [(None, 10), ("3", 3), ("0", 0)])
async def test_the_projector_lowers_its_cpu_priority(
    settings: Settings, tmp_path: Path, setting: str | None, added: int
) -> None:
    """``CONCORD_PROJECTOR_NICE`` (default 10) is added to the niceness the projector was
    started with, and its ready line says the result."""
    log = tmp_path / "projector.log"
    env = service_env(settings)
    del env["CONCORD_PROJECTOR_NICE"]  # the suite's own setting (0)
    if setting is not None:
        env["CONCORD_PROJECTOR_NICE"] = setting
    service = _start_service(settings, log, env)
    expected = min(19, os.nice(0) + added)
    try:
        deadline = time.monotonic() + 60
        while "concord projector: running" not in log.read_text():
            assert service.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        assert psutil.Process(service.pid).nice() == expected
        assert f"concord projector: running (relay + projector, nice {expected})" in log.read_text()
    finally:
        service.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.wait, 30) == 0, log.read_text()
