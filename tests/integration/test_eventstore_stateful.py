"""The event store against a model of it (tests/integration/eventstore_model.py), as a
Hypothesis state machine on real PostgreSQL.

Rules: pushes of valid ops of every kind (their preds drawn from what the model knows,
earlier ops of the same push included) and of invalid ones; replays of earlier pushes;
an op_id copied into another space; an op_id reused with another payload; several pushes
racing (``asyncio.gather``, two stores, one space or several); members added, re-roled
and removed. Every answer must be the model's (for racing pushes: the model's answer for
some serial order of them). After every step the store's log of each space, read back,
must equal the model's: seqs gapless, each op_id once, every acknowledged op at its seq.

Each example works on spaces and users of its own in one database made for the test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import dataclasses
import itertools
import json
import uuid
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

import asyncpg
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from core.errors import Conflict
from core.ports import AppendOutcome
from core.wire import Event, Limits, Role
from eventstore.postgres import PostgresEventStore
from tests.conftest import TEST_SECRET, Services, create_database, drop_database
from tests.integration.eventstore_model import (
    SERVER_DEVICE,
    Outcome,
    SpaceModel,
    Stored,
    commit,
    member_change,
    predict_push,
)
from tests.integration.stateful_ops import draw_ops, draw_replay_of, reused
from tests.property import profiles

T = TypeVar("T")

#: A small headroom, so that pushes beyond it are cheap to make.
LIMITS = Limits(lamport_headroom=1000)
MAX_SPACES = 4
ROLES: tuple[Role | None, ...] = (None, "reader", "editor", "owner")

#: Modest by default (the run stays within CI's budget), more under --hypothesis-profile
#: thorough; derandomized: the same examples on every run, so a failure reproduces. No
#: shrinking: every step talks to PostgreSQL, and shrinking a failure took minutes (the
#: failing example is reported whole, each step's pushes in the assertion message).
SETTINGS = settings(
    settings(),
    max_examples=20 if settings().max_examples <= profiles.CI_EXAMPLES else 300,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _seen(event: Event) -> tuple[Any, ...]:
    return (
        event.seq, event.op_id, event.entity_type, event.entity_id, event.kind, event.field,
        json.dumps(event.value, sort_keys=True), tuple(event.pred), event.lamport,
        event.user_id, event.device_id,
    )  # fmt: skip


def _modelled(event: Stored) -> tuple[Any, ...]:
    return (
        event.seq, event.op_id, event.entity_type, event.entity_id, event.kind, event.field,
        json.dumps(event.value, sort_keys=True), event.pred, event.lamport,
        event.user_id, event.device_id,
    )  # fmt: skip


def _answered(outcome: AppendOutcome) -> tuple[Any, ...]:
    results = tuple(
        (r.status, r.seq, r.error.code if r.error is not None else None) for r in outcome.results
    )
    return results, outcome.server_lamport


def _expected(outcome: Outcome) -> tuple[Any, ...]:
    return tuple((e.status, e.seq, e.code) for e in outcome.results), outcome.server_lamport


def _answered_id(raw: dict[str, Any]) -> str | None:
    """The op_id a result names (docs/protocol.md section 2): the canonical form of a UUID
    in any spelling, else the string as sent."""
    sent = raw.get("op_id")
    if not isinstance(sent, str):
        return None
    try:
        return str(uuid.UUID(sent))
    except ValueError:
        return sent


class StoreMachine(RuleBasedStateMachine):
    """One example: four users, up to four spaces, two stores on one pool."""

    loop: ClassVar[asyncio.AbstractEventLoop]
    stores: ClassVar[list[PostgresEventStore]]

    def __init__(self) -> None:
        super().__init__()
        self.users = [str(uuid.uuid4()) for _ in range(4)]
        self.devices = {u: [str(uuid.uuid4()), str(uuid.uuid4())] for u in self.users}
        self.spaces: dict[str, SpaceModel] = {}
        #: Earlier pushes: (the user who sent it, its ops).
        self.sent: list[tuple[str, list[dict[str, Any]]]] = []
        #: (space, op_id) -> seq of every op acknowledged applied or duplicate.
        self.acked: dict[tuple[str, str], int] = {}

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the stores' event loop, in this thread, to its end."""
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, timeout=60))

    # ------------------------------------------------------------------ spaces and members

    @initialize()
    def two_spaces(self) -> None:
        """Two spaces, each with an owner, an editor and a reader among the four users."""
        for owner, editor, reader in ((0, 1, 2), (1, 3, 0)):
            self._new_space(self.users[owner])
            space = self.spaces[list(self.spaces)[-1]]
            self._change(space, self.users[editor], "editor")
            self._change(space, self.users[reader], "reader")

    @precondition(lambda self: len(self.spaces) < MAX_SPACES)
    @rule(data=st.data())
    def new_space(self, data: st.DataObject) -> None:
        self._new_space(data.draw(st.sampled_from(self.users), label="creator"))

    def _new_space(self, creator: str) -> None:
        store = self.stores[0]
        space_id = self.run(store.create_space(name="s", creator_user_id=creator, personal=False))
        [first] = self.run(store.read(space_id, 0, 10))  # its op_id: the store's HMAC
        value = {"user_id": creator, "role": "owner", "previous_role": None, "by": creator}
        added = Stored(
            seq=1, op_id=first.op_id, entity_type="_member", entity_id=creator,
            kind="member_added", field=None, value=value, pred=(), lamport=0, user_id=None,
            device_id=SERVER_DEVICE,
        )  # fmt: skip
        self.spaces[space_id] = SpaceModel(space_id, {creator: "owner"}, [added])

    @rule(data=st.data())
    def change_member(self, data: st.DataObject) -> None:
        """Add, re-role or remove a member: the member event, nothing, or the last owner
        kept (``Conflict``), as the model says."""
        space = self.spaces[data.draw(st.sampled_from(list(self.spaces)), label="space")]
        user = data.draw(st.sampled_from(self.users), label="member")
        self._change(space, user, data.draw(st.sampled_from(ROLES), label="role"))

    def _change(self, space: SpaceModel, user: str, role: Role | None) -> None:
        by = next(u for u, r in space.members.items() if r == "owner")
        expected = member_change(space, user, role, by)
        try:
            event = self.run(
                self.stores[0].change_member(
                    space_id=space.space_id,
                    user_id=user,
                    role=role,
                    by=by,
                )
            )
        except Conflict:
            assert expected == "conflict", expected
            return
        assert expected != "conflict", f"the last owner left: {event}"
        if expected is None:
            assert event is None, event
            return
        assert event is not None, expected
        assert isinstance(expected, Stored)
        learnt = dataclasses.replace(expected, op_id=event.op_id)
        assert _seen(event) == _modelled(learnt)
        space.log.append(learnt)
        if role is None:
            del space.members[user]
        else:
            space.members[user] = role

    # ------------------------------------------------------------------ pushes

    def _push(self, user: str, raws: list[dict[str, Any]], device: str, store: int = 0) -> None:
        """Push and compare with the model's answer; then the model takes it in."""
        predicted = predict_push(self.spaces, user, device, raws, LIMITS.lamport_headroom)
        out = self.run(self.stores[store].append(user_id=user, device_id=device, ops=raws))
        assert _answered(out) == _expected(predicted), raws
        assert [r.op_id for r in out.results] == [_answered_id(raw) for raw in raws]
        self._take(out, predicted)
        self.sent.append((user, raws))

    def _take(self, out: AppendOutcome, predicted: Outcome) -> None:
        """The model takes in a push the store answered as predicted: its new events (the
        store's ``events`` must be exactly those) and its acknowledged op_ids."""
        assert [_seen(e) for e in out.events] == [_modelled(e) for e, _ in predicted.added]
        if out.space_id in self.spaces:
            commit(self.spaces[out.space_id], predicted)
        for result in out.results:
            if result.status in ("applied", "duplicate"):
                assert out.space_id is not None
                assert result.op_id is not None
                key = (out.space_id, str(uuid.UUID(result.op_id)))
                assert self.acked.setdefault(key, result.seq or 0) == result.seq

    def _writer(self, space: SpaceModel, data: st.DataObject) -> str:
        """Usually a member who may push; now and then anyone (a reader, a stranger)."""
        writers = [u for u, r in space.members.items() if r in ("owner", "editor")]
        anyone = data.draw(st.integers(0, 2), label="anyone") == 0
        return data.draw(st.sampled_from(self.users if anyone else writers), label="user")

    @rule(data=st.data())
    def push(self, data: st.DataObject) -> None:
        space = self.spaces[data.draw(st.sampled_from(list(self.spaces)), label="space")]
        user = self._writer(space, data)
        raws = draw_ops(data, space, self.spaces, LIMITS.lamport_headroom)
        device = data.draw(st.sampled_from(self.devices[user]), label="device")
        self._push(user, raws, device, data.draw(st.sampled_from([0, 1]), label="store"))

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """An earlier push again, by its sender or another user: stored ops answer
        ``duplicate`` with their original seqs, the others as the model says now."""
        original, raws = data.draw(st.sampled_from(self.sent), label="earlier push")
        user = data.draw(st.sampled_from([original, original, *self.users]), label="user")
        self._push(user, [dict(r) for r in raws], data.draw(st.sampled_from(self.devices[user])))

    @rule(data=st.data())
    def same_op_id_elsewhere(self, data: st.DataObject) -> None:
        """A stored op's op_id pushed into another space: unrelated there."""
        names = list(self.spaces)
        source = self.spaces[data.draw(st.sampled_from(names), label="from")]
        target = self.spaces[data.draw(st.sampled_from(names), label="to")]
        raw = draw_replay_of(data, source)
        if raw is None or source is target:
            return
        raw = {**raw, "space_id": target.space_id}
        raw.pop("pred", None)  # preds would name ops of the other space
        if raw["kind"] == "remove":
            raw["kind"] = "add"
        user = next(u for u, r in target.members.items() if r == "owner")
        self._push(user, [raw], self.devices[user][0])

    @rule(data=st.data())
    def reuse_op_id(self, data: st.DataObject) -> None:
        """A stored op's op_id with another payload: ``op_id_conflict``, the stored event
        unchanged (the invariant reads it back)."""
        space = self.spaces[data.draw(st.sampled_from(list(self.spaces)), label="space")]
        raw = draw_replay_of(data, space)
        if raw is None:
            return
        user = next(u for u, r in space.members.items() if r == "owner")
        self._push(user, [reused(raw)], self.devices[user][0])

    @rule(data=st.data())
    def racing(self, data: st.DataObject) -> None:
        """2-4 pushes at once through two stores, to one space or several, sometimes two
        of them carrying the same op: the answers are those of some serial order."""
        pushes: list[tuple[str, str, list[dict[str, Any]]]] = []
        count = data.draw(st.integers(2, 4), label="pushes")
        twice = data.draw(st.booleans(), label="one op in two pushes")
        for i in range(count):
            name = data.draw(st.sampled_from(list(self.spaces)), label="space")
            if twice and i == 1:  # the same space as the first push
                name = str(pushes[0][2][0]["space_id"])
            space = self.spaces[name]
            user = self._writer(space, data)
            raws = draw_ops(data, space, self.spaces, LIMITS.lamport_headroom, 3, racing=True)
            if twice and i == 1:
                raws.insert(data.draw(st.integers(0, len(raws))), dict(pushes[0][2][-1]))
            pushes.append((user, self.devices[user][i % 2], raws))
        outs = self.run(
            _gather(
                self.stores[i % 2].append(user_id=u, device_id=d, ops=r)
                for i, (u, d, r) in enumerate(pushes)
            )
        )
        by_space: dict[str | None, list[int]] = {}
        for i, out in enumerate(outs):
            by_space.setdefault(out.space_id, []).append(i)
        for members in by_space.values():
            self._serial_order([(pushes[i], outs[i]) for i in members])
        self.sent += [(u, r) for u, _, r in pushes]

    def _serial_order(
        self, racing: list[tuple[tuple[str, str, list[dict[str, Any]]], AppendOutcome]]
    ) -> None:
        """Find the order in which the model answers exactly as the store did; take the
        pushes in that order."""
        for order in itertools.permutations(racing):
            spaces = copy.deepcopy(self.spaces)
            predictions = []
            for (user, device, raws), out in order:
                predicted = predict_push(spaces, user, device, raws, LIMITS.lamport_headroom)
                if _answered(out) != _expected(predicted):
                    break
                if out.space_id in spaces:
                    commit(spaces[out.space_id], predicted)
                predictions.append((out, predicted))
            else:
                for out, predicted in predictions:
                    self._take(out, predicted)
                return
        raise AssertionError(f"no serial order gives these answers: {racing}")

    # ------------------------------------------------------------------ invariants

    @invariant()
    def the_log_is_the_models(self) -> None:
        for space in self.spaces.values():
            events = self.run(self.stores[1].read(space.space_id, 0, 100_000))
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), "gapless"
            ids = [e.op_id for e in events]
            assert len(set(ids)) == len(ids), "each op_id once"
            assert [_seen(e) for e in events] == [_modelled(e) for e in space.log]
            seq_of = dict(zip(ids, (e.seq for e in events), strict=True))
            for (space_id, op_id), seq in self.acked.items():
                if space_id == space.space_id:
                    assert seq_of.get(op_id) == seq, f"acknowledged {op_id} not at {seq}"


async def _gather(appends: Any) -> list[AppendOutcome]:
    return list(await asyncio.gather(*appends))


def test_the_store_answers_as_the_model(services: Services) -> None:
    # One thread runs both the machine's synchronous rules and the stores' event loop
    # (each rule runs its coroutines to their end on it), in a thread of its own since
    # pytest-asyncio keeps the main thread's loop. One thread, not two: CPython 3.11's
    # AST parser keeps its recursion depth in global state, and hypothesis parsing rule
    # sources in one thread while a traceback is formatted (which parses too) in another
    # raised "SystemError: AST constructor recursion depth mismatch" under load.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(_check_the_store, services.server_dsn).result()


def _check_the_store(server_dsn: str) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # this thread's: asyncpg's pool looks it up when made
    try:
        dsn = loop.run_until_complete(create_database(server_dsn))
        try:
            with contextlib.ExitStack() as closing:
                stack = contextlib.AsyncExitStack()
                closing.callback(lambda: loop.run_until_complete(stack.aclose()))
                pool = loop.run_until_complete(
                    stack.enter_async_context(asyncpg.create_pool(dsn, min_size=1, max_size=6))
                )
                stores = [
                    loop.run_until_complete(
                        stack.enter_async_context(
                            PostgresEventStore(pool, secret_key=TEST_SECRET, limits=LIMITS)
                        )
                    )
                    for _ in range(2)
                ]
                StoreMachine.loop, StoreMachine.stores = loop, stores
                run_state_machine_as_test(StoreMachine, settings=SETTINGS)
        finally:
            loop.run_until_complete(drop_database(server_dsn, dsn))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
