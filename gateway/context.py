"""The gateway's resources for one running app, and how handlers get them.

The lifespan (gateway/app.py) builds and owns every resource and keeps them in one
``Resources``, kept in the app's state. ``providers()`` gives Litestar one dependency
per resource, named as its field and registered once, at app level; each provider reads
its resource from the app's state. A handler (or a dependency such as ``principal``)
declares the resources it uses as parameters of those names, typed ``Resource[...]``
(``store: Resource[ReadStore]``), and is given nothing else. Nothing here lives at
module level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol, TypeAlias, TypeVar

import asyncpg
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from core.natsbus import NatsBus
from core.ports import EventStore
from core.settings import Settings
from core.wire import Limits
from crdt import EntityState, Schema
from gateway.limits import LoginThrottle, TokenBuckets
from gateway.revocation import RevocationCache
from gateway.series import SeriesSampler
from gateway.sessions import Sessions
from gateway.tokens import AccessTokens
from gateway.ws.registry import Registry

T = TypeVar("T")

#: A parameter injected by name with the resource of that name. The lifespan built it,
#: so Litestar does not check it on every request (a Protocol such as ``ReadStore``
#: could not be checked at all).
Resource: TypeAlias = NamedDependency[SkipValidation[T]]


class ReadStore(EventStore, Protocol):
    """The store as the gateway uses it: the port plus ``replay_space`` (an entity list
    folds the whole space when the projector's read model lags behind its head)."""

    async def replay_space(
        self, space_id: str, as_of_seq: int | None = None
    ) -> tuple[dict[tuple[str, str], EntityState], int]: ...


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What handlers may ask for, by field name; built once per app by the lifespan,
    which also closes it. What only goes into building these (the password hasher, the
    announcer, the options) is not here."""

    settings: Settings
    #: The published limits (``GatewayOptions.limits``).
    limits: Limits
    pool: asyncpg.Pool
    bus: NatsBus
    store: ReadStore
    schema: Schema
    access: AccessTokens
    revocations: RevocationCache
    sessions: Sessions
    login_throttle: LoginThrottle
    push_buckets: TokenBuckets
    #: The last 15 minutes of this process's figures (the charts of /diagnostics).
    series: SeriesSampler
    #: The WebSocket connections of this process and their feeds (gateway/ws/).
    registry: Registry


def providers() -> dict[str, Provide]:
    """The app-level dependencies: one per field of ``Resources``."""
    return {f.name: Provide(_reader(f.name), sync_to_thread=False) for f in fields(Resources)}


def _reader(name: str) -> Callable[[State], object]:
    def provide(state: State) -> object:
        return getattr(state.resources, name)

    provide.__name__ = provide.__qualname__ = f"provide_{name}"
    return provide
