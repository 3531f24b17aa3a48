"""The published ``max_value_bytes`` is enforced (it used to be published only): a value
whose JSON is longer is ``too_large`` for that op alone, over HTTP and WebSocket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.settings import Settings
from core.wire import DEFAULT_LIMITS
from tests.e2e.harness import Device, ServerProcess, http, op, register

LIMIT = DEFAULT_LIMITS.max_value_bytes


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[ServerProcess]:
    process = ServerProcess(settings).start()
    yield process
    process.stop()


async def test_a_value_over_max_value_bytes_is_too_large(server: ServerProcess) -> None:
    acct = await register(server.url)
    # list_id and assignee have no length limit of their own: only max_value_bytes.
    big = op(acct.space_id, "t-big", "list_id", "x" * (LIMIT + 1), lamport=1)
    fits = op(acct.space_id, "t-fits", "list_id", "x" * (LIMIT - 2), lamport=1)  # + quotes
    mv = op(acct.space_id, "t-mv", "assignee", "y" * (LIMIT * 2), lamport=1)
    r = await http(
        server.url,
        "POST",
        "/v1/sync/push",
        acct.access_token,
        json={"batch_id": "sizes", "ops": [big, fits, mv]},
    )
    assert r.status_code == 200, r.text
    codes = [x.get("error", {}).get("code", x["status"]) for x in r.json()["results"]]
    assert codes == ["too_large", "applied", "too_large"]
    device = await Device.connect(server.ws_url, acct.access_token)
    again = op(acct.space_id, "t-big-ws", "list_id", "z" * (LIMIT + 10), lamport=2)
    [result] = (await device.push([again]))["results"]
    assert (result["status"], result["error"]["code"]) == ("rejected", "too_large")
    assert result["error"]["retryable"] is False
    await device.close()
