"""The push path shared by HTTP and the WebSocket (gateway/pushes.py): the size check,
and no log line per push unless debug is on (logging off the hot path)."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest

from core.errors import TooLarge
from core.ports import AppendOutcome
from core.wire import DEFAULT_LIMITS, OpResult
from gateway.pushes import check_size, store

DEVICE = "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c02"


class FakeStore:
    async def append(self, *, user_id: str, device_id: str, ops: Sequence[Any]) -> AppendOutcome:
        results = [
            OpResult(op_id=op["op_id"], status="applied", seq=i + 1) for i, op in enumerate(ops)
        ]
        return AppendOutcome(
            space_id="s", results=results, server_lamport=1, events=[], head=len(ops)
        )


STORE: Any = FakeStore()  # only append is called


async def _push(started: float = 0.0) -> None:
    ops = [{"op_id": f"o-{i}"} for i in range(3)]
    result = await store(
        STORE, user_id="u", device_id=DEVICE, batch_id="b", ops=ops, route="ws", started=started
    )
    assert [r.seq for r in result.results] == [1, 2, 3]


async def test_no_line_per_push_at_info(json_logs: io.StringIO) -> None:
    await _push()
    assert json_logs.getvalue() == ""


async def test_one_line_per_push_at_debug(json_logs: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    await _push(started=time.perf_counter() - 10)  # the push arrived ten seconds ago
    [line] = [json.loads(text) for text in json_logs.getvalue().splitlines()]
    assert (line["event"], line["route"], line["ops"], line["applied"]) == ("push", "ws", 3, 3)
    assert (line["device_id"], line["batch_id"], line["space_id"], line["head"]) == (
        DEVICE,
        "b",
        "s",
        3,
    )
    duration = line["duration_ms"]
    assert isinstance(duration, float)
    assert 10_000 <= duration < 10_005
    assert round(duration, 2) == duration, "to a hundredth of a millisecond"


def test_a_push_over_the_limits_is_too_large() -> None:
    limits = DEFAULT_LIMITS
    check_size(limits, [{}] * limits.max_ops_per_push, limits.max_message_bytes)
    with pytest.raises(TooLarge):
        check_size(limits, [{}] * (limits.max_ops_per_push + 1))
    with pytest.raises(TooLarge):
        check_size(limits, [{}], limits.max_message_bytes + 1)
