"""What the chaos run remembers of its users and devices: every op a device made,
every acknowledgement and rejection it was told of, every event it received. The
checker judges the server against this record."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from client import Acknowledged, ApiError, Device, HttpApi, RejectedOp
from client.session import parse_time
from core.wire import Event, Operation

PASSWORD = "chaos-password-correct-horse"


@dataclass
class User:
    """One account; ``token`` keeps an access token for the run's own HTTP calls."""

    label: str
    email: str
    user_id: str = ""
    personal_space: str = ""
    access: str = ""
    refresh: str = ""
    expires_at: float = 0.0

    async def token(self, api: HttpApi) -> str:
        if self.expires_at - time.time() < 5:
            answer = await api.refresh(self.refresh)
            self.access, self.refresh = answer.access_token, answer.refresh_token
            self.expires_at = parse_time(answer.access_expires_at)
        return self.access


@dataclass(frozen=True)
class Received:
    """One event as a device received it, and when (wall clock, for the membership
    property: the server's ``recorded_at`` is on the same host's clock)."""

    space_id: str
    seq: int
    kind: str
    at: float


@dataclass
class Sim:
    """One simulated device: its SQLite file, its open ``Device`` (None while it is
    restarting) and everything the checker needs to know of it."""

    index: int
    user: User
    path: Path
    gateway: str
    refresh_early: bool
    device: Device | None = None
    made: dict[str, Operation] = field(default_factory=dict)
    acked: dict[str, Acknowledged] = field(default_factory=dict)
    rejected: dict[str, RejectedOp] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    offline_stretches: int = 0
    renewals: int = 0
    reconnects: int = 0
    pushes: int = 0

    @property
    def name(self) -> str:
        return f"{self.user.label}-d{self.index}"

    def attach(self, device: Device) -> None:
        """Listen to a freshly opened device."""
        self.device = device
        device.on_acknowledged(self._on_ack)
        device.on_rejected(self._on_reject)
        device.on_event(self._on_event)

    def _on_ack(self, ack: Acknowledged) -> None:
        self.answers[ack.status] += 1
        self.acked[ack.op.op_id] = ack

    def _on_reject(self, rejected: RejectedOp) -> None:
        self.answers["rejected"] += 1
        self.rejected[rejected.op.op_id] = rejected

    def _on_event(self, event: Event) -> None:
        self.received.append(Received(event.space_id, event.seq, event.kind, time.time()))

    def fold_stats(self) -> None:
        """The device's network counters, over every open (``SyncStats`` persist)."""
        if self.device is not None:
            stats = self.device.stats
            self.renewals, self.reconnects, self.pushes = (
                stats.renewals,
                stats.reconnects,
                stats.pushes,
            )


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.retryable
