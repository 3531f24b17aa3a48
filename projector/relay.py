"""The outbox relay: the ONLY publisher to the log's JetStream stream (docs/architecture.md,
write path step 6).

Every append transaction inserts an ``outbox`` row naming its space's new head (same
transaction as the events, so a committed event always has one). The relay, in one
transaction per cycle:

1. claims outbox rows with ``FOR UPDATE SKIP LOCKED`` (several relays share the work);
2. locks the claimed spaces' ``outbox_cursors`` rows, again ``SKIP LOCKED``: a space is
   relayed by one relay at a time, so its events reach the stream in seq order;
3. publishes each space's events ``published_seq + 1 .. claimed head`` in seq order,
   message id ``<space_id>:<seq>``, and waits for every JetStream ack;
4. advances the cursor and deletes the claimed rows it covered; COMMIT.

A crash or a NATS failure anywhere before COMMIT rolls it all back: the rows stay and
the events are published again next cycle; JetStream drops the repeats (message ids
within its duplicate window, see ``projector.stream``). Nothing is lost; nothing is
skipped. When NATS is down the relay keeps polling and publishes once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict

import asyncpg
import msgspec
from nats.js import JetStreamContext

from core.natsbus import NatsBus
from core.wire import Event
from eventstore.reads import events_between
from eventstore.rows import Conn
from projector.stream import JetStream, Names, ensure_stream, honour_cancellation

log = logging.getLogger("concord.projector.relay")

_CLAIM = """
SELECT space_id, head FROM outbox ORDER BY space_id, head LIMIT $1 FOR UPDATE SKIP LOCKED
"""
# ON CONFLICT DO NOTHING: no write (and no foreign-key lock on the space) when the cursor
# exists, which is always but for spaces made before the cursor table.
_ENSURE_CURSORS = """
INSERT INTO outbox_cursors (space_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING
"""
_LOCK_CURSORS = """
SELECT space_id, published_seq FROM outbox_cursors WHERE space_id = ANY($1::uuid[])
ORDER BY space_id FOR UPDATE SKIP LOCKED
"""
_ADVANCE = "UPDATE outbox_cursors SET published_seq = $2 WHERE space_id = $1"
_DELETE = "DELETE FROM outbox WHERE space_id = $1 AND head = ANY($2::bigint[])"

_encode = msgspec.json.encode


class Relay:
    """Drains the outbox into the stream every ``interval`` seconds (at once while busy)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: NatsBus,
        names: Names,
        *,
        interval: float = 0.2,
        claim_rows: int = 500,
        max_events: int = 2000,
        ack_timeout: float = 5.0,
    ) -> None:
        self.pool = pool
        self.names = names
        self.interval = interval
        self.claim_rows = claim_rows
        self.max_events = max_events
        self.ack_timeout = ack_timeout
        self.published = 0
        self._js = JetStream(bus)
        self._stream_ready = False

    async def run(self) -> None:
        """Relay until cancelled; failures (NATS, PostgreSQL) are logged and retried."""
        delay = self.interval
        while True:
            try:
                count = await self.relay_once()
                honour_cancellation()
                delay = self.interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # transient trouble: rows stay, retry with backoff
                honour_cancellation()
                self._stream_ready = False
                log.warning("relay cycle failed (will retry): %s", exc)
                count, delay = 0, min(delay * 2, 5.0)
            if count == 0:
                await asyncio.sleep(delay)

    async def relay_once(self) -> int:
        """One cycle; the number of events published (0: nothing to do, or NATS down)."""
        js = self._js.get()
        if js is None:
            return 0
        if not self._stream_ready:
            await ensure_stream(js, self.names)
            self._stream_ready = True
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetch(_CLAIM, self.claim_rows)
            if not claimed:
                return 0
            heads: dict[uuid.UUID, list[int]] = defaultdict(list)
            for row in claimed:
                heads[row[0]].append(row[1])
            await conn.execute(_ENSURE_CURSORS, list(heads))
            total = 0
            for row in await conn.fetch(_LOCK_CURSORS, list(heads)):
                total += await self._relay_space(conn, js, row[0], row[1], heads[row[0]])
        self.published += total
        return total

    async def _relay_space(
        self, conn: Conn, js: JetStreamContext, sid: uuid.UUID, published: int, heads: list[int]
    ) -> int:
        """Publish one space from its cursor to its highest claimed head (at most
        ``max_events`` of them), advance the cursor, delete the rows it covers."""
        target = min(max(heads), published + self.max_events)
        count = 0
        if target > published:
            events = await events_between(conn, sid, published, target)
            await self._publish(js, events)
            count = len(events)
            await conn.execute(_ADVANCE, sid, target)
            published = target
        covered = [h for h in heads if h <= published]
        if covered:
            await conn.execute(_DELETE, sid, covered)
        return count

    async def _publish(self, js: JetStreamContext, events: list[Event]) -> None:
        """Publish in seq order (one connection keeps the order) and await every ack."""
        futures = []
        try:
            for event in events:
                futures.append(
                    await js.publish_async(
                        self.names.log_subject(event.space_id),
                        _encode(event),
                        headers={"Nats-Msg-Id": Names.msg_id(event.space_id, event.seq)},
                    )
                )
            await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout)
        finally:
            for future in futures:
                future.cancel()  # no-op for the acked ones; frees the stalled ones
