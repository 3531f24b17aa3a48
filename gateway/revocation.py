"""Which sessions and token generations are revoked, cheaply, on every request.

PostgreSQL (``token_revocations``) is the truth. Each gateway keeps the recent ones in
memory and re-reads the rows newer than its last look at most once per
``refresh_seconds`` (one indexed query, shared by all requests of that second). A
revocation made here is in the cache before the revoking request answers; one made by
another gateway arrives by NATS (``<prefix>.revocations``) at once, or by the re-read
within a second when NATS is down. Entries older than an access token's lifetime are
dropped: every access token they could stop has expired by then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import asyncpg
import msgspec
import structlog

from core.events import ENCODER, Revocation
from core.ports import Bus

log = structlog.get_logger("concord.gateway.revocation")

#: Re-read a little before the last revocation seen: a transaction that took its
#: timestamp earlier may commit after we looked.
_OVERLAP = timedelta(seconds=10)


_DECODER = msgspec.json.Decoder(Revocation)


class RevocationCache:
    """Revoked session ids and token generations, kept fresh within a second."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: Bus,
        subject: str,
        *,
        horizon_seconds: float,
        refresh_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self.subject = subject
        self._horizon = horizon_seconds
        self._refresh = refresh_seconds
        self._revoked: dict[str, float] = {}
        self._cursor: datetime | None = None
        self._synced_at = -1e9
        self._lock = asyncio.Lock()
        self._sub: object | None = None

    async def start(self) -> None:
        """Subscribe to broadcasts; the first check loads what is recent."""
        self._sub = await self._bus.subscribe(self.subject, self._on_broadcast)

    async def close(self) -> None:
        if self._sub is not None:
            await self._bus.unsubscribe(self._sub)
            self._sub = None

    async def is_revoked(self, *refs: str) -> bool:
        """True when any of ``refs`` is revoked (re-reading PostgreSQL if a second passed)."""
        if time.monotonic() - self._synced_at >= self._refresh:
            await self._sync()
        return any(ref in self._revoked for ref in refs)

    def learn(self, refs: Iterable[str]) -> None:
        now = time.monotonic()
        for ref in refs:
            self._revoked.setdefault(ref, now)

    async def announce(
        self, session_ids: Sequence[str] = (), token_ids: Sequence[str] = ()
    ) -> None:
        """After COMMIT: remember locally and tell the other gateways (best effort)."""
        if not session_ids and not token_ids:
            return
        self.learn([*session_ids, *token_ids])
        payload = Revocation(session_ids=list(session_ids), token_ids=list(token_ids))
        try:
            await self._bus.publish(self.subject, ENCODER.encode(payload))
        except Exception as exc:  # the re-read covers a lost broadcast
            log.warning("revocation broadcast failed", error=str(exc))

    async def _on_broadcast(self, subject: str, payload: bytes) -> None:
        try:
            message = _DECODER.decode(payload)
            self.learn([*message.session_ids, *message.token_ids])
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("malformed revocation broadcast", subject=subject)

    async def _sync(self) -> None:
        async with self._lock:
            if time.monotonic() - self._synced_at < self._refresh:
                return  # another request re-read while this one waited
            await self._read_newer()
            self._synced_at = time.monotonic()
            self._prune()

    async def _read_newer(self) -> None:
        async with self._pool.acquire() as conn:
            if self._cursor is None:
                rows = await conn.fetch(
                    "SELECT ref::text AS ref, revoked_at FROM token_revocations"
                    " WHERE revoked_at > clock_timestamp() - make_interval(secs => $1)",
                    self._horizon,
                )
            else:
                rows = await conn.fetch(
                    "SELECT ref::text AS ref, revoked_at FROM token_revocations"
                    " WHERE revoked_at > $1",
                    self._cursor - _OVERLAP,
                )
            if self._cursor is None:
                self._cursor = await conn.fetchval("SELECT clock_timestamp()")
        self.learn(row["ref"] for row in rows)
        for row in rows:
            if self._cursor is None or row["revoked_at"] > self._cursor:
                self._cursor = row["revoked_at"]

    def _prune(self) -> None:
        oldest = time.monotonic() - self._horizon
        stale = [ref for ref, seen in self._revoked.items() if seen < oldest]
        for ref in stale:
            del self._revoked[ref]
