"""Seeded random histories: simulated devices edit what they have seen and sync.

Each device keeps the states of the ops it knows, makes ops the way a client does (a
`set`'s pred is its local heads, sometimes only the winner or nothing; a `remove`'s pred
the live adds it sees; lifecycle ops name the lifecycle heads; a Lamport clock that
observes everything), and now and then syncs with a server log. The history is the log
after a final sync, with a few ops delivered again.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from crdt import EntityState, LamportClock, Op, PredTarget, validate
from tests.vectors.history import SCHEMA, device

__all__ = ["random_history"]

TITLES = ["Buy milk", "Buy oat milk", "caf\u00e9", "\U0001f600 party", ""]
TAGS = ["home", "work", "\U0001f600", "\uffff", "\u00e9", "a"]
PEOPLE = ["ana", "ben", None]
NUMBERS = [-5, 0, 1, 2, 42]
SCORES = [None, 0.5, -2.25, 3, 1e21]

#: (entity_type, field, kind, values); one is picked per edit.
EDITS: list[tuple[str, str, str, list[Any]]] = [
    ("task", "title", "set", TITLES),
    ("task", "title", "set", TITLES),
    ("task", "done", "set", [True, False]),
    ("task", "due_at", "set", [None, "2026-11-23T10:00:00Z", "2027-02-28T23:59:59.123Z"]),
    ("task", "assignee", "set", PEOPLE),
    ("task", "assignee", "set", PEOPLE),
    ("task", "tags", "add", TAGS),
    ("task", "tags", "remove", TAGS),
    ("task", "tags", "add", TAGS),
    ("task", "pomodoros", "inc", [1, 2, -1, 25]),
    ("task", "", "delete", [None]),
    ("task", "", "restore", [None]),
    ("list", "name", "set", TITLES),
    ("board", "score", "set", SCORES),
    ("board", "owners", "set", PEOPLE[:2]),
    ("board", "numbers", "add", NUMBERS),
    ("board", "numbers", "remove", NUMBERS),
    ("board", "votes", "inc", [1, -3]),
]


class _Device:
    """What one simulated device knows: ops by op_id, their states, its clock."""

    def __init__(self, n: int) -> None:
        self.device_id = device(n)
        self.clock = LamportClock()
        self.known: dict[str, Op] = {}
        self.states: dict[tuple[str, str], EntityState] = {}

    def learn(self, op: Op) -> None:
        if op.op_id in self.known:
            return
        self.known[op.op_id] = op
        key = (op.entity_type, op.entity_id)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = EntityState(*key)
        state.apply(op)
        self.clock.observe(op.lamport)

    def edit(self, rng: random.Random, entity_id: str) -> Op:
        entity_type, field, kind, values = rng.choice(EDITS)
        value = rng.choice(values)
        state = self.states.get((entity_type, entity_id))
        pred: tuple[str, ...] = ()
        if state is not None:
            if kind == "set":
                heads = state.field_heads(field)
                style = rng.random()  # mostly resolve; sometimes edit the winner or write blind
                pred = heads if style < 0.7 else heads[:1] if style < 0.85 else ()
            elif kind == "remove":
                pred = state.live_adds(field, value)
            elif kind in ("delete", "restore"):
                pred = state.lifecycle_heads()
        op = Op(
            op_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            entity_type=entity_type,
            entity_id=entity_id,
            kind=kind,
            field=field or None,
            value=value,
            pred=pred,
            lamport=self.clock.tick(),
            device_id=self.device_id,
        )
        _check_valid(op, self.known)
        self.learn(op)
        return op


def _check_valid(op: Op, known: dict[str, Op]) -> None:
    """Vectors hold only ops a server would store: run docs/protocol.md's checks on each."""
    targets = {
        p: PredTarget(
            op_id=t.op_id,
            entity_type=t.entity_type,
            entity_id=t.entity_id,
            kind=t.kind,
            field=t.field,
            value=t.value,
            lamport=t.lamport,
        )
        for p in op.pred
        if (t := known.get(p)) is not None
    }
    top = max((o.lamport for o in known.values()), default=0)
    violation = validate(op, SCHEMA, targets, top)
    if violation is not None:
        raise AssertionError(f"generated an invalid op ({violation.message}): {op}")


def random_history(seed: int) -> list[Op]:
    """One history: 2 to 4 devices, 1 to 3 entity ids, 3 to 18 edits, in causal order."""
    rng = random.Random(seed)
    devices = [_Device(n + 1) for n in range(rng.randint(2, 4))]
    entity_ids = [f"e-{n}" for n in range(rng.randint(1, 3))]
    log: list[Op] = []
    for _ in range(rng.randint(3, 18)):
        dev = rng.choice(devices)
        if rng.random() < 0.25:  # sync: push what the log lacks, pull what it has
            stored = {op.op_id for op in log}
            log.extend(op for op in dev.known.values() if op.op_id not in stored)
            for op in log:
                dev.learn(op)
        dev.edit(rng, rng.choice(entity_ids))
    stored = {op.op_id for op in log}
    for dev in devices:
        log.extend(op for op in dev.known.values() if op.op_id not in stored)
        stored.update(dev.known)
    for _ in range(rng.randint(0, 3)):  # redelivery
        log.append(rng.choice(log))
    return log
