"""The push path shared by HTTP and the WebSocket (gateway/pushes.py): the size check,
and no log line per push unless debug is on (logging off the hot path)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import structlog

from concord.logs import configure_logging
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


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """The project's logging as JSON into a buffer, at info (restored afterwards)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", json=True)
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)
    structlog.reset_defaults()


async def _push() -> None:
    ops = [{"op_id": f"o-{i}"} for i in range(3)]
    result = await store(
        STORE, user_id="u", device_id=DEVICE, batch_id="b", ops=ops, route="ws", started=0.0
    )
    assert [r.seq for r in result.results] == [1, 2, 3]


async def test_no_line_per_push_at_info(out: io.StringIO) -> None:
    await _push()
    assert out.getvalue() == ""


async def test_one_line_per_push_at_debug(out: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    await _push()
    [line] = [json.loads(text) for text in out.getvalue().splitlines()]
    assert (line["event"], line["route"], line["ops"], line["applied"]) == ("push", "ws", 3, 3)


def test_a_push_over_the_limits_is_too_large() -> None:
    limits = DEFAULT_LIMITS
    check_size(limits, [{}] * limits.max_ops_per_push, limits.max_message_bytes)
    with pytest.raises(TooLarge):
        check_size(limits, [{}] * (limits.max_ops_per_push + 1))
    with pytest.raises(TooLarge):
        check_size(limits, [{}], limits.max_message_bytes + 1)
