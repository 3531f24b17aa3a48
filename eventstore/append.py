"""One group-commit transaction: several pushes (any spaces) checked and stored together.

The transaction behaves exactly as if its pushes ran one after another in queue order:
each push sees the ops stored by the pushes before it (for ``pred``, duplicates and the
lamport headroom), seqs are handed out in that order, and either every push's valid ops
commit or none do. Per push, docs/protocol.md section 2's order of checks holds: the caller's
role under the space lock (``not_found`` / ``forbidden`` for every op), then each op's
validity (type, device, ``crdt.validate``), then idempotency.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from core.breaks import broken
from core.ports import AppendOutcome
from core.wire import Event, OpResult
from crdt import (
    Op,
    PredTarget,
    Schema,
    Target,
    check_lamport_headroom,
    check_preds,
)
from crdt.validate import is_canonical_uuid
from eventstore.heads import FieldKey, Row, field_key, write_heads
from eventstore.push import Checked, Push, refuse_all, rejected
from eventstore.rows import Conn, decode_value
from eventstore.writer import Batch, SpaceCursor, lock_spaces

FaultHook = Callable[[Conn], Awaitable[None]]


# Everything the group's checks need of the database, in one round trip after the space
# locks (so, under READ COMMITTED, from a snapshot taken after the previous holder of each
# lock committed). Three parts, told apart by ``part``:
#   0. the pushers' current roles (user_id in op_id, role in kind);
#   1. idempotency: every stored event of the group's spaces named by an op_id of the
#      group (and, when ``probe_all``, by a pred entry);
#   2. the heads of every field a pushed set touches (its key in op_id, the heads in
#      pred, their highest lamport in lamport), one row per field from field_heads
#      (eventstore/heads.py), so that concord_conflicts_total counts a set after which
#      its field has several, and so that pred entries naming heads need no event.
# The pred entries the heads do not vouch for (_vouch) are read afterwards, with
# _LOOKUP_EVENTS: a second round trip, which a device in sync (naming its field's heads)
# does not cause.
# Parts 1 and 2 probe their table once per key: a LATERAL subquery that LIMIT keeps
# from being flattened is a nested loop over the keys with one lookup of a unique index
# each, whatever the table's size or the plan cached; the rows read are the rows found,
# never a field's history.
def _events_part(spaces: int) -> str:
    """Part 1: the stored events of the (space, op_id) pairs given as parameters
    ``$spaces`` and ``$spaces+1``."""
    return f"""
SELECT 1 AS part, e.space_id, e.op_id, e.seq, e.entity_type, e.entity_id, e.kind, e.field,
       e.value, e.lamport, e.payload_hash, NULL::uuid[] AS pred
FROM (SELECT DISTINCT * FROM unnest(${spaces}::uuid[], ${spaces + 1}::uuid[])) AS k(space_id, op_id)
CROSS JOIN LATERAL (
    SELECT * FROM events WHERE space_id = k.space_id AND op_id = k.op_id LIMIT 1
) AS e
"""


_LOOKUP = f"""
SELECT 0 AS part, m.space_id, m.user_id AS op_id, NULL::bigint AS seq,
       NULL::text AS entity_type, NULL::text AS entity_id, m.role AS kind,
       NULL::text AS field, NULL::json AS value, NULL::bigint AS lamport,
       NULL::bytea AS payload_hash, NULL::uuid[] AS pred
FROM unnest($1::uuid[], $2::uuid[]) AS k(space_id, user_id)
JOIN members m ON m.space_id = k.space_id AND m.user_id = k.user_id
UNION ALL{_events_part(3)}UNION ALL
SELECT 2, h.space_id, h.field_key, NULL, NULL, NULL, NULL, NULL, NULL, h.lamport, NULL,
       h.heads
FROM (SELECT DISTINCT * FROM unnest($5::uuid[], $6::uuid[])) AS k(space_id, field_key)
CROSS JOIN LATERAL (
    SELECT * FROM field_heads WHERE space_id = k.space_id AND field_key = k.field_key LIMIT 1
) AS h
"""

#: Part 1 of _LOOKUP alone, for the pred entries read after it.
_LOOKUP_EVENTS = _events_part(1)


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


@dataclass
class _Known:
    """What the lookup found: roles, each space's view, the heads of the fields set
    (those with a row in field_heads) and their highest lamport (None: unknown),
    and every field's key there."""

    roles: dict[tuple[str, str], str]
    views: dict[str, SpaceView]
    heads: dict[FieldKey, set[str]]
    tops: dict[FieldKey, int | None] = field(default_factory=dict)
    keys: dict[FieldKey, str] = field(default_factory=dict)


#: An op of a locked space with a pred, and its space: (space_id, op).
Named = tuple[str, Op]


def _probe_keys(
    pushes: Sequence[Push],
    cursors: dict[str, SpaceCursor],
    views: dict[str, SpaceView],
    probe_all: bool,
) -> tuple[set[tuple[str, str]], set[FieldKey], list[Named]]:
    """The (space, op_id)s to look up first (the group's op_ids; with ``probe_all``, its
    pred entries too), the fields its sets touch, and the ops with a pred whose entries
    are left to _vouch (none with ``probe_all``), for the pushes of locked spaces.

    Unless ``probe_all``, an op_id whose lamport is above its space's highest stored
    lamport is not looked up: no stored event has that payload, so it can only be new
    or an op_id reused with another payload. The latter is caught afterwards: storing it
    violates UNIQUE (space_id, op_id), and a pred check failing on such an op_id is
    retried; either way the group reruns with ``probe_all`` (see run_group).
    """
    keys: set[tuple[str, str]] = set()
    fields: set[FieldKey] = set()
    add = keys.add
    named: list[Named] = []  # ops with a pred: their entries, once skipped are known
    for push in pushes:
        space_id = push.space_id
        cursor = cursors.get(space_id or "")
        if space_id is None or cursor is None:
            continue
        top = cursor.max_lamport
        skipped = views[space_id].skipped
        for item in push.items:
            if not isinstance(item, Checked):
                continue
            op = item.op
            if probe_all or op.lamport <= top:
                add((space_id, op.op_id))
            else:
                skipped.add(op.op_id)
            if op.pred:
                named.append((space_id, op))
            if op.kind == "set" and op.field is not None:
                fields.add((space_id, op.entity_type, op.entity_id, op.field))
    if not probe_all:
        return keys, fields, named
    for space_id, op in named:  # a pred may name a later op of the group
        skipped = views[space_id].skipped
        for r in op.pred:
            if r not in skipped:
                add((space_id, r))
    return keys, fields, []


_NONE: frozenset[str] = frozenset()


def _vouch(known: _Known, named: Sequence[Named]) -> set[tuple[str, str]]:
    """Put in each space's targets the pred entries that the stored heads vouch for, and
    return the (space, op_id)s of the others, still to be looked up.

    A set whose pred names a stored head of its own field, with a lamport above the
    highest of its heads', passes every check of that entry (crdt.check_preds: a set of the
    same entity and field, with a lower lamport): the entry needs no event, and a
    stand-in takes its place among the targets (lamport: the field's). An entry that
    another op of the group cannot vouch for is looked up all the same, and its event
    replaces the stand-in, so a stand-in never decides a check the event would decide
    otherwise. Entries naming an op of the group (``skipped``) or already found are
    left alone."""
    need: set[tuple[str, str]] = set()
    vouched: dict[tuple[str, str], PredTarget] = {}
    heads, tops, views = known.heads, known.tops, known.views
    for space_id, op in named:
        view = views[space_id]
        targets, skipped = view.targets, view.skipped
        voucher: AbstractSet[str] = _NONE  # the stored heads that vouch for its entries
        top = 0
        if op.kind == "set" and op.field is not None:
            key = (space_id, op.entity_type, op.entity_id, op.field)
            bound = tops.get(key)
            if bound is not None and op.lamport > bound:
                voucher, top = heads[key], bound
        for r in op.pred:
            if r in skipped or r in targets:
                continue
            if r in voucher:
                vouched[(space_id, r)] = PredTarget(
                    op_id=r, entity_type=op.entity_type, entity_id=op.entity_id,
                    kind="set", field=op.field, value=None, lamport=top,
                )  # fmt: skip
            else:
                need.add((space_id, r))
    for (space_id, r), target in vouched.items():
        views[space_id].targets[r] = target
    return need


def _columns(keys: Collection[Any], width: int) -> list[list[Any]]:
    """The keys as ``width`` parallel lists (``unnest`` arguments)."""
    return [list(c) for c in zip(*keys, strict=True)] if keys else [[] for _ in range(width)]


async def _look_up(
    conn: Conn, pushes: Sequence[Push], cursors: dict[str, SpaceCursor], probe_all: bool
) -> _Known:
    """Roles, stored events named by the group and field heads: one round trip."""
    pairs = {
        (p.space_id, p.user_id)
        for p in pushes
        if p.space_id in cursors and is_canonical_uuid(p.user_id)
    }
    known = _Known({}, {sid: SpaceView() for sid in cursors}, {})
    if not pairs:  # nobody may push: every push is refused, nothing to look up
        return known
    keys, fields, named = _probe_keys(pushes, cursors, known.views, probe_all)
    known.keys = {f: field_key(f[1], f[2], f[3]) for f in fields}
    of_key = {(f[0], k): f for f, k in known.keys.items()}
    rows = await conn.fetch(_LOOKUP, *_columns(pairs, 2), *_columns(keys, 2), *_columns(of_key, 2))
    _read(known, rows, of_key)
    need = _vouch(known, named)
    if need:
        _read(known, await conn.fetch(_LOOKUP_EVENTS, *_columns(need, 2)), of_key)
    return known


def _read(
    known: _Known, rows: Sequence[asyncpg.Record], of_key: dict[tuple[str, str], FieldKey]
) -> None:
    """Take in the rows of _LOOKUP or _LOOKUP_EVENTS."""
    for r in rows:
        part = r["part"]
        if part == 0:
            known.roles[(str(r["space_id"]), str(r["op_id"]))] = r["kind"]
        elif part == 1:
            view = known.views[str(r["space_id"])]
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
        else:
            found = of_key[(str(r["space_id"]), str(r["op_id"]))]
            known.heads[found] = {str(h) for h in r["pred"]}
            known.tops[found] = r["lamport"]


@dataclass
class _Context:
    """Shared by every push of one group."""

    headroom: int
    batch: Batch
    #: Heads of every field the group sets (stored, then as the group's sets land), and
    #: their highest lamport (None: unknown).
    heads: dict[FieldKey, set[str]]
    tops: dict[FieldKey, int | None]
    #: The fields whose heads the group changed (written back before COMMIT).
    changed: set[FieldKey] = field(default_factory=set)
    conflicts: list[tuple[str, str]] = field(default_factory=list)


def _duplicate_or_conflict(echo: str | None, known: tuple[int, bytes], digest: bytes) -> OpResult:
    seq, stored_digest = known
    if stored_digest == digest:
        return OpResult(op_id=echo, status="duplicate", seq=seq)
    message = "op_id already stored in this space with a different payload"
    return rejected(echo, "op_id_conflict", message)


def _plan_push(
    push: Push,
    cursors: dict[str, SpaceCursor],
    roles: dict[tuple[str, str], str],
    views: dict[str, SpaceView],
    ctx: _Context,
) -> AppendOutcome:
    """One push's results, as if it ran alone after the group's earlier pushes.

    Per op, in the order of docs/protocol.md section 2.5: the checks needing the log
    (lamport headroom, pred), the schema's verdict from ``prepare``, then idempotency; a
    new op is numbered, chained, and becomes visible to the rest of the group (as a pred
    target, a duplicate, a field head). One loop with the state in locals: it runs for
    every pushed op."""
    space_id = push.space_id
    assert space_id is not None
    cursor = cursors.get(space_id)
    role = roles.get((space_id, push.user_id))
    if cursor is None or role is None:
        return refuse_all(push, "not_found", "no such space", 0, 0)
    if role not in ("owner", "editor"):
        return refuse_all(
            push, "forbidden", f"a {role} may not push", cursor.max_lamport, cursor.head
        )
    view = views[space_id]
    targets, stored, skipped = view.targets, view.stored, view.skipped
    lamport_before, headroom = cursor.max_lamport, ctx.headroom
    cap = lamport_before + headroom
    add, heads, tops, user_id = ctx.batch.add, ctx.heads, ctx.tops, push.user_id
    dedup = not broken("dedup")  # always True but in the chaos lab's broken build
    results: list[OpResult] = []
    events: list[Event] = []
    for echo, item in zip(push.echo_ids, push.items, strict=True):
        if not isinstance(item, Checked):
            results.append(rejected(echo, item.code, item.message))
            continue
        op = item.op
        pred = op.pred
        if op.lamport > cap:
            violation = check_lamport_headroom(op.lamport, lamport_before, headroom)
        elif pred:
            violation = check_preds(op, targets)
            if violation is not None and any(r in skipped and r not in targets for r in pred):
                raise _ProbeAgain(op.op_id)
        else:
            violation = None
        violation = violation or item.late
        if violation is not None:
            results.append(rejected(echo, violation.code, violation.message))
            continue
        op_id = op.op_id
        seen = stored.get(op_id) if dedup else None
        if seen is not None:
            results.append(_duplicate_or_conflict(echo, seen, item.digest))
            continue
        event = add(cursor, op, user_id, item.client_time, item.value_json, item.digest)
        stored[op_id] = (event.seq, item.digest)
        targets[op_id] = event  # a later pred names it: its value as stored
        if op.kind == "set" and op.field is not None:
            key = (space_id, op.entity_type, op.entity_id, op.field)
            ctx.changed.add(key)
            field_heads = heads.get(key)
            if field_heads is None:
                heads[key] = {op_id}
                tops[key] = op.lamport
            else:
                field_heads.difference_update(pred)
                field_heads.add(op_id)
                if len(field_heads) > 1:
                    ctx.conflicts.append((op.entity_type, op.field))
                    top = tops.get(key)  # the heads it removed had lower lamports
                    tops[key] = None if top is None else max(top, op.lamport)
                else:
                    tops[key] = op.lamport
        results.append(OpResult(op_id=echo, status="applied", seq=event.seq))
        events.append(event)
    return AppendOutcome(
        space_id=space_id,
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
    # BEGIN and COMMIT by hand: the last statement and COMMIT share one round trip.
    await conn.execute("BEGIN")
    try:
        cursors = await lock_spaces(conn, [p.space_id for p in pushes if p.space_id])
        known = await _look_up(conn, pushes, cursors, probe_all)
        # Taken under the locks, so recorded_at follows seq order within a space.
        had_row = set(known.heads)
        batch = Batch(datetime.now(UTC), schema.version)
        ctx = _Context(headroom, batch, known.heads, known.tops)
        outcomes = [_plan_push(p, cursors, known.roles, known.views, ctx) for p in pushes]
        await ctx.batch.copy(conn)
        if fault_hook is not None:
            await fault_hook(conn)
        await _write_heads(conn, ctx, known.keys, had_row)
        await conn.execute(ctx.batch.advance_sql() + "COMMIT")
    except BaseException:
        await _roll_back(conn)
        raise
    return GroupResult(outcomes, ctx.conflicts)


async def _write_heads(
    conn: Conn, ctx: _Context, keys: dict[FieldKey, str], had_row: set[FieldKey]
) -> None:
    """Store the heads of the fields the group changed."""
    new: list[Row] = []
    changed: list[Row] = []
    for f in ctx.changed:
        (changed if f in had_row else new).append((f[0], keys[f], ctx.heads[f], ctx.tops[f]))
    await write_heads(conn, new, changed)


async def _roll_back(conn: Conn) -> None:
    """End a failed transaction; a broken connection is left for the pool to replace."""
    with contextlib.suppress(Exception):  # closed, or no longer ours: nothing to end
        if not conn.is_closed():
            await conn.execute("ROLLBACK")
