"""``as_of_seq`` replay equals applying exactly the first N events with crdt (invariant 4).

The reference is built from the ops as the test pushed them (not from the database):
sorted by the seq each was given, cut at N, applied with ``crdt.EntityState``.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import EntityState, Op
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from tests.conftest import TEST_SECRET

ENTITIES = ("a", "b", "c")
STEPS = st.tuples(
    st.sampled_from(ENTITIES),
    st.sampled_from(["title", "assignee", "pomodoros", "tag+", "tag-", "delete", "restore"]),
    st.integers(0, 3),  # value / element choice
    st.lists(st.booleans(), max_size=6),  # which earlier candidates go into pred
)


def _fits(earlier: dict[str, Any], kind: str, field: str | None, value: Any) -> bool:
    """May ``earlier`` appear in the pred of an op of this kind, field and value?"""
    if kind == "set":
        return bool(earlier["kind"] == "set" and earlier.get("field") == field)
    if kind == "remove":
        return bool(earlier["kind"] == "add" and earlier["value"] == value)
    if kind in ("delete", "restore"):
        return bool(earlier["kind"] in ("delete", "restore"))
    return False


def _history(steps: list[tuple[str, str, int, list[bool]]], space: str) -> list[dict[str, Any]]:
    """Valid raw ops: lamport rises, each pred names earlier fitting ops."""
    ops: list[dict[str, Any]] = []
    for i, (entity, what, choice, picks) in enumerate(steps):
        kind, field, value = {
            "title": ("set", "title", f"title {choice}"),
            "assignee": ("set", "assignee", None if choice == 0 else f"user{choice}"),
            "pomodoros": ("inc", "pomodoros", choice - 1),
            "tag+": ("add", "tags", f"tag{choice}"),
            "tag-": ("remove", "tags", f"tag{choice}"),
            "delete": ("delete", None, None),
            "restore": ("restore", None, None),
        }[what]
        candidates = [
            o["op_id"] for o in ops if o["entity_id"] == entity and _fits(o, kind, field, value)
        ]
        pred = [c for c, keep in zip(reversed(candidates), picks, strict=False) if keep]
        raw = op(space, entity_id=entity, kind=kind, field=field, value=value, lamport=i + 1)
        if pred:
            raw["pred"] = pred
        ops.append(raw)
    return ops


def _reference(
    ops: list[dict[str, Any]], seq_of: dict[str, int], n: int, device: str
) -> dict[str, EntityState]:
    states: dict[str, EntityState] = {}
    for raw in sorted(ops, key=lambda o: seq_of[o["op_id"]]):
        if seq_of[raw["op_id"]] > n:
            break
        state = states.setdefault(raw["entity_id"], EntityState.new("task", raw["entity_id"]))
        state.apply(
            Op(
                op_id=raw["op_id"],
                entity_type="task",
                entity_id=raw["entity_id"],
                kind=raw["kind"],
                field=raw.get("field"),
                value=raw.get("value"),
                pred=tuple(raw.get("pred", ())),
                lamport=raw["lamport"],
                device_id=device,
            )
        )
    return states


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(STEPS, min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 8), min_size=1, max_size=6),
    probes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
)
async def test_as_of_replay_equals_the_first_n_events(
    pool: asyncpg.Pool, steps: list[Any], cuts: list[int], probes: list[int]
) -> None:
    user, device = new_id(), new_id()
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as store:
        space = await store.create_space(name="h", creator_user_id=user, personal=True)
        ops = _history(steps, space)
        seq_of: dict[str, int] = {}
        start = 0
        for size in cuts * len(ops):  # pushes of varying sizes, each replaying its predecessor
            if start >= len(ops):
                break
            batch = ops[max(0, start - 1) : start + size]
            out = await store.append(user_id=user, device_id=device, ops=batch)
            for raw, result in zip(batch, out.results, strict=True):
                assert result.status in ("applied", "duplicate"), result
                assert result.seq is not None
                seq_of[raw["op_id"]] = result.seq
            start += size
        for n in probes:
            expected = _reference(ops, seq_of, n, device)
            states, seq = await store.replay_space(space, as_of_seq=n)
            assert seq == min(n, len(ops) + 1)
            got = {k[1]: v for k, v in states.items() if k[0] == "task"}
            assert got == expected
            for entity in ENTITIES:
                one, one_seq = await store.replay_entity(space, "task", entity, as_of_seq=n)
                assert one_seq == seq
                assert one == expected.get(entity)
                if one is not None:
                    assert one.view() == expected[entity].view()
