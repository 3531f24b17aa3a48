"""The checker: after the faults stop and everything healed, each property of
docs/reliability.md is judged against the log (read straight from PostgreSQL), the
server's reads, the projection and what every device recorded."""

from __future__ import annotations

import bisect
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from client import ApiError, HttpApi
from eventstore import audit
from lab.chaos.model import Sim, User
from lab.chaos.workload import World
from projector.verify import verify as verify_projection

Key = tuple[str, str, str]  # space, entity type, entity id

#: Codes that say the server failed, not the op: never a reason to drop a write for good.
SERVER_FAULTS = frozenset({"internal"})

#: Refusals of a whole push for a pusher who is no longer a member or may not write.
ACCESS_LOST = frozenset({"not_found", "forbidden"})


@dataclass
class Verdict:
    name: str
    holds: bool
    detail: str


def normal(view: Any) -> dict[str, Any]:
    """A view (device, replay or server read, as builtins) in one comparable form."""
    if view is None:
        return {}
    data = view if isinstance(view, dict) else msgspec.to_builtins(view)
    fields = {}
    for name, fv in sorted(data.get("fields", {}).items()):
        heads = fv.get("heads")
        value = fv.get("value")
        if isinstance(value, list):
            value = sorted(value, key=repr)
        fields[name] = (value, None if heads is None else [h["op_id"] for h in heads])
    return {"deleted": data.get("deleted"), "fields": fields}


@dataclass
class Facts:
    """What the log says, read once for every property."""

    replay: dict[Key, dict[str, Any]]
    op_counts: Counter[str]
    op_seq: dict[str, int]
    heads: dict[str, int]
    members: dict[str, dict[str, str]]  # space -> user_id -> role, at the end
    membership: dict[tuple[str, str], list[tuple[float, int, str]]]  # (space, user) -> events


async def read_facts(pool: asyncpg.Pool) -> Facts:
    heads = {str(r[0]): int(r[1]) for r in await pool.fetch("SELECT space_id, head FROM spaces")}
    replay: dict[Key, dict[str, Any]] = {}
    for space in heads:
        folded = await audit.replay(pool, space)
        for view in folded["entities"]:
            replay[(space, view["entity_type"], view["entity_id"])] = normal(view)
    op_counts: Counter[str] = Counter()
    op_seq: dict[str, int] = {}
    for r in await pool.fetch("SELECT op_id::text, seq FROM events"):
        op_counts[r[0]] += 1
        op_seq[r[0]] = int(r[1])
    members: dict[str, dict[str, str]] = defaultdict(dict)
    for r in await pool.fetch("SELECT space_id::text, user_id::text, role FROM members"):
        members[r[0]][r[1]] = r[2]
    membership: dict[tuple[str, str], list[tuple[float, int, str]]] = defaultdict(list)
    rows = await pool.fetch(
        "SELECT space_id::text, entity_id, seq, kind, extract(epoch FROM recorded_at) "
        "FROM events WHERE kind IN ('member_added', 'member_removed', 'member_role_changed') "
        "ORDER BY space_id, seq"
    )
    for r in rows:
        membership[(r[0], r[1])].append((float(r[4]), int(r[2]), r[3]))
    return Facts(replay, op_counts, op_seq, heads, dict(members), dict(membership))


def check_acknowledged(sims: list[Sim], facts: Facts) -> Verdict:
    acked = {op_id: ack for sim in sims for op_id, ack in sim.acked.items()}
    lost = [i for i in acked if facts.op_counts[i] == 0]
    twice = [i for i, n in facts.op_counts.items() if n > 1]
    wrong_seq = [i for i, a in acked.items() if a.seq and facts.op_seq.get(i, a.seq) != a.seq]
    # A push refused because the pusher lost access (not_found, forbidden) is refused
    # before idempotency is looked at (docs/protocol.md 2.5): an earlier send of the op
    # whose answer was lost may have stored it. Any other refusal of a stored op is wrong.
    refused_yet_stored = [
        i
        for sim in sims
        for i, r in sim.rejected.items()
        if facts.op_counts[i] and r.code not in ACCESS_LOST
    ]
    access_lost_stored = sum(
        1
        for sim in sims
        for i, r in sim.rejected.items()
        if facts.op_counts[i] and r.code in ACCESS_LOST
    )
    holds = not (lost or twice or wrong_seq or refused_yet_stored)
    detail = (
        f"{len(acked)} acknowledged ops: {len(lost)} lost, {len(twice)} duplicated in the log, "
        f"{len(wrong_seq)} at another seq than acknowledged, "
        f"{len(refused_yet_stored)} rejected yet stored ({access_lost_stored} refused after "
        "the pusher lost access had been stored by an earlier send)"
    )
    return Verdict("acknowledged-exactly-once", holds, detail + _examples(lost + twice))


def check_queues(sims: list[Sim]) -> Verdict:
    vanished: list[str] = []
    dropped: list[str] = []  # valid writes refused for good because the server failed
    stuck: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for sim in sims:
        assert sim.device is not None
        pending = {op.op_id for op in sim.device.pending()}
        stored_rejections = {r.op.op_id: r for r in sim.device.rejected()}
        for op_id in sim.made:
            if op_id in sim.acked:
                continue
            if op_id in stored_rejections or op_id in sim.rejected:
                rejected = stored_rejections.get(op_id) or sim.rejected[op_id]
                reasons[rejected.code] += 1
                if rejected.code in SERVER_FAULTS:
                    dropped.append(f"{sim.name} {op_id} ({rejected.code}: {rejected.message})")
            elif op_id in pending:
                stuck[sim.name] += 1
            else:
                vanished.append(op_id)
    made = sum(len(s.made) for s in sims)
    detail = (
        f"{made} ops made: {sum(len(s.acked) for s in sims)} acknowledged, "
        f"{sum(reasons.values())} rejected for good ({_counts(reasons)}), "
        f"{sum(stuck.values())} still queued after healing, {len(vanished)} vanished"
    )
    if stuck:
        detail += f"; queued on {_counts(stuck)}"
    if dropped:
        detail += f"; {len(dropped)} refused for a server fault"
    holds = not vanished and not stuck and not dropped
    return Verdict("queues-accounted", holds, detail + _examples(vanished + dropped))


async def check_converged(
    sims: list[Sim], facts: Facts, pool: asyncpg.Pool, api: HttpApi, users: list[User]
) -> Verdict:
    problems: list[str] = []
    differences = await verify_projection(pool)
    problems += [f"projection {d.space_id} {d.entity_type}/{d.entity_id}" for d in differences]
    by_id = {u.user_id: u for u in users}
    reads = 0
    for key, expected in facts.replay.items():
        space, etype, eid = key
        reader = next((by_id[u] for u in facts.members.get(space, {}) if u in by_id), None)
        if reader is None:
            continue
        try:
            answer = await api.entity(await reader.token(api), space, etype, eid)
        except ApiError as exc:
            problems.append(f"server read {space} {etype}/{eid}: {exc}")
            continue
        reads += 1
        if normal(answer) != expected:
            problems.append(f"server read {space} {etype}/{eid} differs from the replay")
    compared = 0
    for sim in sims:
        assert sim.device is not None
        for space, roles in facts.members.items():
            if sim.user.user_id not in roles:
                continue
            for (s, etype, eid), expected in facts.replay.items():
                if s != space:
                    continue
                compared += 1
                shown = normal(sim.device.state(space, etype, eid))
                if shown != expected:
                    problems.append(
                        f"{sim.name} {space} {etype}/{eid} differs from the replay: "
                        f"{_difference(shown, expected)}"
                    )
    detail = (
        f"{len(facts.replay)} entities: replay vs projection ({len(differences)} differ), "
        f"vs {reads} server reads, vs {compared} device states; {len(problems)} differences"
    )
    return Verdict("converged", not problems, detail + _examples(problems))


async def check_log(pool: asyncpg.Pool) -> Verdict:
    rows = await pool.fetch(
        "SELECT s.space_id::text, s.head, count(e.seq), coalesce(min(e.seq), 0), "
        "coalesce(max(e.seq), 0) FROM spaces s LEFT JOIN events e USING (space_id) "
        "GROUP BY s.space_id, s.head"
    )
    gaps = [r[0] for r in rows if not (r[2] == r[4] == r[1] and r[3] in (0, 1))]
    chains = await audit.verify_all(pool)
    holds = not gaps and chains.ok
    detail = (
        f"{len(rows)} spaces: {len(gaps)} with gaps or a wrong head, "
        f"{len(chains.broken)} broken hash chains"
    )
    return Verdict("log-gapless-chained", holds, detail + _examples(gaps + list(chains.broken)))


async def check_reminders(pool: asyncpg.Pool, settle: float) -> Verdict:
    events = Counter(
        (r[0], r[1])
        for r in await pool.fetch(
            "SELECT value->>'reminder_id', kind FROM events "
            "WHERE kind IN ('reminder_fired', 'reminder_skipped')"
        )
    )
    rows = await pool.fetch(
        "SELECT reminder_id::text, status, extract(epoch FROM fire_at), last_error FROM reminders"
    )
    statuses: Counter[str] = Counter()
    wrong: list[str] = []
    now = time.time()
    for rid, status, fire_at, error in rows:
        statuses[status] += 1
        fired, skipped = events[(rid, "reminder_fired")], events[(rid, "reminder_skipped")]
        if status == "fired" and (fired, skipped) != (1, 0):
            wrong.append(f"{rid} fired with {fired} fired / {skipped} skipped events")
        elif status == "skipped" and (fired, skipped) != (0, 1):
            wrong.append(f"{rid} skipped with {fired} fired / {skipped} skipped events")
        elif status == "dead" and not error:
            wrong.append(f"{rid} dead without a reason")
        elif status in ("scheduled", "retrying") and float(fire_at) < now - settle:
            wrong.append(f"{rid} still {status}, due {now - float(fire_at):.0f}s ago")
        elif status == "cancelled" and fired + skipped:
            wrong.append(f"{rid} cancelled after an event")
    detail = f"{len(rows)} reminders ({_counts(statuses)}); {len(wrong)} wrong"
    return Verdict("reminders-once", not wrong, detail + _examples(wrong))


def check_membership(sims: list[Sim], facts: Facts) -> Verdict:
    bad: list[str] = []
    checked = 0
    for sim in sims:
        for got in sim.received:
            checked += 1
            history = facts.membership.get((got.space_id, sim.user.user_id), [])
            at = bisect.bisect_right([h[0] for h in history], got.at)
            if at == 0:
                bad.append(f"{sim.name} got {got.space_id}#{got.seq} before ever being a member")
                continue
            _, seq, kind = history[at - 1]
            if kind == "member_removed" and got.seq > seq:
                bad.append(f"{sim.name} got {got.space_id}#{got.seq} after its removal at #{seq}")
    detail = f"{checked} events received by devices: {len(bad)} outside a membership"
    return Verdict("membership-respected", not bad, detail + _examples(bad))


def check_counters(sims: list[Sim], facts: Facts) -> Verdict:
    sums: dict[Key, int] = defaultdict(int)
    for sim in sims:
        # Acknowledged increments, and those refused after the pusher lost access that
        # an earlier send had stored (see check_acknowledged).
        counted = [a.op for a in sim.acked.values()] + [
            r.op for i, r in sim.rejected.items() if r.code in ACCESS_LOST and facts.op_counts[i]
        ]
        for op in counted:
            if op.kind == "inc":
                sums[(op.space_id, op.entity_type, op.entity_id)] += int(op.value)
    wrong = []
    for key, total in sums.items():
        shown = facts.replay.get(key, {}).get("fields", {}).get("pomodoros", (0, None))[0]
        if shown != total:
            wrong.append(f"{key}: {shown} != {total}")
    detail = f"{len(sums)} counters: {len(wrong)} differ from their acknowledged increments"
    return Verdict("counters-sum", not wrong, detail + _examples(wrong))


def check_delivered(lagging: dict[str, str]) -> Verdict:
    detail = f"{len(lagging)} devices did not reach every head by live delivery"
    examples = [f"{name}: {where}" for name, where in sorted(lagging.items())]
    return Verdict("delivered-live", not lagging, detail + _examples(examples))


async def run_checks(world: World, pool: asyncpg.Pool, lagging: dict[str, str]) -> list[Verdict]:
    facts = await read_facts(pool)
    sims = world.sims
    return [
        check_acknowledged(sims, facts),
        check_queues(sims),
        await check_converged(sims, facts, pool, world.admin_api(), world.users),
        await check_log(pool),
        await check_reminders(pool, settle=30.0),
        check_membership(sims, facts),
        check_counters(sims, facts),
        check_delivered(lagging),
    ]


def _difference(shown: dict[str, Any], expected: dict[str, Any]) -> str:
    """What differs between two normal forms (device first, then the replay)."""
    parts = []
    if shown.get("deleted") != expected.get("deleted"):
        parts.append(f"deleted {shown.get('deleted')} vs {expected.get('deleted')}")
    mine, theirs = shown.get("fields", {}), expected.get("fields", {})
    for name in sorted(mine.keys() | theirs.keys()):
        if mine.get(name) != theirs.get(name):
            parts.append(f"{name} {mine.get(name)} vs {theirs.get(name)}")
    return "; ".join(parts)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.most_common(6)) or "none"


def _examples(items: list[str]) -> str:
    return f"; e.g. {'; '.join(str(i) for i in items[:3])}" if items else ""
