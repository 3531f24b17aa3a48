"""Logging setup: structlog, JSON lines in production, readable lines in a terminal.

Every line with an exception carries its traceback: ``log.exception(...)`` (or
``exc_info=True``) from structlog and from stdlib loggers alike. In JSON it is the
``exception`` string (``format_exc_info``); the console renderer prints it itself.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Route stdlib and structlog records through one renderer at ``level``."""
    as_json = (not sys.stderr.isatty()) if json is None else json
    # Without format_exc_info the JSON renderer printed `"exc_info": true` and dropped
    # the traceback. It runs in the formatter, inside the logging call, so `exc_info=True`
    # still finds the exception being handled.
    rendering: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if as_json
        else [structlog.dev.ConsoleRenderer()]
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering,
        ])
    )  # fmt: skip
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
