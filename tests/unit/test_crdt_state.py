"""Entity state: hand-written cases for each corner of docs/protocol.md section 3."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from crdt import (
    DEFAULT_SCHEMA,
    ApplyResult,
    EntityState,
    FieldView,
    Head,
    Op,
    decode_state,
    encode_state,
    fold,
)

TASK = DEFAULT_SCHEMA.entity_types["task"]
PHONE = "00000000-0000-4000-8000-0000000000f1"
LAPTOP = "00000000-0000-4000-8000-0000000000f2"


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def op(
    n: int,
    kind: str,
    field: str | None = None,
    value: Any = None,
    *,
    lamport: int,
    pred: tuple[int, ...] = (),
    device: str = PHONE,
    entity: str = "t-1",
) -> Op:
    return Op(
        op_id=uid(n),
        entity_type="task",
        entity_id=entity,
        kind=kind,
        field=field,
        value=value,
        pred=tuple(uid(p) for p in pred),
        lamport=lamport,
        device_id=device,
    )


def state_of(*ops: Op) -> EntityState:
    state = EntityState.new("task", "t-1")
    for o in ops:
        state.apply(o)
    return state


def read(*ops: Op) -> dict[str, Any]:
    return {k: v.value for k, v in state_of(*ops).view(TASK).fields.items()}


def assert_every_order_agrees(*ops: Op) -> EntityState:
    """Forward, backward and merged singletons all give one state."""
    forward = state_of(*ops)
    assert state_of(*reversed(ops)) == forward
    merged = EntityState.new("task", "t-1")
    for o in reversed(ops):
        merged.merge(state_of(o))
    assert merged == forward
    assert merged.view(TASK) == forward.view(TASK)
    return forward


def test_equal_lamports_on_two_devices_op_id_decides() -> None:
    a = op(2, "set", "title", "from phone", lamport=7, device=PHONE)
    b = op(1, "set", "title", "from laptop", lamport=7, device=LAPTOP)
    state = assert_every_order_agrees(a, b)
    title = state.view(TASK).fields["title"]
    assert title.value == "from phone"  # uid(2) > uid(1)
    assert title.conflicted is True
    assert title.heads == [
        Head(op_id=uid(2), value="from phone", device_id=PHONE, lamport=7),
        Head(op_id=uid(1), value="from laptop", device_id=LAPTOP, lamport=7),
    ]
    assert state.field_heads("title") == (uid(2), uid(1))


def test_greater_lamport_wins_over_greater_op_id() -> None:
    assert read(op(9, "set", "title", "a", lamport=3), op(1, "set", "title", "b", lamport=4)) == {
        "title": "b"
    }


def test_a_set_naming_the_head_replaces_it() -> None:
    state = state_of(
        op(1, "set", "title", "a", lamport=1),
        op(2, "set", "title", "b", lamport=2, pred=(1,)),
    )
    title = state.view(TASK).fields["title"]
    assert title == FieldView(
        value="b",
        heads=[Head(op_id=uid(2), value="b", device_id=PHONE, lamport=2)],
        conflicted=False,
    )


def test_a_superseded_set_arriving_late_never_becomes_a_head() -> None:
    first = op(1, "set", "title", "old", lamport=1)
    second = op(2, "set", "title", "new", lamport=2, pred=(1,))
    state = state_of(second)
    assert state.apply(first) == ApplyResult(applied=True, conflicted=False)
    assert state.field_heads("title") == (uid(2),)
    assert state == state_of(first, second)


def test_mv_shows_every_head_until_a_write_names_them_all() -> None:
    a = op(1, "set", "assignee", "ann", lamport=1)
    b = op(2, "set", "assignee", "bob", lamport=1, device=LAPTOP)
    c = op(3, "set", "assignee", None, lamport=2, device=LAPTOP)
    state = assert_every_order_agrees(a, b, c)
    assignee = state.view(TASK).fields["assignee"]
    assert assignee.value == [None, "bob", "ann"]
    assert assignee.conflicted is True
    resolve = op(4, "set", "assignee", "cat", lamport=3, pred=(1, 2, 3))
    assert state.apply(resolve) == ApplyResult(applied=True, conflicted=False)
    assignee = state.view(TASK).fields["assignee"]
    assert assignee.value == ["cat"]
    assert assignee.conflicted is False
    partial = op(5, "set", "assignee", "dan", lamport=2, pred=(1,), device=LAPTOP)
    assert state_of(a, b, partial).view(TASK).fields["assignee"].value == ["dan", "bob"]


def test_apply_reports_conflicts_for_the_metric() -> None:
    state = state_of(op(1, "set", "title", "a", lamport=1))
    assert state.apply(op(2, "set", "title", "b", lamport=1)) == (True, True)
    assert state.apply(op(2, "set", "title", "b", lamport=1)) == (False, False)
    assert state.apply(op(3, "inc", "pomodoros", 1, lamport=2)) == (True, False)


def test_remove_concurrent_with_add_add_wins() -> None:
    add1 = op(1, "add", "tags", "home", lamport=1, device=PHONE)
    add2 = op(2, "add", "tags", "home", lamport=2, device=LAPTOP)
    remove = op(3, "remove", "tags", "home", lamport=3, pred=(1,), device=PHONE)
    state = assert_every_order_agrees(add1, add2, remove)
    assert state.view(TASK).fields["tags"].value == ["home"]
    assert state.live_adds("tags", "home") == (uid(2),)
    blind = op(4, "remove", "tags", "work", lamport=1)
    concurrent = op(5, "add", "tags", "work", lamport=1, device=LAPTOP)
    assert read(blind, concurrent) == {"tags": ["work"]}


def test_remove_of_every_live_add_removes_the_element() -> None:
    add1 = op(1, "add", "tags", "home", lamport=1)
    add2 = op(2, "add", "tags", "home", lamport=2, device=LAPTOP)
    remove = op(3, "remove", "tags", "home", lamport=3, pred=(1, 2))
    assert_every_order_agrees(add1, add2, remove)
    assert read(add1, add2, remove) == {"tags": []}
    assert state_of(add1, add2, remove).live_adds("tags", "home") == ()


def test_remove_of_an_element_never_seen() -> None:
    assert read(op(1, "remove", "tags", "ghost", lamport=1)) == {"tags": []}
    # a remove that arrives before the add it names still removes it
    remove = op(2, "remove", "tags", "late", lamport=5, pred=(3,))
    add = op(3, "add", "tags", "late", lamport=4)
    state = state_of(remove)
    state.apply(add)
    assert state.view(TASK).fields["tags"].value == []
    assert state == state_of(add, remove)


def test_set_elements_are_ordered_integers_then_strings() -> None:
    ops = [op(i, "add", "tags", v, lamport=i) for i, v in enumerate(["b", 10, "a", -2, 3], 1)]
    assert read(*ops) == {"tags": [-2, 3, 10, "a", "b"]}
    assert state_of(*ops).live_adds("tags", 10) == (uid(2),)
    assert state_of(*ops).live_adds("tags", 10.0) == ()
    assert state_of(*ops).live_adds("nope", 10) == ()


def test_counters_sum_negative_deltas_once_each() -> None:
    incs = [
        op(1, "inc", "pomodoros", 5, lamport=1),
        op(2, "inc", "pomodoros", -7, lamport=2, device=LAPTOP),
        op(3, "inc", "pomodoros", -1_000_000, lamport=3),
    ]
    state = assert_every_order_agrees(*incs, incs[1])
    assert state.view(TASK).fields["pomodoros"] == FieldView(value=-1_000_002)
    twice = state.copy()
    twice.merge(state)
    assert twice.view(TASK).fields["pomodoros"].value == -1_000_002


def test_delete_concurrent_with_an_edit() -> None:
    delete = op(1, "delete", lamport=5, device=PHONE)
    edit = op(2, "set", "title", "edited offline", lamport=6, device=LAPTOP)
    state = assert_every_order_agrees(delete, edit)
    view = state.view(TASK)
    assert view.deleted is True
    assert view.edited_while_deleted is True
    assert view.fields["title"].value == "edited offline"
    earlier = op(3, "set", "title", "before", lamport=4, device=LAPTOP)
    assert state_of(delete, earlier).view(TASK).edited_while_deleted is False
    same_lamport = op(4, "inc", "pomodoros", 1, lamport=5, device=LAPTOP)
    assert state_of(delete, same_lamport).view(TASK).edited_while_deleted is True  # uid(4) > uid(1)


def test_restore_and_concurrent_lifecycle_ops() -> None:
    delete = op(1, "delete", lamport=1)
    restore = op(2, "restore", lamport=2, pred=(1,))
    edit = op(3, "set", "title", "x", lamport=3)
    state = assert_every_order_agrees(delete, restore, edit)
    assert state.view(TASK).deleted is False
    assert state.view(TASK).edited_while_deleted is False
    assert state.lifecycle_heads() == (uid(2),)
    assert state.deleted_by() is None
    concurrent_restore = op(4, "restore", lamport=1, device=LAPTOP)
    both = assert_every_order_agrees(delete, concurrent_restore)
    assert both.view(TASK).deleted is False  # (1, uid(4)) > (1, uid(1))
    assert both.lifecycle_heads() == (uid(4), uid(1))
    again = op(5, "delete", lamport=2, pred=(1, 4))
    assert state_of(delete, concurrent_restore, again).view(TASK).deleted is True
    late = state_of(again, delete)
    assert late.lifecycle_heads() == (uid(5),)


def test_server_and_unknown_kinds_are_held_but_change_nothing() -> None:
    fired = Op(
        op_id=uid(1),
        entity_type="task",
        entity_id="t-1",
        kind="reminder_fired",
        value={"reminder_id": uid(9)},
        lamport=4,
    )
    odd = Op(op_id=uid(2), entity_type="task", entity_id="t-1", kind="frobnicate", lamport=6)
    state = state_of(fired, odd)
    assert not state.has_client_events
    assert state.holds(uid(1))
    assert state.holds(uid(2))
    assert not state.holds(uid(3))
    assert state.last_lamport == 6
    assert state.view(TASK).fields == {}
    assert state.apply(fired) == (False, False)
    state.apply(op(3, "set", "title", "t", lamport=2))
    assert state.has_client_events
    assert state.last_lamport == 6
    assert state_of(op(4, "delete", lamport=1)).has_client_events


def test_field_ops_without_a_field_are_held_only() -> None:
    state = state_of(Op(op_id=uid(1), entity_type="task", entity_id="t-1", kind="set", lamport=3))
    assert state.holds(uid(1))
    assert not state.has_client_events
    assert state.last_lamport == 3


def test_view_without_a_spec_and_undeclared_fields() -> None:
    state = state_of(
        op(1, "set", "assignee", "ann", lamport=1),
        op(2, "inc", "pomodoros", 2, lamport=2),
        op(3, "add", "tags", "x", lamport=3),
        op(4, "set", "legacy", 1, lamport=4),
    )
    fields = state.view().fields
    assert fields["assignee"].value == "ann"  # lww without a spec
    assert fields["pomodoros"] == FieldView(value=2)
    assert fields["tags"] == FieldView(value=["x"])
    assert state.view(TASK).fields["legacy"].value == 1
    assert list(fields) == ["assignee", "legacy", "pomodoros", "tags"]


def test_a_declared_type_hides_ops_of_another_type() -> None:
    state = state_of(op(1, "set", "pomodoros", 3, lamport=1), op(2, "inc", "title", 1, lamport=2))
    assert state.view(TASK).fields == {}
    assert set(state.view().fields) == {"pomodoros", "title"}


def test_a_register_whose_sets_all_name_each_other_is_absent() -> None:
    a = op(1, "set", "title", "a", lamport=1, pred=(2,))
    b = op(2, "set", "title", "b", lamport=2, pred=(1,))
    state = assert_every_order_agrees(a, b)
    assert state.view(TASK).fields == {}
    assert state.field_heads("title") == ()


def test_a_pred_naming_itself_does_not_supersede_it() -> None:
    selfish = Op(
        op_id=uid(1),
        entity_type="task",
        entity_id="t-1",
        kind="set",
        field="title",
        value="me",
        pred=(uid(1),),
        lamport=1,
    )
    assert state_of(selfish).field_heads("title") == (uid(1),)


def test_preds_naming_other_fields_or_kinds_supersede_nothing() -> None:
    title = op(1, "set", "title", "t", lamport=1)
    add = op(2, "add", "tags", "x", lamport=1)
    stray = op(3, "set", "notes", "n", lamport=2, pred=(1, 2))
    state = assert_every_order_agrees(title, add, stray)
    assert read(title, add, stray) == {"title": "t", "tags": ["x"], "notes": "n"}
    wrong = op(4, "remove", "labels", "x", lamport=3, pred=(2,))
    assert_every_order_agrees(add, wrong)
    assert read(add, wrong)["tags"] == ["x"]
    assert state.field_heads("notes") == (uid(3),)


def test_merge_keeps_what_neither_side_superseded() -> None:
    a = op(1, "set", "title", "a", lamport=1)
    b = op(2, "set", "title", "b", lamport=2, pred=(1,))
    c = op(3, "set", "title", "c", lamport=2, device=LAPTOP, pred=(1,))
    left, right = state_of(a, b), state_of(a, c)
    left.merge(right)
    assert left.field_heads("title") == (uid(3), uid(2))
    assert left == state_of(a, b, c)
    only_b = state_of(b)  # b names a, which it has not seen
    only_a = state_of(a)
    only_a.merge(only_b)
    assert only_a.field_heads("title") == (uid(2),)
    assert only_a == state_of(a, b)


def test_merge_refuses_another_entity() -> None:
    with pytest.raises(ValueError, match="different entities"):
        state_of().merge(EntityState.new("task", "t-2"))


def test_copy_is_independent() -> None:
    state = state_of(op(1, "add", "tags", "x", lamport=1), op(2, "inc", "pomodoros", 1, lamport=1))
    copy = state.copy()
    copy.apply(op(3, "remove", "tags", "x", lamport=2, pred=(1,)))
    copy.apply(op(4, "inc", "pomodoros", 1, lamport=2))
    assert state.view(TASK).fields["tags"].value == ["x"]
    assert state.view(TASK).fields["pomodoros"].value == 1
    assert copy != state


def test_equality_and_repr() -> None:
    state = state_of(op(1, "set", "title", "a", lamport=1))
    assert state != "state"
    assert state != state_of()
    assert repr(state) == "EntityState('task', 't-1', ops=1)"
    with pytest.raises(TypeError):
        hash(state)


def test_fold_groups_by_entity() -> None:
    ops = [
        op(1, "set", "title", "a", lamport=1),
        op(2, "set", "title", "b", lamport=1, entity="t-2"),
        op(3, "set", "title", "c", lamport=2, entity="t-2", pred=(2,)),
    ]
    states = fold(ops)
    assert set(states) == {("task", "t-1"), ("task", "t-2")}
    assert states[("task", "t-2")].view(TASK).fields["title"].value == "c"
    assert states[("task", "t-2")].last_lamport == 2


def test_apply_all_applies_a_run_of_ops_like_apply() -> None:
    ops = [
        op(1, "set", "title", "a", lamport=1),
        op(2, "set", "title", "b", lamport=1, device=LAPTOP),
        op(3, "inc", "pomodoros", 2, lamport=2),
        op(1, "set", "title", "a", lamport=1),
    ]
    state = EntityState.new("task", "t-1")
    assert state.apply_all(ops) == ApplyResult(applied=False, conflicted=False)  # the last
    assert state == state_of(*ops)
    assert state.apply_all(ops[1:2] * 0) == (False, False)
    assert EntityState.new("task", "t-1").apply_all(ops[:2]) == (True, True)


def test_ops_and_the_maps_that_hold_them_stay_out_of_the_collectors_sight() -> None:
    # what keeps the collector's work per op small (docs/benchmarks.md, CRDT apply)
    state = state_of(
        op(1, "set", "title", "a", lamport=1),
        op(2, "inc", "pomodoros", 1, lamport=2),
        op(3, "add", "tags", "x", lamport=3),
    )
    assert not gc.is_tracked(op(4, "set", "title", ["a", {"b": 1}], lamport=4))
    assert not gc.is_tracked(state._seen)
    assert not any(gc.is_tracked(heads) for heads in state._regs.values())
    # counters and sets too, and so the state's maps of them
    assert not gc.is_tracked(state._counters["pomodoros"])
    assert not gc.is_tracked(state._sets["tags"])
    assert not gc.is_tracked(state._counters)
    assert not gc.is_tracked(state._sets)
    merged = state.copy()
    assert not gc.is_tracked(merged._counters)
    assert not gc.is_tracked(merged._sets)
    back = decode_state(encode_state(state))
    assert not gc.is_tracked(back._counters)
    assert not gc.is_tracked(back._sets)


def test_a_register_with_one_head_holds_the_head_itself() -> None:
    # what keeps a state small and `apply` quick (docs/benchmarks.md, CRDT apply): no
    # dict per register until it has two heads, none again once one set replaces both
    first = op(1, "set", "title", "a", lamport=1)
    second = op(2, "set", "title", "b", lamport=2, pred=(1,))
    state = state_of(first, second)
    assert state._regs["title"] is second
    assert state._pending is None
    rival = op(3, "set", "title", "c", lamport=2, pred=(1,), device=LAPTOP)
    assert state.apply(rival) == ApplyResult(applied=True, conflicted=True)
    held = state._regs["title"]
    assert isinstance(held, dict)
    assert held == {uid(2): second, uid(3): rival}
    both = op(4, "set", "title", "d", lamport=3, pred=(2, 3))
    assert state.apply(both) == ApplyResult(applied=True, conflicted=False)
    assert state._regs["title"] is both
    assert state == state_of(first, rival, second, both)


def test_the_pending_names_are_dropped_once_the_named_op_arrives() -> None:
    # a set naming an op not yet held leaves it pending; its arrival empties the map
    late = op(1, "set", "title", "a", lamport=1)
    later = op(2, "set", "title", "b", lamport=2, pred=(1,))
    state = state_of(later)
    assert state._pending == {uid(1): {("set", "title")}}
    assert state.apply(late) == ApplyResult(applied=True, conflicted=False)
    assert state._pending is None
    assert state._regs["title"] is later
