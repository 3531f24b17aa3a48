"""The JetStream stream of the log: its config, over the names of the NATS contract.

Every subject, the stream name and the consumer names are ``core.events.Names`` of
``settings.nats_prefix``, so that deployments (and test runs) sharing one NATS server
never see each other.

| what | name |
| --- | --- |
| stream | ``<prefix>_LOG`` |
| subjects | ``<prefix>.log.<space_id>``: ``list[wire.Event]``, id ``<space>:<first>-<last>`` |
| projector consumer | durable ``projector_<slot>`` (one per instance slot, see docs/projector.md) |
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from core.events import Names as Names  # re-exported: the projector's callers name it here
from core.natsbus import NatsBus
from core.wire import Event

log = logging.getLogger("concord.projector")

#: JetStream drops a message whose id it stored within this window. The relay can publish
#: an event twice only when it crashed (or lost NATS) after publishing and before
#: advancing its cursor: republished within this window, the same run of events has the
#: same id and leaves no repeat in the stream. A longer outage, or a run cut otherwise
#: the second time (more events committed meanwhile), may; consumers then drop the
#: repeats by seq (the checkpoint). The server keeps every id of the window in memory:
#: about 100 bytes x message rate x window.
DUPLICATE_WINDOW_S = 10 * 60.0
#: The stream is a fast path only (PostgreSQL is the log), so it keeps one day.
MAX_AGE_S = 24 * 3600.0
#: A projector slot's durable consumer disappears after an hour without a fetch.
CONSUMER_INACTIVE_S = 3600.0


_decode_run = msgspec.json.Decoder(list[Event]).decode
_decode_one = msgspec.json.Decoder(Event).decode


def decode_log_message(data: bytes) -> list[Event]:
    """The events of a log message: a JSON array of consecutive events of one space (as
    the relay publishes them), or one event object (as relays before 2026-12-06 did; a
    stream keeps a day of messages). Raises ``msgspec.DecodeError`` on anything else."""
    if data[:1] == b"[":
        return _decode_run(data)
    return [_decode_one(data)]


def stream_config(names: Names, *, duplicate_window: float = DUPLICATE_WINDOW_S) -> StreamConfig:
    return StreamConfig(
        name=names.stream,
        subjects=[names.log_wildcard],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=MAX_AGE_S,
        max_bytes=names.stream_max_bytes,
        duplicate_window=duplicate_window,
    )


def consumer_config(names: Names, slot: int) -> ConsumerConfig:
    """A slot's durable pull consumer. A new one starts at new messages: whatever was
    published before is read from PostgreSQL by the projector's catch-up at start."""
    return ConsumerConfig(
        durable_name=names.durable(slot),
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.ALL,
        ack_wait=30.0,
        max_ack_pending=50_000,
        inactive_threshold=CONSUMER_INACTIVE_S,
        filter_subject=names.log_wildcard,
    )


async def ensure_stream(js: JetStreamContext, names: Names) -> None:
    """Create the stream, or bring an existing one's config up to date."""
    config = stream_config(names)
    try:
        await js.stream_info(names.stream)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
            log.info("created JetStream stream %s", names.stream)
            return
        except nats.js.errors.BadRequestError:  # created concurrently by a twin
            pass
    await js.update_stream(config)


class JetStream:
    """The JetStream context of a ``NatsBus``, made once: each context owns reply
    subscriptions (``publish_async``), so one must not be made per call."""

    def __init__(self, bus: NatsBus) -> None:
        self.bus = bus
        self._js: JetStreamContext | None = None

    def get(self) -> JetStreamContext | None:
        """The context, or None while NATS is not connected."""
        if not self.bus.connected:
            return None
        if self._js is None:
            self._js = self.bus.jetstream()
        return self._js


def honour_cancellation() -> None:
    """Raise CancelledError if this task was cancelled. A cancellation can be swallowed
    on its way: nats-py turns some into timeouts or its own errors, and Python 3.11's
    ``asyncio.wait_for`` drops one that races with the awaited result. A loop that
    carries on after that would never stop, so every service loop checks here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
