"""Every error line carries its traceback (``concord.logs.configure_logging``).

The JSON renderer printed ``"exc_info": true`` and no traceback for structlog's
``log.exception``, and a bare repr of the exception for stdlib loggers.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from tests.conftest import logged


@pytest.fixture
def configured(json_logs: io.StringIO) -> Callable[[], list[dict[str, Any]]]:
    """The project's logging, as JSON (``json_logs``); the returned function reads every
    line so far, parsed."""
    return lambda: logged(json_logs)


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
