"""The gateway's resources for one running app, built in the lifespan (gateway/app.py).

Handlers reach it through the ``gw`` dependency; nothing here lives at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

import asyncpg
from litestar.datastructures import State
from litestar.di import NamedDependency

from core.natsbus import NatsBus
from core.ports import EventStore
from core.settings import Settings
from crdt import EntityState, Schema
from gateway.committed import Announcer
from gateway.limits import LoginThrottle, TokenBuckets
from gateway.options import GatewayOptions
from gateway.passwords import Passwords
from gateway.revocation import RevocationCache
from gateway.series import SeriesSampler
from gateway.sessions import Sessions
from gateway.tokens import AccessTokens


class ReadStore(EventStore, Protocol):
    """The store as the gateway uses it: the port plus ``replay_space`` (entity lists
    fold the whole space until the projector's read models land)."""

    async def replay_space(
        self, space_id: str, as_of_seq: int | None = None
    ) -> tuple[dict[tuple[str, str], EntityState], int]: ...


@dataclass(frozen=True, kw_only=True)
class Gateway:
    """Everything a request handler may need, assembled once per app."""

    settings: Settings
    options: GatewayOptions
    pool: asyncpg.Pool
    bus: NatsBus
    store: ReadStore
    schema: Schema
    access: AccessTokens
    passwords: Passwords
    revocations: RevocationCache
    sessions: Sessions
    login_throttle: LoginThrottle
    push_buckets: TokenBuckets
    #: After COMMIT: hands committed events to this gateway's feeds, hints the others.
    announcer: Announcer
    #: The last 15 minutes of this process's figures (the charts of /diagnostics).
    series: SeriesSampler


#: A handler parameter injected by name from the ``gw`` dependency.
GatewayDep: TypeAlias = NamedDependency[Gateway]


def provide_gateway(state: State) -> Gateway:
    """The ``gw`` dependency."""
    gw: Gateway = state.gateway
    return gw
