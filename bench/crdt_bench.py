"""CRDT apply and merge throughput, against pycrdt (Yjs) applying the same field sets.

    .venv/bin/python -m bench.crdt_bench            # 1,000,000 ops over 10,000 entities
    .venv/bin/python -m bench.crdt_bench --ops 100000 --profile

1. Generates `--ops` field ops (lww, counter, set, mv) over `--entities` tasks from 50
   devices, `--concurrent` of them concurrent (their `pred` misses the latest head), with a
   seeded `random.Random`, outside any timed section.
2. Concord op-based apply, twice: `crdt.fold` of every op (grouped by entity, each entity's
   run applied with `EntityState.apply_all`), and one `EntityState.apply` call per op in
   stream order (what a live consumer does).
3. Concord state-based merge: the ops split by device into two replicas, folded untimed;
   timed: merging replica B's states into replica A's.
4. pycrdt: replica A makes the same field sets (one `Map` per entity in one `Doc`, a
   counter as its running total, a set element as a key) in transactions of 100; timed:
   replica B applying A's updates.

The input ops are frozen out of the garbage collector's sight (`gc.freeze`) before each
timed section; the collector stays on while timing. Each figure is the best of `--repeat`
runs, as wall-clock and as CPU time (steadier when other work shares the machine).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import pstats
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crdt import DEFAULT_SCHEMA, EntityState, Op, PredTarget, fold, validate

DEVICES = 50
LWW_FIELDS = (("title", "t"), ("position", "p"), ("done", None), ("list_id", "l"))
MIX = (("lww", 0.40), ("counter", 0.20), ("add", 0.15), ("remove", 0.10), ("mv", 0.15))
TAGS = tuple(f"tag{i}" for i in range(8))


@dataclass
class Fields:
    """What the generator knows of one entity: heads per register, live adds, counter."""

    heads: dict[str, list[Op]] = field(default_factory=dict)
    live: dict[str, list[Op]] = field(default_factory=dict)
    total: int = 0


@dataclass
class Workload:
    ops: list[Op]
    yset: list[tuple[str, str, Any]]  # (entity_id, key, value): the same write as a map set


class Generator:
    """Makes realistic ops: a device names the heads it saw; concurrent ones saw less."""

    def __init__(self, seed: int, entities: int, concurrent: float) -> None:
        self.rnd = random.Random(seed)
        self.entities = [f"task-{i}" for i in range(entities)]
        self.devices = [
            str(uuid.UUID(int=self.rnd.getrandbits(128), version=4)) for _ in range(DEVICES)
        ]
        self.concurrent = concurrent
        self.state: dict[str, Fields] = {}
        self.lamport = 0
        self.kinds = [k for k, _ in MIX]
        self.weights = [w for _, w in MIX]

    def op_id(self) -> str:
        return str(uuid.UUID(int=self.rnd.getrandbits(128), version=4))

    def make(self, n: int) -> Workload:
        ops: list[Op] = []
        yset: list[tuple[str, str, Any]] = []
        kinds = self.rnd.choices(self.kinds, self.weights, k=n)
        for kind in kinds:
            entity = self.rnd.choice(self.entities)
            fields = self.state.setdefault(entity, Fields())
            op, key, value = self.one(kind, entity, fields)
            ops.append(op)
            yset.append((entity, key, value))
        return Workload(ops, yset)

    def one(self, kind: str, entity: str, fields: Fields) -> tuple[Op, str, Any]:
        self.lamport += 1
        base: dict[str, Any] = {
            "op_id": self.op_id(),
            "entity_type": "task",
            "entity_id": entity,
            "device_id": self.rnd.choice(self.devices),
        }
        if kind in ("lww", "mv"):
            name, prefix = ("assignee", "u") if kind == "mv" else self.rnd.choice(LWW_FIELDS)
            value = self.rnd.random() < 0.5 if prefix is None else f"{prefix}{self.lamport}"
            return self.set_op(base, fields, name, value), name, value
        if kind == "counter":
            delta = self.rnd.choice((1, 1, 2, -1))
            fields.total += delta
            op = Op(kind="inc", field="pomodoros", value=delta, lamport=self.lamport, **base)
            return op, "pomodoros", fields.total
        tag = self.rnd.choice(TAGS)
        live = fields.live.setdefault(tag, [])
        if kind == "add" or not live:
            op = Op(kind="add", field="tags", value=tag, lamport=self.lamport, **base)
            live.append(op)
            return op, f"tags/{tag}", True
        seen = live[:-1] if len(live) > 1 and self.rnd.random() < self.concurrent else live
        op = Op(
            kind="remove",
            field="tags",
            value=tag,
            pred=tuple(a.op_id for a in seen),
            lamport=self.lamport,
            **base,
        )
        fields.live[tag] = [a for a in live if a not in seen]
        return op, f"tags/{tag}", bool(fields.live[tag])

    def set_op(self, base: dict[str, Any], fields: Fields, name: str, value: Any) -> Op:
        """A set naming the current heads, or (concurrent) only what was there before."""
        heads = fields.heads.get(name, [])
        seen = heads
        lamport = self.lamport
        if heads and self.rnd.random() < self.concurrent:
            # this device missed the latest write: it names every head but that one
            latest = max(heads, key=lambda h: (h.lamport, h.op_id))
            seen = [h for h in heads if h is not latest]
            lamport = latest.lamport  # equal lamports: the op_id decides
            if any(h.lamport >= lamport for h in seen):
                lamport = self.lamport
        op = Op(
            kind="set",
            field=name,
            value=value,
            pred=tuple(h.op_id for h in seen),
            lamport=lamport,
            **base,
        )
        fields.heads[name] = [h for h in heads if h not in seen] + [op]
        return op


def check_valid(ops: list[Op], limit: int = 20_000) -> None:
    """The workload is realistic: its first ops pass validation as the event store runs it."""
    held: dict[str, Op] = {}
    top = 0
    for op in ops[:limit]:
        targets = {p: _target(held[p]) for p in op.pred if p in held}
        violation = validate(op, DEFAULT_SCHEMA, targets, top)
        if violation is not None:
            raise SystemExit(f"generated op is invalid: {violation} {op}")
        held[op.op_id] = op
        top = max(top, op.lamport)


def _target(op: Op) -> PredTarget:
    return PredTarget(
        op_id=op.op_id,
        entity_type=op.entity_type,
        entity_id=op.entity_id,
        kind=op.kind,
        field=op.field,
        value=op.value,
        lamport=op.lamport,
    )


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds of one run; CPU time is steadier on a shared machine."""

    wall: float
    cpu: float

    @staticmethod
    def best(runs: list[Timing]) -> Timing:
        return Timing(min(r.wall for r in runs), min(r.cpu for r in runs))


def timed(fn: Callable[[], Any]) -> Timing:
    """Run `fn` once with the inputs frozen out of the collector's sight.

    What `fn` returns is freed after the clocks stop, as pycrdt's replica is kept past
    its timing: the applies are timed, not the freeing of their results."""
    gc.collect()
    gc.freeze()
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    timing = Timing(time.perf_counter() - start, time.process_time() - cpu)
    del result
    gc.unfreeze()
    return timing


def best_of(repeat: int, run: Callable[[], Timing]) -> Timing:
    """The fastest of `repeat` runs (wall and CPU apart): the least disturbed by other work."""
    return Timing.best([run() for _ in range(repeat)])


def rate(n: int, t: Timing, unit: str = "ops/s") -> str:
    return f"{n / t.wall:>10,.0f} {unit} wall, {n / t.cpu:>10,.0f} {unit} CPU"


def bare_lww(ops: list[Op]) -> dict[tuple[str, str, str | None], tuple[int, str, Any]]:
    """A reference floor: last-writer-wins by order key in a plain dict, nothing else
    (no idempotency, heads, counters, sets or conflicts)."""
    out: dict[tuple[str, str, str | None], tuple[int, str, Any]] = {}
    for op in ops:
        key = (op.entity_type, op.entity_id, op.field)
        cur = out.get(key)
        if cur is None or (op.lamport, op.op_id) > (cur[0], cur[1]):
            out[key] = (op.lamport, op.op_id, op.value)
    return out


def apply_one_by_one(ops: list[Op]) -> dict[tuple[str, str], EntityState]:
    """Op-based apply in stream order, one `apply` call per op (as a live consumer does)."""
    states: dict[tuple[str, str], EntityState] = {}
    for op in ops:
        key = (op.entity_type, op.entity_id)
        state = states.get(key)
        if state is None:
            state = states[key] = EntityState(op.entity_type, op.entity_id)
        state.apply(op)
    return states


def concord_merge(ops: list[Op], devices: list[str], repeat: int) -> tuple[Timing, int, bool]:
    """Two replicas split by device, folded untimed; timed: merging B's states into A's."""
    b_devices = set(devices[1::2])
    a_ops = [op for op in ops if op.device_id not in b_devices]
    b_ops = [op for op in ops if op.device_id in b_devices]
    b = fold(b_ops)
    a: dict[tuple[str, str], EntityState] = {}

    def merge() -> None:
        for key, theirs in b.items():
            mine = a.get(key)
            if mine is None:
                a[key] = theirs.copy()
            else:
                mine.merge(theirs)

    def run() -> Timing:
        nonlocal a
        a = fold(a_ops)
        return timed(merge)

    elapsed = best_of(repeat, run)
    whole = fold(ops)
    sample = list(whole)[:: max(1, len(whole) // 200)]
    agrees = a.keys() == whole.keys() and all(a[k] == whole[k] for k in sample)
    return elapsed, len(b_ops), agrees


@dataclass
class Pycrdt:
    """Replica A's updates (the same field sets as the ops, made by A in transactions),
    and replica B, made anew by each timed `run` applying them all."""

    updates: list[bytes]
    maps: dict[str, Any]  # replica A's root Map per entity
    made: float  # seconds A took to make the updates
    replica: Any = None

    def run(self) -> Timing:
        import pycrdt

        self.replica = None  # the last run's replica is freed before the clocks start
        self.replica = pycrdt.Doc()
        return timed(self._apply)

    def _apply(self) -> None:
        apply = self.replica.apply_update
        for update in self.updates:
            apply(update)

    def agrees(self) -> bool:
        """Replica B, as the last run left it, equals A (on a sample of entities)."""
        import pycrdt

        sample = sorted(self.maps)[:: max(1, len(self.maps) // 100)]
        return all(
            self.replica.get(e, type=pycrdt.Map).to_py() == self.maps[e].to_py() for e in sample
        )


def pycrdt_replica(work: Workload, batch: int = 100) -> Pycrdt | None:
    """Replica A makes the field sets in transactions of `batch` (None: no pycrdt)."""
    try:
        import pycrdt
    except ImportError:
        return None
    doc_a: Any = pycrdt.Doc()
    # a root Map per entity: B applies these about ten times faster than Maps nested in one
    maps = {e: doc_a.get(e, type=pycrdt.Map) for e in sorted({e for e, _, _ in work.yset})}
    updates: list[bytes] = []
    doc_a.observe(lambda event: updates.append(event.update))
    start = time.perf_counter()
    for i in range(0, len(work.yset), batch):
        with doc_a.transaction():
            for entity, key, value in work.yset[i : i + batch]:
                maps[entity][key] = value
    return Pycrdt(updates, maps, time.perf_counter() - start)


def profile(fn: Callable[[list[Op]], object], ops: list[Op], top: int = 12) -> str:
    """Where `fn(ops)` spends its time (cProfile, by own time)."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn(ops)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def report_pycrdt(
    work: Workload, repeat: int, batch: int, pairs: int, concord: dict[str, Timing]
) -> None:
    """Time pycrdt on the same writes and print Concord's rates over its rate: each side's
    best run, then `pairs` runs of each side in alternation, with their median ratio."""
    y = pycrdt_replica(work, batch)
    if y is None:
        print("pycrdt        : not installed (pip install pycrdt), comparison skipped")
        return
    best = best_of(repeat, y.run)
    print(
        f"pycrdt apply  : {rate(len(work.ops), best, 'sets/s')}  (replica B, updates of "
        f"{batch} sets; A made them in {y.made:.1f}s; B equals A: {y.agrees()})"
    )
    for label, t in concord.items():
        print(
            f"ratio {label:<7} : {best.wall / t.wall:>9.2f}x wall, {best.cpu / t.cpu:>9.2f}x CPU"
            f"  (Concord {label} rate / pycrdt apply rate)"
        )
    if pairs:
        side_by_side(work.ops, y, pairs)


def side_by_side(ops: list[Op], y: Pycrdt, pairs: int) -> None:
    """Concord's fold, its op-by-op apply and pycrdt's apply, one run each per pair, in an
    order that alternates from pair to pair: the ratio of each pair (CPU time) and their
    median. Runs far apart can meet the machine in different phases; runs side by side
    share one."""
    ways: dict[str, Callable[[list[Op]], object]] = {"fold": fold, "apply": apply_one_by_one}
    ratios: dict[str, list[float]] = {label: [] for label in ways}

    def ours() -> dict[str, Timing]:
        return {label: timed(functools.partial(way, ops)) for label, way in ways.items()}

    for i in range(pairs):
        if i % 2:  # every other pair, pycrdt first
            theirs = y.run()
            concord = ours()
        else:
            concord = ours()
            theirs = y.run()
        for label, t in concord.items():
            ratios[label].append(theirs.cpu / t.cpu)
    for label, values in ratios.items():
        listed = ", ".join(f"{r:.2f}x" for r in values)
        print(
            f"side by side {label:<7}: {listed} (median {statistics.median(values):.2f}x; "
            f"{pairs} pairs, CPU)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CRDT apply and merge throughput vs pycrdt")
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--concurrent", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="report the best of N runs")
    parser.add_argument(
        "--pycrdt-batch", type=int, default=100, help="sets per pycrdt transaction (update)"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=5,
        help="then time Concord and pycrdt side by side this often (0: not)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print cProfiles of both applies"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    gen = Generator(args.seed, args.entities, args.concurrent)
    work = gen.make(args.ops)
    check_valid(work.ops)
    ops, n = work.ops, len(work.ops)
    print(
        f"generated {n:,} ops over {args.entities:,} entities ({args.concurrent:.0%} "
        f"concurrent) in {time.perf_counter() - start:.1f}s; best of {args.repeat} runs each"
    )
    bare = best_of(args.repeat, lambda: timed(lambda: bare_lww(ops)))
    print(f"bare lww loop : {rate(n, bare)}  (reference floor)")
    apply = best_of(args.repeat, lambda: timed(lambda: fold(ops)))
    states = fold(ops)
    conflicted = sum(1 for s in states.values() for f in s.view().fields.values() if f.conflicted)
    print(f"concord fold  : {rate(n, apply)}  ({conflicted:,} conflicted fields at the end)")
    single = best_of(args.repeat, lambda: timed(lambda: apply_one_by_one(ops)))
    same = apply_one_by_one(ops) == states
    print(f"concord apply : {rate(n, single)}  (op by op in stream order; equals fold: {same})")
    merge, b_ops, agrees = concord_merge(ops, gen.devices, args.repeat)
    print(
        f"concord merge : {rate(b_ops, merge)}  (merging a replica of {b_ops:,} ops into one "
        f"holding the rest; equals fold: {agrees})"
    )
    report_pycrdt(
        work, args.repeat, args.pycrdt_batch, args.pairs, {"fold": apply, "apply": single}
    )
    if args.profile:
        print("profile of fold:", profile(fold, ops))
        print("profile of op-by-op apply:", profile(apply_one_by_one, ops))


if __name__ == "__main__":
    main()
