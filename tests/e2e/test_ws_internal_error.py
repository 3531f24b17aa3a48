"""A connection that fails inside the server closes 1011, never Litestar's undocumented
4500, and the failure is logged with its traceback (docs/websocket.md, close codes).

The fault is real: the gateway's own database loses the ``members`` table under it, so
the first read of the device's spaces (in ``hello``) raises.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from core.settings import Settings, with_overrides
from tests.e2e.harness import Device, ServerProcess, register


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_failing_connection_closes_1011_and_logs_the_traceback(
    settings: Settings, fresh_database: Callable[..., Awaitable[str]]
) -> None:
    dsn = await fresh_database()
    gw = ServerProcess(with_overrides(settings, database_url=dsn)).start()
    try:
        acct = await register(gw.url)
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute("ALTER TABLE members RENAME TO members_gone")
        finally:
            await admin.close()

        device = await Device.connect(gw.ws_url, hello=False)
        await device.send({"type": "hello", "token": acct.access_token, "subscriptions": []})
        assert await device.close_code() == 1011

        (failure,) = [
            line
            for line in _json_lines(gw.log.read_text())
            if line["event"] == "websocket connection failed"
        ]
        assert failure["level"] == "error"
        assert failure["exception"].startswith("Traceback (most recent call last):")
        assert "members" in failure["exception"]
    finally:
        gw.stop()
