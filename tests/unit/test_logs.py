"""Every error line carries its traceback (``concord.logs.configure_logging``).

The JSON renderer printed ``"exc_info": true`` and no traceback for structlog's
``log.exception``, and a bare repr of the exception for stdlib loggers.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from concord.logs import configure_logging


@pytest.fixture
def configured() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The project's logging, as JSON; its handler writes to a buffer read by the
    returned function (every line so far, parsed)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", json=True)
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    yield lines
    root.handlers[:], level = saved
    root.setLevel(level)
    structlog.reset_defaults()


def _fail() -> None:
    raise ValueError("the disk is on fire")


@pytest.mark.parametrize(
    "emit",
    [
        lambda: structlog.get_logger("concord.test").exception("it broke", space="s-1"),
        lambda: structlog.get_logger("concord.test").error("it broke", exc_info=True),
        lambda: logging.getLogger("concord.test").exception("it broke"),
        lambda: logging.getLogger("concord.test").error("it broke", exc_info=True),
    ],
    ids=["structlog-exception", "structlog-exc_info", "stdlib-exception", "stdlib-exc_info"],
)
def test_error_lines_carry_the_traceback(
    configured: Callable[[], list[dict[str, Any]]], emit: Callable[[], None]
) -> None:
    try:
        _fail()
    except ValueError:
        emit()
    (line,) = configured()
    assert line["event"] == "it broke"
    assert line["level"] == "error"
    assert "exc_info" not in line
    trace = line["exception"]
    assert trace.startswith("Traceback (most recent call last):")
    assert 'raise ValueError("the disk is on fire")' in trace
    assert trace.rstrip().endswith("ValueError: the disk is on fire")
