"""Shared helpers of the projector tests (this module holds no tests of its own).

It is named ``test_projector_*`` so that it sits with the files the projector owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import nats
from hypothesis import strategies as st

from core.natsbus import NatsBus
from crdt import EntityState, LamportClock, Op, encode_state
from eventstore.chain import payload_digest
from eventstore.postgres import PostgresEventStore
from eventstore.push import Checked, Push
from eventstore.testing import new_id, op
from projector.stream import Names, decode_log_message
from projector.verify import verify


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 20.0, interval: float = 0.05
) -> None:
    """Wait until ``check()`` is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


async def new_space(store: PostgresEventStore) -> tuple[str, str]:
    """A fresh space and its owner (seq 1 is the owner's member_added)."""
    owner = new_id()
    space = await store.create_space(name="p", creator_user_id=owner, personal=False)
    return space, owner


def wire(space_id: str, o: Op) -> dict[str, Any]:
    """A crdt Op as the raw wire dict a device pushes."""
    raw: dict[str, Any] = {
        "op_id": o.op_id,
        "space_id": space_id,
        "entity_type": o.entity_type,
        "entity_id": o.entity_id,
        "kind": o.kind,
        "lamport": o.lamport,
        "pred": list(o.pred),
    }
    if o.field is not None:
        raw["field"] = o.field
    if o.kind not in ("delete", "restore"):
        raw["value"] = o.value
    return raw


async def push(
    store: PostgresEventStore, user: str, device: str, ops: Sequence[dict[str, Any]]
) -> None:
    """Append ops and insist every one was stored."""
    outcome = await store.append(user_id=user, device_id=device, ops=list(ops))
    bad = [r for r in outcome.results if r.status == "rejected"]
    assert not bad, bad


async def append_unchecked(
    store: PostgresEventStore,
    user: str,
    space: str,
    *,
    entity_id: str,
    value: Any = None,
    value_json: bytes | None = None,
    field: str = "title",
    lamport: int = 1,
) -> int:
    """Store one ``set`` through the append path with no op check (as an older server
    did); its seq. ``value_json``, when given, is stored as the value's text."""
    device = new_id()
    raw = msgspec.json.encode(value) if value_json is None else value_json
    event = Op(
        op_id=new_id(),
        entity_type="task",
        entity_id=entity_id,
        kind="set",
        field=field,
        value=value,
        lamport=lamport,
        device_id=device,
    )
    digest = payload_digest(event.op_id, space, "task", entity_id, "set", field, raw, (), lamport)
    outcome = await store.committer.submit(
        Push(
            user_id=user,
            device_id=device,
            space_id=space,
            echo_ids=[event.op_id],
            items=[Checked(event, None, None, raw, digest)],
        )
    )
    seq = outcome.results[0].seq
    assert seq is not None, outcome.results
    return seq


async def increments(
    store: PostgresEventStore, space: str, user: str, count: int, *, entities: int = 10
) -> None:
    """``count`` counter increments (deltas 1..3) over a few tasks, in pushes of 200."""
    device = new_id()
    batch: list[dict[str, Any]] = []
    for i in range(count):
        batch.append(
            op(
                space,
                entity_id=f"t-{i % entities}",
                kind="inc",
                field="pomodoros",
                value=1 + i % 3,
                lamport=i + 1,
            )
        )
        if len(batch) == 200:
            await push(store, user, device, batch)
            batch = []
    if batch:
        await push(store, user, device, batch)


async def head(pool: asyncpg.Pool, space: str) -> int:
    return int(await pool.fetchval("SELECT head FROM spaces WHERE space_id = $1", space))


async def checkpoint(pool: asyncpg.Pool, space: str) -> int:
    seq = await pool.fetchval("SELECT seq FROM projector_checkpoints WHERE space_id = $1", space)
    return int(seq or 0)


async def caught_up(pool: asyncpg.Pool, spaces: Iterable[str], within: float = 30.0) -> None:
    spaces = list(spaces)

    async def check() -> bool:
        return all([await checkpoint(pool, s) == await head(pool, s) for s in spaces])

    await eventually(check, within)


async def read_model(pool: asyncpg.Pool, space: str) -> dict[tuple[str, str], bytes]:
    rows = await pool.fetch(
        "SELECT entity_type, entity_id, state FROM entity_states WHERE space_id = $1", space
    )
    return {(r[0], r[1]): bytes(r[2]) for r in rows}


async def assert_matches_replay(
    pool: asyncpg.Pool, store: PostgresEventStore, spaces: Iterable[str]
) -> None:
    """Every entity of the spaces equals the store's replay, and verify finds nothing."""
    for space in spaces:
        replayed, seq = await store.replay_space(space)
        assert await checkpoint(pool, space) == seq
        expected = {k: encode_state(v, settled=True) for k, v in replayed.items()}
        assert await read_model(pool, space) == expected
    differences = [d for d in await verify(pool) if d.space_id in set(spaces)]
    assert differences == []


def counter_of(state: EntityState) -> Any:
    field = state.view().fields.get("pomodoros")
    return None if field is None else field.value


def seqs_of_message(data: bytes, headers: dict[str, str] | None) -> list[int]:
    """The seqs a log message holds, checked against its message id
    (``<space_id>:<first>-<last>``): a run of consecutive events of one space."""
    events = decode_log_message(data)
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert len({e.space_id for e in events}) == 1
    assert headers is not None
    assert headers["Nats-Msg-Id"] == Names.msg_id(events[0].space_id, seqs[0], seqs[-1])
    return seqs


async def stream_seqs(nats_url: str, names: Names, space: str, expect: int) -> list[int]:
    """The seqs of ``space`` stored in the log stream, message after message (read with
    an ephemeral consumer), until ``expect`` or the stream's end."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(names.log_subject(space), stream=names.stream)
        seqs: list[int] = []
        while len(seqs) < expect:
            try:
                msgs = await sub.fetch(min(500, expect - len(seqs)), timeout=2)
            except TimeoutError:
                break
            for m in msgs:
                seqs.extend(seqs_of_message(m.data, m.headers))
        await sub.unsubscribe()
        return seqs
    finally:
        await nc.close()


async def delete_stream(nats_url: str, names: Names) -> None:
    """Remove this run's stream from the shared NATS server."""
    nc = await nats.connect(nats_url)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(names.stream)
    finally:
        await nc.close()


def uuid_of(value: str) -> uuid.UUID:
    return uuid.UUID(value)


# --------------------------------------------------------------------------- histories

TIMES = ("2030-01-01T09:00:00Z", "2026-11-23T10:00:00.5Z", None)
#: (entity type, field or None, kind, values) on the default schema.
EDITS: tuple[tuple[str, str | None, str, tuple[Any, ...]], ...] = (
    ("task", "title", "set", ("milk", "bread", "")),
    ("task", "done", "set", (True, False)),
    ("task", "remind_at", "set", TIMES),
    ("task", "due_at", "set", TIMES),
    ("task", "list_id", "set", ("l-0", None)),
    ("task", "assignee", "set", ("ann", "bob", None)),
    ("task", "tags", "add", ("x", "y")),
    ("task", "tags", "remove", ("x", "y")),
    ("task", "pomodoros", "inc", (1, -2, 5)),
    ("task", None, "delete", (None,)),
    ("task", None, "restore", (None,)),
    ("list", "name", "set", ("home", "work")),
    ("list", "archived", "set", (True, False)),
    ("list", None, "delete", (None,)),
)
Step = tuple[int, str, int, int, int]


@dataclass
class Device:
    """A simulated device: its clock, what it has seen, and its unpushed ops."""

    device_id: str
    clock: LamportClock = field(default_factory=LamportClock)
    states: dict[tuple[str, str], EntityState] = field(default_factory=dict)
    outbox: list[Op] = field(default_factory=list)

    def receive(self, o: Op) -> None:
        self.clock.observe(o.lamport)
        key = (o.entity_type, o.entity_id)
        self.states.setdefault(key, EntityState.new(*key)).apply(o)


class Simulation:
    """Devices edit what they have seen (preds are their local heads), push to and pull
    from a server log; the log is therefore in a causal order, like seqs."""

    def __init__(self, devices: int) -> None:
        self.devices = [Device(str(uuid.UUID(int=i + 1))) for i in range(devices)]
        self.log: list[Op] = []

    def play(self, step: Step) -> None:
        dev_n, action, entity_n, edit_n, value_n = step
        dev = self.devices[dev_n % len(self.devices)]
        if action == "push":
            self.log.extend(dev.outbox)
            dev.outbox.clear()
        elif action == "pull":
            for o in self.log:
                dev.receive(o)
        else:
            entity_type, name, kind, values = EDITS[edit_n % len(EDITS)]
            value = values[value_n % len(values)]
            state = dev.states.get((entity_type, f"{entity_type}-{entity_n}"))
            state = state or EntityState.new(entity_type, f"{entity_type}-{entity_n}")
            if kind == "set":
                pred = state.field_heads(name or "")
            elif kind == "remove":
                pred = state.live_adds(name or "", value)
            elif kind in ("delete", "restore"):
                pred = state.lifecycle_heads()
            else:
                pred = ()
            made = Op(
                op_id=str(uuid.uuid4()),
                entity_type=entity_type,
                entity_id=state.entity_id,
                kind=kind,
                field=name,
                value=value,
                pred=pred,
                lamport=dev.clock.tick(),
                device_id=dev.device_id,
            )
            dev.outbox.append(made)
            dev.receive(made)

    def finish(self) -> list[Op]:
        for dev in self.devices:
            self.play((self.devices.index(dev), "push", 0, 0, 0))
        return self.log


steps = st.tuples(
    st.integers(0, 3),
    st.sampled_from(("edit",) * 5 + ("push", "pull")),
    st.integers(0, 2),
    st.integers(0, len(EDITS) - 1),
    st.integers(0, 2),
)


@st.composite
def histories(draw: st.DrawFn) -> list[Op]:
    """Ops of 2..4 devices on the default schema, in server (causal) order."""
    sim = Simulation(draw(st.integers(2, 4)))
    for step in draw(st.lists(steps, min_size=5, max_size=60)):
        sim.play(step)
    return sim.finish()


def titled_state(entity_type: str, entity_id: str) -> bytes:
    """The encoded state of an entity whose title was set once, to its id: for rows a
    test writes straight into the read model's table."""
    state = EntityState(entity_type, entity_id)
    state.apply(
        Op(
            op_id=new_id(),
            entity_type=entity_type,
            entity_id=entity_id,
            kind="set",
            field="title",
            value=entity_id,
            lamport=1,
        )
    )
    return encode_state(state)


@contextlib.asynccontextmanager
async def connected_bus(url: str, names: Names, name: str) -> AsyncIterator[NatsBus]:
    """A connected bus under ``names``' prefix; its stream is deleted afterwards."""
    bus = NatsBus(url, prefix=names.prefix, name=name)
    try:
        await bus.start()
        assert await bus.wait_connected(10)
        yield bus
    finally:
        await bus.close()
        await delete_stream(url, names)
