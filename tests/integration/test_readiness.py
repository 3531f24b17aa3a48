"""/healthz and /readyz against test-owned PostgreSQL and NATS that the test stops."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient

from concord.embedded import EmbeddedNats, EmbeddedPostgres
from core.settings import Settings
from gateway.app import create_app
from tests.conftest import TEST_ADMIN_TOKEN, TEST_SECRET


async def _wait_for(
    client: AsyncTestClient[Litestar], status: int, overall: str
) -> dict[str, object]:
    body: dict[str, object] = {}
    for _ in range(100):
        response = await client.get("/readyz")
        body = response.json()
        if response.status_code == status and body["status"] == overall:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never became {status} {overall}: {body}")


async def test_readyz_follows_its_dependencies(scratch_dir: Path) -> None:
    pg, nats = EmbeddedPostgres(scratch_dir), EmbeddedNats(scratch_dir)
    settings = Settings(
        database_url=await asyncio.to_thread(pg.start),
        nats_url=await asyncio.to_thread(nats.start),
        secret_key=TEST_SECRET,
        admin_token=TEST_ADMIN_TOKEN,
        data_dir=scratch_dir,
    )
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            health = (await client.get("/healthz")).json()
            assert health == {"status": "ok", "pid": os.getpid()}  # the process serving
            await _wait_for(client, 200, "ok")

            await asyncio.to_thread(nats.stop)  # NATS down: degraded, still ready
            body = await _wait_for(client, 200, "degraded")
            assert body["dependencies"] == {
                "postgres": {"status": "ok"},
                "nats": {"status": "degraded"},
            }

            await asyncio.to_thread(pg.stop)  # PostgreSQL down: not ready
            body = await _wait_for(client, 503, "down")
            assert body["dependencies"]["postgres"]["status"] == "down"  # type: ignore[index]
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await asyncio.to_thread(nats.stop)
        await asyncio.to_thread(pg.stop)
