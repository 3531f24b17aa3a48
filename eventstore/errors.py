"""Driver errors translated at the adapter boundary (docs/eventstore.md, "Errors").

Only errors known to be transient become ``core.errors.Unavailable`` (retryable): a lost
or refused connection, a timeout, an operator intervention (shutdown, cancel), a
serialization failure or deadlock, exhausted server resources. Anything else is a bug or
a broken invariant and stays a non-retryable error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg

from core.errors import ConcordError, Unavailable

_TRANSIENT: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.InsufficientResourcesError,
    ConnectionError,
    OSError,
    TimeoutError,
    # A backend killed under a query can leave the driver mid-operation ("cannot switch
    # to state ...; another operation is in progress"): the connection is unusable,
    # nothing is acknowledged, and a retry is safe (duplicates are detected).
    asyncpg.InternalClientError,
)

_DRIVER: tuple[type[Exception], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, *_TRANSIENT)


def is_transient(exc: BaseException) -> bool:
    """True for database failures a client may retry after (nothing was committed)."""
    if isinstance(exc, ConcordError):
        return exc.retryable
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed", "pool is closing": the connection went away under us.
        text = str(exc)
        return "closed" in text or "closing" in text
    return False


def translate(exc: BaseException) -> ConcordError:
    """The Concord error for a driver error."""
    if isinstance(exc, ConcordError):
        return exc
    if is_transient(exc):
        return Unavailable(f"event store unavailable: {type(exc).__name__}")
    return ConcordError(f"event store error: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise driver errors raised inside the block as Concord errors."""
    try:
        yield
    except ConcordError:
        raise
    except _DRIVER as exc:
        raise translate(exc) from exc
