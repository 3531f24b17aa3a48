"""The figures of one user, for the sandbox's third column (``GET /v1/sandbox/figures``).

``/v1/diagnostics`` is deployment-wide and needs the admin token; the sandbox page must
need neither. These figures are scoped to the caller: the spaces they are a member of
(the first ``MAX_SPACES``), their devices and sessions, all read from PostgreSQL (so
they are right whichever process wrote them). Counts and ids, and the heads' number,
never a value.

Conflicts are counted as ``concord_conflicts_total`` counts them (a ``set`` after which
its field has more than one head) by folding each space's log in seq order, which is
append order, with ``crdt``. The fold of a space is kept in memory and extended from its
last seq on the next call; a space over ``MAX_FOLD_EVENTS`` is not folded (``folded``
false): the sandbox is for small spaces.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

import asyncpg
import msgspec

from core.ops import op_from_event
from core.ports import EventStore
from crdt import EntityState
from eventstore import reads
from projector.readmodel import lag_of_spaces
from scheduler.queries import SpaceReminder, reminders_in_spaces

MAX_SPACES = 20
MAX_FOLD_EVENTS = 20_000
MAX_CACHED_FOLDS = 256
READ_PAGE = 1000
RECENT_REMINDERS = 20
OPEN_CONFLICTS = 50


class OpenConflict(msgspec.Struct, frozen=True, kw_only=True):
    space_id: str
    entity_type: str
    entity_id: str
    field: str
    heads: int


class UserFigures(msgspec.Struct, frozen=True, kw_only=True):
    """The caller's figures per failure mode (docs/sandbox.md, "The figures column")."""

    user_id: str
    spaces: int
    devices: int
    #: Client ops stored in the caller's spaces (each op once: replays are not stored).
    client_ops: int
    ops_by_device: dict[str, int]
    #: Server events by kind (reminder_fired, member_added...).
    server_events: dict[str, int]
    #: Sets that left their field with more than one head, per ``type.field``.
    conflicts: int
    conflicts_by_field: dict[str, int]
    #: Fields in conflict now (more than one head), the first ``OPEN_CONFLICTS``.
    open_conflicts: list[OpenConflict]
    #: Refresh-token rotations of the caller's sessions, and revoked sessions by reason.
    refreshes: int
    sessions_revoked: dict[str, int]
    reminders_by_status: dict[str, int]
    #: The latest reminders by due time, newest first.
    reminders: list[SpaceReminder]
    projector_lag_events: int
    outbox_lag_events: int
    #: False when a space was too large to fold here: conflict figures leave it out.
    folded: bool


@dataclass
class _Fold:
    """One space folded up to ``seq``: entity states and the conflicts counted so far."""

    seq: int = 0
    states: dict[tuple[str, str], EntityState] = field(default_factory=dict)
    by_field: dict[str, int] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ConflictFolds:
    """The folds of recently asked spaces, least recently used dropped first."""

    def __init__(self, capacity: int = MAX_CACHED_FOLDS) -> None:
        self.capacity = capacity
        self._folds: OrderedDict[str, _Fold] = OrderedDict()

    def _get(self, space_id: str) -> _Fold:
        fold = self._folds.pop(space_id, None) or _Fold()
        self._folds[space_id] = fold
        while len(self._folds) > self.capacity:
            self._folds.popitem(last=False)
        return fold

    async def fold(self, store: EventStore, space_id: str, head: int) -> _Fold | None:
        """The space folded up to ``head`` at least; None when it is too large."""
        if head > MAX_FOLD_EVENTS:
            return None
        fold = self._get(space_id)
        async with fold.lock:  # one reader extends a fold at a time: nothing counted twice
            while fold.seq < head:
                events = await store.read(space_id, fold.seq, READ_PAGE)
                if not events:
                    break
                for event in events:
                    op = op_from_event(event)
                    key = (op.entity_type, op.entity_id)
                    state = fold.states.get(key)
                    if state is None:
                        state = fold.states[key] = EntityState.new(*key)
                    if state.apply(op).conflicted and op.kind == "set":
                        name = f"{op.entity_type}.{op.field}"
                        fold.by_field[name] = fold.by_field.get(name, 0) + 1
                fold.seq = events[-1].seq
        return fold


def _open_conflicts(space_id: str, fold: _Fold) -> list[OpenConflict]:
    found = []
    for (entity_type, entity_id), state in fold.states.items():
        if entity_type.startswith("_"):
            continue
        for name, view in state.view().fields.items():
            if view.conflicted and view.heads is not None:
                found.append(
                    OpenConflict(
                        space_id=space_id,
                        entity_type=entity_type,
                        entity_id=entity_id,
                        field=name,
                        heads=len(view.heads),
                    )
                )
    return found


_SESSIONS = """
SELECT count(*) FILTER (WHERE r.spent_at IS NOT NULL) AS refreshes
FROM auth_sessions s JOIN refresh_tokens r USING (session_id) WHERE s.user_id = $1
"""
_REVOKED = """
SELECT coalesce(revoke_reason, '') AS reason, count(*) AS n FROM auth_sessions
WHERE user_id = $1 AND revoked_at IS NOT NULL GROUP BY 1
"""


async def user_figures(
    store: EventStore, pool: asyncpg.Pool, folds: ConflictFolds, user_id: str
) -> UserFigures:
    """The caller's figures: their spaces, devices and sessions only."""
    memberships = (await store.spaces_of(user_id))[:MAX_SPACES]
    spaces = [m.space_id for m in memberships]
    async with pool.acquire() as conn:
        events = await reads.counts(conn, spaces)
        refreshes = await conn.fetchval(_SESSIONS, user_id)
        revoked = await conn.fetch(_REVOKED, user_id)
        devices = await conn.fetchval(
            "SELECT count(*) FROM devices WHERE user_id = $1 AND revoked_at IS NULL", user_id
        )
    heads = await lag_of_spaces(pool, spaces)
    reminders_by_status, reminders = await reminders_in_spaces(pool, spaces, RECENT_REMINDERS)
    by_device: dict[str, int] = {}
    server: dict[str, int] = {}
    for row in events:
        if row["server"]:
            server[row["kind"]] = server.get(row["kind"], 0) + row["n"]
        else:
            by_device[row["device"]] = by_device.get(row["device"], 0) + row["n"]
    by_field: dict[str, int] = {}
    open_conflicts: list[OpenConflict] = []
    folded = True
    for lag in heads:
        fold = await folds.fold(store, lag.space_id, lag.head)
        if fold is None:
            folded = False
            continue
        for name, n in fold.by_field.items():
            by_field[name] = by_field.get(name, 0) + n
        open_conflicts.extend(_open_conflicts(lag.space_id, fold))
    return UserFigures(
        user_id=user_id,
        spaces=len(spaces),
        devices=devices or 0,
        client_ops=sum(by_device.values()),
        ops_by_device=by_device,
        server_events=server,
        conflicts=sum(by_field.values()),
        conflicts_by_field=by_field,
        open_conflicts=open_conflicts[:OPEN_CONFLICTS],
        refreshes=refreshes or 0,
        sessions_revoked={r["reason"]: r["n"] for r in revoked},
        reminders_by_status=reminders_by_status,
        reminders=reminders,
        projector_lag_events=sum(r.projector_lag for r in heads),
        outbox_lag_events=sum(r.outbox_lag for r in heads),
        folded=folded,
    )
