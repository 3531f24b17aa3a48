"""A connection that fails inside the server closes 1011, never Litestar's undocumented
4500, and the failure is logged with its traceback (docs/websocket.md, close codes).

The fault is real: the gateway's own database loses the ``members`` table under it, so
the first read of the device's spaces (in ``hello``) raises.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from core.settings import Settings, with_overrides
from tests.e2e.harness import Device, ServerProcess, register, serve_gateway


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_failing_connection_closes_1011_and_logs_the_traceback(
    settings: Settings, fresh_database: Callable[..., Awaitable[str]], json_logs: io.StringIO
) -> None:
    dsn = await fresh_database()
    gw = serve_gateway(with_overrides(settings, database_url=dsn)).start()
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
        assert device.ws.close_reason == "internal error"

        (failure,) = [
            line
            # a process logs to its file; in this process, the lines json_logs catches
            for line in _json_lines(
                gw.log.read_text() if isinstance(gw, ServerProcess) else json_logs.getvalue()
            )
            if line["event"] == "websocket connection failed"
        ]
        assert failure["level"] == "error"
        assert failure["user_id"] == acct.user_id
        assert isinstance(failure["connection"], str)
        assert failure["connection"]
        assert failure["exception"].startswith("Traceback (most recent call last):")
        assert "members" in failure["exception"]
    finally:
        gw.stop()
