"""The outbox relay: the ONLY publisher to the log's JetStream stream (docs/architecture.md,
write path step 6).

Every append transaction inserts an ``outbox`` row naming its space's new head (same
transaction as the events, so a committed event always has one). The relay, in one
transaction per cycle, works on a whole batch of spaces at once:

1. claims outbox rows with ``FOR UPDATE SKIP LOCKED`` (several relays share the work);
2. locks the claimed spaces' ``outbox_cursors`` rows, again ``SKIP LOCKED``: a space is
   relayed by one relay at a time, so its events reach the stream in seq order;
3. reads every locked space's events ``published_seq + 1 .. claimed head`` in ONE query
   (at most ``max_events`` per space and ``max_batch`` per cycle, shared fairly);
4. publishes them all pipelined (in seq order per space on one connection), a run of
   up to ``message_events`` consecutive events of one space per message (a JSON array,
   at most ``message_bytes`` of it, or less when the server's ``max_payload`` is
   smaller, unless one event alone is larger), message id
   ``<space_id>:<first>-<last>``, replies to an inbox of its own (:class:`Acks`), and
   waits ONCE for the acks; an event alone larger than the server takes stops its
   space there, like a refused message, and the cycle reports it;
5. advances each space's cursor to the end of its acked prefix (never past a message
   that was not acked) and deletes the claimed rows that cover, one statement each;
   COMMIT. If some message was not acked, the cycle then reports the failure and the
   run loop backs off.

A crash or a NATS failure anywhere before COMMIT rolls it all back: the rows stay and
the events are published again next cycle; JetStream drops the repeats (message ids
within its duplicate window, see ``projector.stream``; a run cut otherwise the second
time is stored again and the consumers drop its repeats by seq). Nothing is lost;
nothing is skipped. When NATS is down the relay keeps polling and publishes once it is
back. (A message refused in the middle of a pipelined batch can land after its
successors, which were acked: consumers take the stream's order as a hint and read any
gap from PostgreSQL, as the projector does.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from core.natsbus import NatsBus
from eventstore.reads import wire_rows_of_ranges
from eventstore.rows import Conn, event_from_row, raw_value
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
_ADVANCE = """
UPDATE outbox_cursors AS c SET published_seq = u.seq
FROM unnest($1::uuid[], $2::bigint[]) AS u(space_id, seq)
WHERE c.space_id = u.space_id
"""
# Only rows this cycle claimed (and so holds locked): another relay's are left alone.
_DELETE = """
DELETE FROM outbox AS o USING unnest($1::uuid[], $2::bigint[]) AS u(space_id, head)
WHERE o.space_id = u.space_id AND o.head = u.head
"""

_encode = msgspec.json.encode

#: Events per log message at most: one message (one publish, one ack, one message for
#: the consumer to parse) per run instead of per event, the relay's and the projector's
#: main per-event cost when each event was a message of its own (docs/benchmarks.md).
MESSAGE_EVENTS = 100
#: JSON bytes per log message at most, unless one event alone is larger (its value is at
#: most ``max_value_bytes``, 64 KiB by default, far below NATS's 1 MiB ``max_payload``).
#: A server that takes less (its ``max_payload``, from its INFO) lowers it.
MESSAGE_BYTES = 64 * 1024
#: Bytes of ``max_payload`` left for a message's headers (its message id: under 100).
HEADER_ROOM = 1024


@dataclass(frozen=True)
class Range:
    """One space's part of a cycle: events ``after < seq <= up_to``."""

    space_id: uuid.UUID
    after: int
    up_to: int


def plan(
    cursors: Sequence[tuple[uuid.UUID, int]],
    heads: dict[uuid.UUID, list[int]],
    per_space: int,
    budget: int,
) -> list[Range]:
    """Each locked space's range for this cycle: up to its highest claimed head, at most
    ``per_space`` events, and ``budget`` events in all, shared evenly first (so a space
    with a deep backlog cannot starve the others), the rest in order."""
    wanted = [(sid, seq, min(max(heads[sid]), seq + per_space) - seq) for sid, seq in cursors]
    busy = sum(1 for *_, need in wanted if need > 0)
    share = budget // busy if busy else 0
    given = [max(0, min(need, share)) for *_, need in wanted]
    left = budget - sum(given)
    for i, (*_, need) in enumerate(wanted):
        extra = max(0, min(need - given[i], left))
        given[i] += extra
        left -= extra
    return [Range(sid, seq, seq + n) for (sid, seq, _), n in zip(wanted, given, strict=True)]


class RelayFailed(Exception):
    """Some messages of a cycle were not acked; the cursors stopped before them."""


class Relay:
    """Drains the outbox into the stream: every ``interval`` seconds while it is empty,
    every ``coalesce`` seconds while commits trickle in, at once while behind."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: NatsBus,
        names: Names,
        *,
        interval: float = 0.2,
        coalesce: float = 0.05,
        claim_rows: int = 2000,
        max_events: int = 5000,
        max_batch: int = 10_000,
        ack_timeout: float = 5.0,
        message_events: int = MESSAGE_EVENTS,
        message_bytes: int = MESSAGE_BYTES,
    ) -> None:
        self.pool = pool
        self.names = names
        self.interval = interval
        #: After a cycle that took all there was, the next waits this long, so that a
        #: steady trickle of commits goes out in runs, a cycle per ``coalesce`` rather
        #: than one per commit (each cycle is a transaction of five statements). A
        #: cycle that stopped at one of its bounds is followed at once.
        self.coalesce = coalesce
        #: Whether the last cycle stopped at one of its bounds (``claim_rows``,
        #: ``max_events`` or ``max_batch``) and so left work for the next.
        self.behind = False
        self.claim_rows = claim_rows
        self.max_events = max_events
        self.max_batch = max_batch
        self.ack_timeout = ack_timeout
        self.message_events = message_events
        self.message_bytes = message_bytes
        self.published = 0
        self.bus = bus
        self._js = JetStream(bus)
        self._acks = Acks()
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
            elif not self.behind:
                await asyncio.sleep(self.coalesce)

    async def relay_once(self) -> int:
        """One cycle; the number of events published (0: nothing to do, or NATS down).
        Raises :class:`RelayFailed` (after committing what was acked) when some message
        was not acked."""
        self.behind = False
        js, nc = self._js.get(), self.bus.connection()
        if js is None or nc is None:
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
            locked = await conn.fetch(_LOCK_CURSORS, list(heads))
            start: dict[uuid.UUID, int] = {r[0]: r[1] for r in locked}
            ranges = plan(list(start.items()), heads, self.max_events, self.max_batch)
            self.behind = len(claimed) == self.claim_rows or any(
                r.up_to < max(heads[r.space_id]) for r in ranges
            )
            todo = [r for r in ranges if r.up_to > r.after]
            rows = await read_ranges(conn, todo) if todo else []
            acked, failure = await self._publish(nc, rows)
            done = {r.space_id: acked.get(r.space_id, r.after) for r in ranges}
            moved = [(sid, seq) for sid, seq in done.items() if seq > start[sid]]
            if moved:
                await conn.execute(_ADVANCE, [m[0] for m in moved], [m[1] for m in moved])
            covered = [(sid, h) for sid, seq in done.items() for h in heads[sid] if h <= seq]
            if covered:
                await conn.execute(_DELETE, [c[0] for c in covered], [c[1] for c in covered])
        total = sum(seq - start[sid] for sid, seq in moved)
        self.published += total
        if failure is not None:
            raise RelayFailed(f"{total} of {len(rows)} events acked: {failure!r}") from failure
        return total

    async def _publish(
        self, nc: NatsClient, rows: Sequence[asyncpg.Record]
    ) -> tuple[dict[uuid.UUID, int], BaseException | None]:
        """Publish the rows in runs, in order (one connection keeps each space's order),
        wait once for every ack; each space's highest seq acked with all before it, and
        the first failure (None when every message was acked)."""
        if not rows:
            return {}, None
        runs, too_large = messages(rows, self.message_events, self.message_bytes, nc.max_payload)
        if not runs:
            return {}, too_large
        reply = await self._acks.begin(nc, len(runs))
        log_subject, msg_id = self.names.log_subject, Names.msg_id
        for i, run in enumerate(runs):
            headers = {"Nats-Msg-Id": msg_id(run.space_id, run.first, run.last)}
            await nc.publish(
                log_subject(run.space_id), run.payload, reply=f"{reply}{i}", headers=headers
            )
        await self._acks.wait(self.ack_timeout)
        acked, failure = self._acks.prefixes([(run.sid, run.last) for run in runs])
        return acked, failure or too_large


class TooLargeError(Exception):
    """An event larger alone than the NATS server takes in one message."""


def messages(
    rows: Sequence[asyncpg.Record], max_events: int, max_bytes: int, max_payload: int
) -> tuple[list[Run], TooLargeError | None]:
    """The rows as the messages a server with ``max_payload`` takes: runs of at most
    ``max_bytes`` (less when the server takes less, headers counted), each space's up
    to its first event that is larger alone (its space's stream stops before it, as
    before a message the stream refuses, and consumers read the rest from PostgreSQL);
    and the error naming the first such event."""
    limit = max_payload - HEADER_ROOM
    # runs_of's JSON may pass its bound by one byte (the brackets): ask for one less
    runs = runs_of(rows, max_events, min(max_bytes, limit - 1))
    kept: list[Run] = []
    stopped: set[uuid.UUID] = set()
    error: TooLargeError | None = None
    for run in runs:
        if run.sid in stopped:
            continue
        if len(run.payload) <= limit:
            kept.append(run)
            continue
        stopped.add(run.sid)
        if error is None:
            error = TooLargeError(
                f"event {run.first} of space {run.space_id} is {len(run.payload):,} bytes of"
                f" JSON, more than the NATS server takes in one message ({limit:,} with"
                f" {HEADER_ROOM:,} for headers, of its max_payload); raise max_payload"
            )
    return kept, error


class RefusedError(Exception):
    """JetStream did not store a message (its answer, as text)."""


class Acks:
    """The relay's own reply inbox for JetStream's acks: one subscription, and per cycle
    one status per message, instead of ``publish_async``'s future, NUID, semaphore slot
    and parsed ``PubAck`` per message (most of the relay's CPU in a profile).

    Reply subjects are ``<inbox>.<cycle>.<index>``: an ack of an earlier cycle that
    arrives late is ignored. An ack counts when it names a stored sequence and no error
    (JetStream answers a refused message with ``{"error": ...}``, and the server answers
    with an empty 503 status message when no stream listens)."""

    WAITING, ACKED, REFUSED = 0, 1, 2

    def __init__(self) -> None:
        self._nc: NatsClient | None = None
        self._inbox = ""
        self._cycle = 0
        self._status: list[int] = []
        self._left = 0
        self._errors: dict[int, bytes] = {}
        self._all = asyncio.Event()

    async def begin(self, nc: NatsClient, count: int) -> str:
        """Start a cycle of ``count`` messages; the reply prefix of its messages."""
        if self._nc is not nc:  # the first cycle (the client resubscribes on reconnects)
            self._inbox = nc.new_inbox()
            await nc.subscribe(f"{self._inbox}.>", cb=self._on_reply)
            self._nc = nc
        self._cycle += 1
        self._status = [self.WAITING] * count
        self._left = count
        self._errors = {}
        self._all.clear()
        return f"{self._inbox}.{self._cycle}."

    async def _on_reply(self, msg: Msg) -> None:
        cycle, _, index = msg.subject[len(self._inbox) + 1 :].partition(".")
        if int(cycle) != self._cycle:
            return
        i = int(index)
        if self._status[i] != self.WAITING:
            return
        data = msg.data
        if b'"seq"' in data and b'"error"' not in data:
            self._status[i] = self.ACKED
        else:
            self._status[i] = self.REFUSED
            self._errors[i] = data[:300] or f"status {msg.headers}".encode()
        self._left -= 1
        if self._left == 0:
            self._all.set()

    async def wait(self, seconds: float) -> None:
        """Until every message of the cycle is answered, or ``seconds`` have passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all.wait(), seconds)

    def prefixes(
        self, sent: Sequence[tuple[uuid.UUID, int]]
    ) -> tuple[dict[uuid.UUID, int], BaseException | None]:
        """Per space, the last seq of the run of acked messages from its first one; the
        first failure (None when every message was acked)."""
        acked: dict[uuid.UUID, int] = {}
        stopped: set[uuid.UUID] = set()
        failure: BaseException | None = None
        for i, (sid, seq) in enumerate(sent):
            if sid in stopped:
                continue
            status = self._status[i]
            if status == self.ACKED:
                acked[sid] = seq
                continue
            stopped.add(sid)
            if failure is None:
                failure = (
                    RefusedError(self._errors[i].decode(errors="replace"))
                    if status == self.REFUSED
                    else TimeoutError("no ack")
                )
        return acked, failure


@dataclass(frozen=True)
class Run:
    """One log message: the events ``first..last`` of one space, as a JSON array."""

    sid: uuid.UUID
    first: int
    last: int
    payload: bytes

    @property
    def space_id(self) -> str:
        return str(self.sid)


def runs_of(rows: Sequence[asyncpg.Record], max_events: int, max_bytes: int) -> list[Run]:
    """The rows read by :func:`read_ranges` (space after space, each in seq order) as
    messages: runs of consecutive events of one space, at most ``max_events`` events and
    ``max_bytes`` of JSON each (one byte more with the brackets), but for one event
    larger than that alone. The cut depends only on the rows and the limits (a server
    keeps its ``max_payload``), so a range published again is cut the same way (same
    ids).

    Each event is built without decoding anything: the ids come as text, ``recorded_at``
    formatted by PostgreSQL like ``core.wire.format_time``, and the stored value
    (JSON text) is embedded as it is (``msgspec.Raw``) instead of decoded and encoded
    again."""
    runs: list[Run] = []
    parts: list[bytes] = []
    size = 0
    sid: uuid.UUID | None = None
    first = last = 0

    def close() -> None:
        assert sid is not None
        runs.append(Run(sid, first, last, b"[" + b",".join(parts) + b"]"))

    for row in rows:
        event = event_from_row(row, first=1, value_of=raw_value)
        data = _encode(event)
        if parts and (
            row[0] != sid
            or event.seq != last + 1
            or len(parts) >= max_events
            or size + len(data) + 1 > max_bytes
        ):
            close()
            parts, size = [], 0
        if not parts:
            sid, first = row[0], event.seq
        parts.append(data)
        size += len(data) + 1
        last = event.seq
    if parts:
        close()
    return runs


async def read_ranges(conn: Conn, ranges: Sequence[Range]) -> list[asyncpg.Record]:
    """The events of every range in one query, space after space, each in seq order
    (rows of the space's uuid, then ``eventstore.rows.READ_COLUMNS``)."""
    return await wire_rows_of_ranges(
        conn, [r.space_id for r in ranges], [r.after for r in ranges], [r.up_to for r in ranges]
    )
