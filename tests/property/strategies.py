"""Hypothesis strategies: random schemas, and op histories made by simulated devices.

Devices edit what they have seen (preds are their local heads), push and pull through a
server log, and go offline for stretches; the log they build is in a causal (seq) order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from crdt import (
    MAX_SAFE_INT,
    EntityState,
    EntityTypeSpec,
    FieldSpec,
    FieldType,
    LamportClock,
    Op,
    Schema,
)

ACTIONS = ("edit",) * 6 + ("push", "pull", "sync", "toggle")
TIMESTAMPS = ("2026-11-23T10:00:00Z", "2026-01-01T00:00:00.5Z", "1999-12-31T23:59:59.999999Z")


def op_id_for(n: int) -> str:
    """A canonical UUID whose order scrambles creation order (op_ids decide lamport ties)."""
    return str(uuid.UUID(int=(n * 0x9E3779B97F4A7C15F39CC0605CEDC835 + 0x1234) % 2**128))


def device_id_for(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


def _all_field_specs() -> list[FieldSpec]:
    """Every field shape worth testing, with small limits so that tests reach them."""
    specs = [
        FieldSpec(type="counter", value="integer"),
        FieldSpec(type="counter", value="integer", max_abs=3),
        FieldSpec(type="set", value="string"),
        FieldSpec(type="set", value="string", max_length=2),
        FieldSpec(type="set", value="integer"),
    ]
    register_types: tuple[FieldType, ...] = ("lww", "mv")
    for ftype in register_types:
        for nullable in (False, True):
            specs += [
                FieldSpec(type=ftype, value="string", nullable=nullable),
                FieldSpec(type=ftype, value="string", nullable=nullable, max_length=3),
                FieldSpec(type=ftype, value="boolean", nullable=nullable),
                FieldSpec(type=ftype, value="timestamp", nullable=nullable),
                FieldSpec(type=ftype, value="integer", nullable=nullable),
                FieldSpec(type=ftype, value="integer", nullable=nullable, max_abs=1),
                FieldSpec(type=ftype, value="number", nullable=nullable),
                FieldSpec(type=ftype, value="number", nullable=nullable, max_abs=2),
            ]
    return specs


FIELD_SPECS = _all_field_specs()
field_specs = st.sampled_from(FIELD_SPECS)


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    """A schema of one or two entity types with one to four fields each."""
    names = draw(
        st.lists(st.sampled_from(["task", "list", "note"]), min_size=1, max_size=2, unique=True)
    )
    types = {}
    for name in names:
        fields = draw(st.lists(field_specs, min_size=1, max_size=4))
        types[name] = EntityTypeSpec(fields={f"f{i}": f for i, f in enumerate(fields)})
    return Schema(version=1, entity_types=types)


def _within(candidates: list[Any], bound: int | None) -> list[Any]:
    """The candidates within ±bound, and the bound itself on both sides."""
    if bound is None:
        return candidates
    kept = [v for v in candidates if abs(v) <= bound]
    return [*kept, bound, -bound]


def value_pool(spec: FieldSpec) -> list[Any]:
    """Valid values for a field, the limits included; `number` includes aliases like 1.0."""
    kind = spec.value
    pool: list[Any]
    if spec.type == "counter":
        pool = _within([1, -1, 2, -3, 7], spec.max_abs)
    elif kind == "string":
        top = spec.max_length or 6
        pool = ["a", "b", "", "c" * top, "bb"[:top]]
    elif kind == "boolean":
        pool = [True, False]
    elif kind == "timestamp":
        pool = list(TIMESTAMPS)
    elif kind == "integer":
        pool = _within([0, 1, 2, -5, MAX_SAFE_INT], spec.max_abs)
    else:
        pool = _within([1, 1.0, 2.5, 0, -3, 1e9, -0.0], spec.max_abs)
    if spec.nullable:
        pool.append(None)
    return pool


Step = tuple[int, str, int, int, int, bool]
STEP_RANGE = 6 * len(ACTIONS) * 4 * 5 * 8 * 2
STEP_BYTES = 3


def decode_step(x: int) -> Step:
    """Unpack one number into a step; 0 is the simplest (device 0 edits)."""
    x %= STEP_RANGE
    x, device = divmod(x, 6)
    x, action = divmod(x, len(ACTIONS))
    x, entity = divmod(x, 4)
    x, field_n = divmod(x, 5)
    x, value = divmod(x, 8)
    return (device, ACTIONS[action], entity, field_n, value, bool(x % 2))


@dataclass
class Device:
    """A simulated device: its clock, what it holds, and its queue of unpushed ops."""

    n: int
    clock: LamportClock = field(default_factory=LamportClock)
    states: dict[tuple[str, str], EntityState] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    outbox: list[Op] = field(default_factory=list)
    online: bool = True

    def receive(self, op: Op) -> None:
        if op.op_id in self.held:
            return
        self.held.add(op.op_id)
        self.clock.observe(op.lamport)
        key = (op.entity_type, op.entity_id)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = EntityState.new(*key)
        state.apply(op)

    def state(self, key: tuple[str, str]) -> EntityState:
        return self.states.get(key) or EntityState.new(*key)


@dataclass
class History:
    """A schema and the ops of one space in server-log (causal) order."""

    schema: Schema
    ops: list[Op]


class Simulation:
    """Plays steps: devices edit, push to and pull from a server log, go offline."""

    def __init__(self, schema: Schema, devices: int, entities_per_type: int) -> None:
        self.schema = schema
        self.devices = [Device(n) for n in range(devices)]
        self.entities = [
            (t, f"{t}-{i}") for t in schema.entity_types for i in range(entities_per_type)
        ]
        self.log: list[Op] = []
        self.made = 0

    def play(self, step: Step) -> None:
        dev_n, action, ent_n, field_n, value_n, flag = step
        dev = self.devices[dev_n % len(self.devices)]
        if action == "toggle":
            dev.online = not dev.online
        elif action == "edit":
            self.edit(dev, self.entities[ent_n % len(self.entities)], field_n, value_n, flag)
        elif dev.online:
            if action in ("push", "sync"):
                self.push(dev)
            if action in ("pull", "sync"):
                self.pull(dev)

    def push(self, dev: Device) -> None:
        self.log.extend(dev.outbox)
        dev.outbox.clear()

    def pull(self, dev: Device) -> None:
        for op in self.log:
            dev.receive(op)

    def finish(self) -> list[Op]:
        """Every device comes back online and pushes what it still holds."""
        for dev in self.devices:
            self.push(dev)
        return self.log

    def edit(
        self, dev: Device, key: tuple[str, str], field_n: int, value_n: int, flag: bool
    ) -> None:
        fields = self.schema.entity_types[key[0]].fields
        names = sorted(fields)
        state = dev.state(key)
        base: dict[str, Any] = {"entity_type": key[0], "entity_id": key[1]}
        if field_n % (len(names) + 1) == len(names):
            kind = "delete" if flag else "restore"
            op = self.make(dev, base, kind=kind, pred=state.lifecycle_heads())
        else:
            name = names[field_n % len(names)]
            spec = fields[name]
            pool = value_pool(spec)
            value = pool[value_n % len(pool)]
            base.update(field=name, value=value)
            if spec.type in ("lww", "mv"):
                op = self.make(dev, base, kind="set", pred=state.field_heads(name))
            elif spec.type == "counter":
                op = self.make(dev, base, kind="inc")
            elif flag:
                op = self.make(dev, base, kind="remove", pred=state.live_adds(name, value))
            else:
                op = self.make(dev, base, kind="add")
        dev.outbox.append(op)
        dev.receive(op)

    def make(self, dev: Device, base: dict[str, Any], **kw: Any) -> Op:
        self.made += 1
        return Op(
            op_id=op_id_for(self.made),
            lamport=dev.clock.tick(),
            device_id=device_id_for(dev.n),
            **base,
            **kw,
        )


@st.composite
def realistic_histories(draw: st.DrawFn, min_steps: int = 6, max_steps: int = 60) -> History:
    """Ops from 2..6 devices that edit what they have seen and sync now and then.

    The steps come from one binary draw (three bytes a step): Hypothesis's cost is per draw,
    and a byte string still shrinks towards fewer and simpler steps.
    """
    schema = draw(schemas())
    sim = Simulation(schema, draw(st.integers(2, 6)), draw(st.integers(1, 2)))
    n = draw(st.integers(min_steps, max_steps), label="steps") * STEP_BYTES
    raw = draw(st.binary(min_size=n, max_size=n))
    for i in range(0, len(raw) - STEP_BYTES + 1, STEP_BYTES):
        sim.play(decode_step(int.from_bytes(raw[i : i + STEP_BYTES], "big")))
    return History(schema, sim.finish())
