"""``concord lab all`` as a user runs it: against a server on this run's PostgreSQL and
NATS (``--against``), and on its own embedded default. Every scenario must PASS, and
each must have asserted that its metric moved."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest

from concord.lab import NAMES
from core.settings import Settings, with_overrides
from lab.scenarios import SCENARIOS
from tests.conftest import (
    TEST_ADMIN_TOKEN,
    Services,
    create_database,
    drop_database,
    own_prefix,
)
from tests.e2e.harness import ServerProcess

#: What each scenario must report as moved (see docs/lab.md).
METRICS = {
    "offline-replay": 'concord_ops_total{status="duplicate"}',
    "multi-device-conflict": 'concord_conflicts_total{entity_type="task",field="assignee"}',
    "auth-expiry-mid-queue": 'concord_auth_failures_total{reason="expired"}',
    "missed-reminder": 'concord_reminders_total{outcome="skipped"}',
}


@pytest.fixture(scope="module")
async def dev_server(settings: Settings, services: Services) -> AsyncIterator[ServerProcess]:
    """``concord dev`` on this run's services (a database of its own), short tokens."""
    dsn = await create_database(services.server_dsn)
    local = with_overrides(settings, database_url=dsn, nats_prefix=own_prefix(settings, "lb"))
    env = {"CONCORD_ACCESS_TOKEN_TTL": "5", "CONCORD_SCHEDULER_SWEEP_INTERVAL": "5"}
    server = ServerProcess(local, env=env, command="dev")
    try:
        await asyncio.to_thread(server.start, 120)
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        await drop_database(services.server_dsn, dsn)


async def concord_lab(*args: str, within: float) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "concord",
        "lab",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.terminate()  # the lab stops its own server on SIGTERM's KeyboardInterrupt path
        out, _ = await proc.communicate()
        raise AssertionError(f"concord lab did not finish in {within}s:\n{out.decode()}") from None
    return proc.returncode or 0, out.decode()


def check_report(code: int, out: str) -> None:
    print(out)
    assert code == 0, out
    for name, metric in METRICS.items():
        assert f"PASS {name}:" in out, f"{name} did not pass:\n{out}"
        assert f"  metric {metric} moved by +" in out, f"{name} did not check {metric}"
    assert f"{len(SCENARIOS)} passed, 0 failed" in out


@pytest.mark.timeout(600)
async def test_lab_all_against_a_server(dev_server: ServerProcess) -> None:
    code, out = await concord_lab(
        "all", "--against", dev_server.url, "--admin-token", TEST_ADMIN_TOKEN, within=540
    )
    check_report(code, out)


@pytest.mark.timeout(600)
async def test_lab_all_on_its_embedded_default() -> None:
    code, out = await concord_lab("all", within=540)
    check_report(code, out)
    assert "own server: concord dev (embedded PostgreSQL and NATS" in out


def test_the_command_names_every_scenario_in_order() -> None:
    assert tuple(SCENARIOS) == NAMES
