"""Plain records of the SDK: configuration, counters, rejected ops, the in-flight push."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field

from core.wire import Operation, PushResult


@dataclass(frozen=True)
class DeviceConfig:
    """Tunables of one device; the defaults suit an app, the lab changes some."""

    #: Most ops per push (the server's ``max_ops_per_push`` caps it too).
    batch_size: int = 200
    #: Pause after each push: pacing, so a long queue drains over a known time.
    push_interval: float = 0.0
    #: A push unanswered this long is given up: the link is cut and the ops resent.
    push_timeout: float = 30.0
    #: Reconnect backoff: ``uniform(0, min(cap, base * 2**attempt))`` seconds.
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    #: Renew this many seconds before expiry after ``auth_expiring`` (None: a quarter of
    #: the token's lifetime, between 1 and 60 seconds).
    refresh_lead: float | None = None
    #: ``concord.v1.msgpack`` instead of JSON frames.
    msgpack: bool = False
    #: SQLite ``synchronous`` pragma: FULL survives power loss, NORMAL a process kill.
    synchronous: str = "FULL"


@dataclass(frozen=True)
class RejectedOp:
    """An op the server refused for good: kept on record, never resent."""

    op: Operation
    code: str
    message: str
    rejected_at: str


@dataclass(frozen=True)
class Acknowledged:
    """An op the server stored: ``status`` is ``applied`` or ``duplicate`` (a resend of
    an op it already held), ``seq`` its place in the space's log."""

    op: Operation
    status: str
    seq: int


@dataclass
class SyncStats:
    """What the device did on the network since its file was created: stored at
    ``close()`` and read back at open (a killed process loses the counts of its
    last open)."""

    connects: int = 0
    reconnects: int = 0
    pushes: int = 0
    events: int = 0
    renewals: int = 0
    auth_ok: int = 0
    results_dropped: int = 0
    links_cut: int = 0
    #: Pushes whose results mixed stored ops with a retryable refusal (must stay 0:
    #: docs/protocol.md section 4 stores a push whole or not at all).
    mixed_pushes: int = 0
    results: dict[str, int] = field(default_factory=dict)

    def dump(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def load(cls, raw: str | None) -> SyncStats:
        """Counters stored by ``dump``; zeros for none, or for a file of another version."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError):
            return cls()

    def count(self, status: str) -> None:
        """One op result: ``applied``, ``duplicate``, ``rejected`` or a retryable code."""
        self.results[status] = self.results.get(status, 0) + 1


@dataclass
class Inflight:
    """The push awaiting its ``push_result``."""

    batch_id: str
    ops: list[Operation]
    future: asyncio.Future[PushResult]
