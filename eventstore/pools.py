"""PostgreSQL connection pools whose connections come back without a round trip.

asyncpg resets a connection on its way back to the pool with one more query
(``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): a second round trip
after every ``pool.fetch``. A catch-up reads a page of 200 events per ``pool.fetch``,
so that reset was a third of its wall time waiting on PostgreSQL. The code that uses
these pools keeps no session state on a pooled connection: no session-level advisory
lock, ``LISTEN``, ``SET`` (only ``SET LOCAL``) or cursor ``WITH HOLD``. Transactions are
still ended on release (asyncpg rolls back one left open before calling ``reset``).
A component that needs session state takes a connection of its own, as the projector's
membership lock does.
"""

from __future__ import annotations

from typing import Any

import asyncpg


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """The pool's reset: nothing to undo (see the module docstring)."""


async def open_pool(dsn: str, *, min_size: int, max_size: int, **options: Any) -> asyncpg.Pool:
    """``asyncpg.create_pool`` whose connections are released without the reset query."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, reset=_keep_session, **options
    )
    return pool
