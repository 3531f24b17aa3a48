"""One group-commit transaction: several pushes (any spaces) checked and stored together.

The transaction behaves exactly as if its pushes ran one after another in queue order:
each push sees the ops stored by the pushes before it (for ``pred``, duplicates and the
lamport headroom), seqs are handed out in that order, and either every push's valid ops
commit or none do. Per push, PROTOCOL section 2's order of checks holds: the caller's
role under the space lock (``not_found`` / ``forbidden`` for every op), then each op's
validity (type, device, ``crdt.validate``), then idempotency.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from core.ops import ParsedOp
from core.ports import AppendOutcome
from core.wire import Event, OpResult
from crdt import (
    EntityState,
    Op,
    PredTarget,
    Schema,
    Target,
    Violation,
    check_lamport_headroom,
    check_preds,
)
from crdt.validate import is_canonical_uuid
from eventstore.push import Checked, Item, Push, refuse_all, rejected
from eventstore.rows import Conn, decode_value
from eventstore.writer import Batch, SpaceCursor, lock_spaces

FaultHook = Callable[[Conn], Awaitable[None]]

_ROLES = """
SELECT m.space_id, m.user_id, m.role
FROM unnest($1::uuid[], $2::uuid[]) AS k(space_id, user_id)
JOIN members m ON m.space_id = k.space_id AND m.user_id = k.user_id
"""

# Idempotency and pred targets in one round trip: every stored event of the group's
# spaces named by an op_id or a pred entry of the group.
_LOOKUP = """
SELECT e.space_id, e.op_id, e.seq, e.entity_type, e.entity_id, e.kind, e.field, e.value,
       e.lamport, e.payload_hash
FROM (SELECT DISTINCT * FROM unnest($1::uuid[], $2::uuid[])) AS k(space_id, op_id)
JOIN events e ON e.space_id = k.space_id AND e.op_id = k.op_id
"""

# The stored sets of every field a pushed set touches: enough to know the field's heads,
# so that concord_conflicts_total counts a set after which its field has several.
_FIELD_SETS = """
SELECT e.space_id, e.entity_type, e.entity_id, e.field, e.op_id, e.pred, e.lamport
FROM (SELECT DISTINCT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]))
    AS k(space_id, entity_type, entity_id, field)
JOIN events e ON e.space_id = k.space_id AND e.entity_type = k.entity_type
    AND e.entity_id = k.entity_id AND e.field = k.field AND e.kind = 'set'
ORDER BY e.space_id, e.seq
"""


@dataclass
class SpaceView:
    """What the transaction knows of one locked space's stored ops."""

    targets: dict[str, Target] = field(default_factory=dict)
    stored: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # seq, payload hash
    #: op_ids not looked up (see _probe_keys).
    skipped: set[str] = field(default_factory=set)


class _ProbeAgain(Exception):
    """A check relied on an op_id that was not looked up: rerun with every key."""


@dataclass
class GroupResult:
    outcomes: list[AppendOutcome]
    conflicts: list[tuple[str, str]]


def _ops_of(pushes: Sequence[Push]) -> list[ParsedOp]:
    return [c.parsed for push in pushes for c in push.items if isinstance(c, Checked)]


async def _load_roles(
    conn: Conn, pushes: Sequence[Push], cursors: dict[str, SpaceCursor]
) -> dict[tuple[str, str], str]:
    """Current roles of the pushers, read after the space locks are held."""
    pairs = {
        (p.space_id, p.user_id)
        for p in pushes
        if p.space_id in cursors and is_canonical_uuid(p.user_id)
    }
    if not pairs:
        return {}
    rows = await conn.fetch(_ROLES, [s for s, _ in pairs], [u for _, u in pairs])
    return {(str(r["space_id"]), str(r["user_id"])): r["role"] for r in rows}


def _probe_keys(
    ops: Sequence[ParsedOp],
    cursors: dict[str, SpaceCursor],
    views: dict[str, SpaceView],
    probe_all: bool,
) -> set[tuple[str, str]]:
    """The (space, op_id)s to look up: the group's op_ids and pred entries.

    Unless ``probe_all``, an op_id whose lamport is above its space's highest stored
    lamport is not looked up: no stored event has that payload, so it can only be new
    or an op_id reused with another payload. The latter is caught afterwards: storing it
    violates UNIQUE (space_id, op_id), and a pred check failing on such an op_id is
    retried; either way the group reruns with ``probe_all`` (see run_group).
    """
    keys: set[tuple[str, str]] = set()
    add = keys.add
    named: list[ParsedOp] = []  # the ops with a pred, of locked spaces
    for p in ops:
        space_id = p.space_id
        cursor = cursors.get(space_id)
        if cursor is None:
            continue
        op = p.op
        if probe_all or op.lamport <= cursor.max_lamport:
            add((space_id, op.op_id))
        else:
            views[space_id].skipped.add(op.op_id)
        if op.pred:
            named.append(p)
    for p in named:  # once every skipped op_id is known: a pred may name a later op
        skipped = views[p.space_id].skipped
        for r in p.op.pred:
            if r not in skipped:
                add((p.space_id, r))
    return keys


async def _load_views(
    conn: Conn, ops: Sequence[ParsedOp], cursors: dict[str, SpaceCursor], probe_all: bool
) -> dict[str, SpaceView]:
    """Stored events the group names (op_ids for idempotency, pred entries as targets)."""
    views = {sid: SpaceView() for sid in cursors}
    keys = _probe_keys(ops, cursors, views, probe_all)
    if not keys:
        return views
    rows = await conn.fetch(_LOOKUP, [s for s, _ in keys], [o for _, o in keys])
    for r in rows:
        view = views[str(r["space_id"])]
        op_id = str(r["op_id"])
        view.stored[op_id] = (r["seq"], bytes(r["payload_hash"]))
        view.targets[op_id] = PredTarget(
            op_id=op_id,
            entity_type=r["entity_type"],
            entity_id=r["entity_id"],
            kind=r["kind"],
            field=r["field"],
            value=decode_value(r["value"]),
            lamport=r["lamport"],
        )
    return views


async def _load_states(
    conn: Conn, ops: Sequence[ParsedOp], cursors: dict[str, SpaceCursor]
) -> dict[tuple[str, str, str], EntityState]:
    keys = {
        (p.space_id, p.op.entity_type, p.op.entity_id, p.op.field)
        for p in ops
        if p.op.kind == "set" and isinstance(p.op.field, str) and p.space_id in cursors
    }
    states: dict[tuple[str, str, str], EntityState] = {}
    if not keys:
        return states
    cols = list(zip(*keys, strict=True))
    for r in await conn.fetch(_FIELD_SETS, *cols):
        key = (str(r["space_id"]), r["entity_type"], r["entity_id"])
        state = states.get(key)
        if state is None:
            state = states[key] = EntityState.new(key[1], key[2])
        pred = tuple(str(p) for p in r["pred"])
        state.apply(
            Op(
                op_id=str(r["op_id"]),
                entity_type=key[1],
                entity_id=key[2],
                kind="set",
                field=r["field"],
                pred=pred,
                lamport=r["lamport"],
            )
        )
    return states


@dataclass
class _Context:
    """Shared by every push of one group."""

    headroom: int
    batch: Batch
    states: dict[tuple[str, str, str], EntityState]
    conflicts: list[tuple[str, str]] = field(default_factory=list)


def _store_op(
    item: Checked, user_id: str, cursor: SpaceCursor, view: SpaceView, ctx: _Context
) -> Event:
    """Number and chain a valid new op; make it visible to the rest of the group."""
    op = item.parsed.op
    event = ctx.batch.add(
        cursor, op, user_id, item.parsed.client_time, item.value_json, item.digest
    )
    view.stored[op.op_id] = (event.seq, item.digest)
    view.targets[op.op_id] = event  # a later pred names it: its value as stored
    if op.kind == "set" and op.field is not None:
        key = (cursor.space_id, op.entity_type, op.entity_id)
        state = ctx.states.get(key)
        if state is None:
            state = ctx.states[key] = EntityState.new(op.entity_type, op.entity_id)
        if state.apply(op).conflicted:
            ctx.conflicts.append((op.entity_type, op.field))
    return event


def _plan_op(
    echo: str | None,
    item: Item,
    push: Push,
    cursor: SpaceCursor,
    view: SpaceView,
    lamport_before: int,
    ctx: _Context,
) -> tuple[OpResult, Event | None]:
    """The result of one op: the checks needing the log (PROTOCOL order: lamport
    headroom, pred, then the schema's verdict from ``prepare``), then idempotency."""
    if isinstance(item, Violation):
        return rejected(echo, item.code, item.message), None
    op = item.parsed.op
    violation = check_lamport_headroom(op.lamport, lamport_before, ctx.headroom)
    if violation is None:
        violation = check_preds(op, view.targets)
        targets = view.targets
        if violation is not None and any(r in view.skipped and r not in targets for r in op.pred):
            raise _ProbeAgain(op.op_id)
        violation = violation or item.late
    if violation is not None:
        return rejected(echo, violation.code, violation.message), None
    known = view.stored.get(op.op_id)
    if known is not None:
        seq, stored_digest = known
        if stored_digest == item.digest:
            return OpResult(op_id=echo, status="duplicate", seq=seq), None
        message = "op_id already stored in this space with a different payload"
        return rejected(echo, "op_id_conflict", message), None
    event = _store_op(item, push.user_id, cursor, view, ctx)
    return OpResult(op_id=echo, status="applied", seq=event.seq), event


def _plan_push(
    push: Push,
    cursors: dict[str, SpaceCursor],
    roles: dict[tuple[str, str], str],
    views: dict[str, SpaceView],
    ctx: _Context,
) -> AppendOutcome:
    """One push's results, as if it ran alone after the group's earlier pushes."""
    assert push.space_id is not None
    cursor = cursors.get(push.space_id)
    role = roles.get((push.space_id, push.user_id))
    if cursor is None or role is None:
        return refuse_all(push, "not_found", "no such space", 0, 0)
    if role not in ("owner", "editor"):
        return refuse_all(
            push, "forbidden", f"a {role} may not push", cursor.max_lamport, cursor.head
        )
    view = views[push.space_id]
    lamport_before = cursor.max_lamport
    results: list[OpResult] = []
    events: list[Event] = []
    for echo, item in zip(push.echo_ids, push.items, strict=True):
        result, event = _plan_op(echo, item, push, cursor, view, lamport_before, ctx)
        results.append(result)
        if event is not None:
            events.append(event)
    return AppendOutcome(
        space_id=push.space_id,
        results=results,
        server_lamport=cursor.max_lamport,
        events=events,
        head=cursor.head,
    )


async def run_group(
    conn: Conn,
    pushes: Sequence[Push],
    *,
    schema: Schema,
    headroom: int,
    fault_hook: FaultHook | None = None,
) -> GroupResult:
    """Check and store ``pushes`` (each with a space) in one transaction; results after
    COMMIT. Reruns once, looking up every op_id, when the fast lookup was not enough."""
    try:
        return await _transaction(conn, pushes, schema, headroom, fault_hook, probe_all=False)
    except (_ProbeAgain, asyncpg.UniqueViolationError):
        return await _transaction(conn, pushes, schema, headroom, fault_hook, probe_all=True)


async def _transaction(
    conn: Conn,
    pushes: Sequence[Push],
    schema: Schema,
    headroom: int,
    fault_hook: FaultHook | None,
    *,
    probe_all: bool,
) -> GroupResult:
    async with conn.transaction():
        cursors = await lock_spaces(conn, [p.space_id for p in pushes if p.space_id])
        roles = await _load_roles(conn, pushes, cursors)
        writable = [
            p for p in pushes if roles.get((p.space_id or "", p.user_id)) in ("owner", "editor")
        ]
        ops = _ops_of(writable)
        views = await _load_views(conn, ops, cursors, probe_all)
        states = await _load_states(conn, ops, cursors)
        # Taken under the locks, so recorded_at follows seq order within a space.
        ctx = _Context(headroom, Batch(datetime.now(UTC), schema.version), states)
        outcomes = [_plan_push(p, cursors, roles, views, ctx) for p in pushes]
        await ctx.batch.flush(conn)
        if fault_hook is not None:
            await fault_hook(conn)
    return GroupResult(outcomes, ctx.conflicts)
