"""Which spaces this projector instance owns: live instances split spaces by hash.

Each instance holds a session-level advisory lock ``(CLASS_ID, token)`` on a dedicated
connection; the live instances are exactly the holders of such locks (``pg_locks``).
Sorting their tokens gives every instance its slot ``i`` of ``n``, and instance ``i``
owns the spaces whose hash is ``i`` modulo ``n``. A crashed instance's connection
closes, PostgreSQL drops its lock at once, and the others take its spaces over on their
next tick: no configuration, no lease to expire.

Ownership only divides the work. Correctness never depends on it: while instances join
or leave, two may briefly both think they own a space, and the checkpoint row lock
(``projector.apply``) still lets only one apply each event, once.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid

import asyncpg

#: Key space of the instance locks: "proj" in ASCII.
CLASS_ID = 0x70726F6A

_LIVE = """
SELECT objid::bigint FROM pg_locks
WHERE locktype = 'advisory' AND classid = $1::bigint::oid AND objsubid = 2 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY objid
"""


def space_hash(space_id: str) -> int:
    """A stable hash of a space: the first 32 bits of its UUID (random in UUID v4)."""
    return uuid.UUID(space_id).int >> 96


def owns(space_id: str, slot: int, instances: int) -> bool:
    return space_hash(space_id) % max(instances, 1) == slot


class Membership:
    """This instance's slot among the live instances (refreshed on every tick)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.token = 0
        self.slot = 0
        self.instances = 1
        self._conn: asyncpg.Connection | None = None

    async def refresh(self) -> tuple[int, int]:
        """Hold this instance's lock (again, after a lost connection); (slot, instances)."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn)
            self.token = 0
        while self.token == 0:
            token = 1 + secrets.randbelow(2**31 - 2)
            if await self._conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", CLASS_ID, token):
                self.token = token
        tokens = [row[0] for row in await self._conn.fetch(_LIVE, CLASS_ID)]
        if self.token in tokens:
            self.slot, self.instances = tokens.index(self.token), len(tokens)
        return self.slot, self.instances

    def owns(self, space_id: str) -> bool:
        return owns(space_id, self.slot, self.instances)

    async def close(self) -> None:
        """Leave: the others take this instance's spaces on their next tick."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
