"""Hand-written vectors: one per merge rule and corner case of docs/protocol.md section 3.

Each function builds a `History` in a causal order, as devices would make it (a `pred`
names ops the device had seen, with lower lamports); the generator then lists the ops
shuffled. Ops whose op_ids matter (tie-breaks) name them explicitly.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.vectors.history import History

__all__ = ["CASES"]

LOW = "00000000-0000-4000-8000-00000000000a"
HIGH = "ffffffff-0000-4000-8000-00000000000b"
MID = "80000000-0000-4000-8000-00000000000c"


def lww_single_set() -> History:
    h = History("lww_single_set", "one set of an lww field: one head, not conflicted")
    h.op("set", field="title", value="Buy milk", lamport=1)
    return h


def lww_sequential_overwrite() -> History:
    h = History("lww_sequential_overwrite", "each set names the previous one: one head")
    a = h.op("set", field="title", value="one", lamport=1)
    b = h.op("set", field="title", value="two", lamport=2, dev=2, pred=(a,))
    h.op("set", field="title", value="three", lamport=3, pred=(b,))
    return h


def lww_concurrent_conflict() -> History:
    h = History("lww_concurrent_conflict", "two devices set a field without seeing each other")
    h.op("set", field="title", value="Buy milk", lamport=1, dev=1)
    h.op("set", field="title", value="Buy oat milk", lamport=1, dev=2)
    return h


def lww_tie_broken_by_op_id() -> History:
    h = History(
        "lww_tie_broken_by_op_id",
        "equal lamports: the greater op_id (as a string) wins, whoever wrote first",
    )
    h.op("set", field="title", value="written first, greater id", lamport=5, op_id_=HIGH)
    h.op("set", field="title", value="written second, lower id", lamport=5, dev=2, op_id_=LOW)
    h.op("set", field="notes", value="lower id, higher lamport", lamport=7, op_id_=LOW[:-1] + "d")
    h.op("set", field="notes", value="greater id, lower lamport", lamport=6, dev=2, op_id_=MID)
    return h


def lww_conflict_resolved() -> History:
    h = History("lww_conflict_resolved", "a set naming both heads resolves the conflict")
    a = h.op("set", field="title", value="Buy milk", lamport=1, dev=1)
    b = h.op("set", field="title", value="Buy oat milk", lamport=1, dev=2)
    h.op("set", field="title", value="Buy oat milk", lamport=2, dev=1, pred=(a, b))
    return h


def lww_written_without_resolving() -> History:
    h = History(
        "lww_written_without_resolving",
        "a set naming only the winning head keeps the field conflicted",
    )
    a = h.op("set", field="title", value="A", lamport=3, dev=1, op_id_=HIGH)
    h.op("set", field="title", value="B", lamport=3, dev=2, op_id_=LOW)
    h.op("set", field="title", value="A edited", lamport=4, dev=1, pred=(a,))
    return h


def lww_three_way_then_partial() -> History:
    h = History(
        "lww_three_way_then_partial",
        "three concurrent heads; a device that saw two resolves those two only",
    )
    a = h.op("set", field="title", value="a", lamport=1, dev=1)
    b = h.op("set", field="title", value="b", lamport=2, dev=2)
    h.op("set", field="title", value="c", lamport=1, dev=3)
    h.op("set", field="title", value="ab", lamport=3, dev=1, pred=(a, b))
    return h


def lww_value_types() -> History:
    h = History("lww_value_types", "booleans, nulls, timestamps, long and non-ASCII strings")
    d = h.op("set", field="done", value=False, lamport=1)
    h.op("set", field="done", value=True, lamport=2, pred=(d,))
    due = h.op("set", field="due_at", value="2026-11-23T10:00:00Z", lamport=1)
    h.op("set", field="due_at", value=None, lamport=2, dev=2, pred=(due,))
    h.op("set", field="remind_at", value="2026-01-01T00:00:00.5Z", lamport=3)
    h.op("set", field="list_id", value=None, lamport=1)
    h.op("set", field="notes", value='caf\u00e9 \U0001f600 \uffff\n\t"quoted"', lamport=4)
    h.op("set", field="position", value="a0V", lamport=5)
    return h


def mv_concurrent_values() -> History:
    h = History("mv_concurrent_values", "an mv field lists every head, greatest order key first")
    h.op("set", field="assignee", value="ana", lamport=2, dev=1)
    h.op("set", field="assignee", value="ben", lamport=4, dev=2)
    h.op("set", field="assignee", value=None, lamport=3, dev=3)
    return h


def mv_resolved() -> History:
    h = History("mv_resolved", "an mv set naming all heads leaves one value")
    a = h.op("set", field="assignee", value="ana", lamport=1, dev=1)
    b = h.op("set", field="assignee", value="ben", lamport=1, dev=2)
    h.op("set", field="assignee", value="carl", lamport=2, dev=2, pred=(a, b))
    return h


def counter_increments() -> History:
    h = History("counter_increments", "concurrent incs add up, negative deltas included")
    h.op("inc", field="pomodoros", value=1, lamport=1, dev=1)
    h.op("inc", field="pomodoros", value=5, lamport=1, dev=2)
    h.op("inc", field="pomodoros", value=-2, lamport=2, dev=1)
    h.op("inc", field="pomodoros", value=1_000_000, lamport=3, dev=3)
    return h


def counter_duplicates() -> History:
    h = History("counter_duplicates", "an inc delivered three times counts once")
    a = h.op("inc", field="pomodoros", value=3, lamport=1)
    h.again(a)
    h.op("inc", field="pomodoros", value=-1, lamport=2, dev=2)
    h.again(a)
    return h


def set_add_then_remove() -> History:
    h = History("set_add_then_remove", "a remove naming the only add: absent; the field reads []")
    a = h.op("add", field="tags", value="errand", lamport=1)
    h.op("remove", field="tags", value="errand", lamport=2, pred=(a,))
    return h


def set_add_wins() -> History:
    h = History("set_add_wins", "a remove cancels only the adds it saw: a concurrent add wins")
    a1 = h.op("add", field="tags", value="home", lamport=1, dev=1)
    h.op("add", field="tags", value="home", lamport=2, dev=2)
    h.op("remove", field="tags", value="home", lamport=2, dev=1, pred=(a1,))
    h.op("add", field="tags", value="work", lamport=1, dev=3)
    return h


def set_readd_after_remove() -> History:
    h = History("set_readd_after_remove", "an add after a remove makes the element present again")
    a = h.op("add", field="tags", value="x", lamport=1)
    h.op("remove", field="tags", value="x", lamport=2, pred=(a,))
    h.op("add", field="tags", value="x", lamport=3)
    return h


def set_remove_unseen() -> History:
    h = History("set_remove_unseen", "a remove that names no add changes nothing")
    h.op("remove", field="tags", value="never", lamport=1)
    h.op("add", field="tags", value="kept", lamport=1, dev=2)
    h.op("remove", field="tags", value="kept", lamport=2, dev=3)
    return h


def set_string_order() -> History:
    h = History(
        "set_string_order",
        "elements read in code point order: U+FFFF sorts before U+1F600 (not UTF-16 order)",
    )
    for n, tag in enumerate(["\U0001f600", "\uffff", "\u00e9", "Z", "a", "", "aa", "\ud7ff"]):
        h.op("add", field="tags", value=tag, lamport=n + 1, dev=n % 3 + 1)
    return h


def set_integer_elements() -> History:
    h = History("set_integer_elements", "integer elements read in ascending numeric order")
    adds = [
        h.op("add", "b-1", "numbers", v, lamport=i + 1, entity_type="board")
        for i, v in enumerate([10, -3, 2, 0, 9007199254740991, -9007199254740991])
    ]
    h.op("remove", "b-1", "numbers", 2, lamport=9, pred=(adds[2],), entity_type="board")
    return h


def board_shapes() -> History:
    h = History("board_shapes", "a number lww field, an mv of strings, a counter")
    s = h.op("set", "b-1", "score", 1.5, lamport=1, entity_type="board")
    h.op("set", "b-1", "score", -0.25, lamport=2, dev=2, pred=(s,), entity_type="board")
    h.op("set", "b-1", "owners", "ana", lamport=1, entity_type="board")
    h.op("set", "b-1", "owners", "ben", lamport=1, dev=2, entity_type="board")
    h.op("inc", "b-1", "votes", 7, lamport=3, entity_type="board")
    return h


def delete_simple() -> History:
    h = History("delete_simple", "a delete after an edit: deleted, fields kept, not edited")
    h.op("set", field="title", value="kept", lamport=1)
    h.op("delete", lamport=2)
    return h


def delete_then_restore() -> History:
    h = History("delete_then_restore", "a restore naming the delete: not deleted")
    h.op("set", field="title", value="back", lamport=1)
    d = h.op("delete", lamport=2)
    h.op("restore", lamport=3, dev=2, pred=(d,))
    return h


def edited_while_deleted() -> History:
    h = History(
        "edited_while_deleted",
        "a set with a greater order key than the winning delete: edited_while_deleted",
    )
    h.op("set", field="title", value="before", lamport=1)
    h.op("delete", lamport=2, dev=1)
    h.op("set", field="title", value="edited on the phone", lamport=3, dev=2)
    return h


def edited_while_deleted_kinds() -> History:
    h = History(
        "edited_while_deleted_kinds",
        "inc, add and remove count as edits after a delete; an edit before it does not",
    )
    h.op("set", "t-before", "title", "old", lamport=1)
    h.op("delete", "t-before", lamport=2)
    for n, (kind, field, value) in enumerate(
        [("inc", "pomodoros", 1), ("add", "tags", "x"), ("remove", "tags", "x")]
    ):
        entity = f"t-{kind}"
        h.op("delete", entity, lamport=4)
        h.op(kind, entity, field, value, lamport=5 + n, dev=2)
    return h


def edited_tie_with_delete() -> History:
    h = History(
        "edited_tie_with_delete",
        "an edit at the delete's lamport counts only with a greater op_id",
    )
    h.op("delete", "t-a", lamport=4, op_id_=MID)
    h.op("set", "t-a", "title", "greater id", lamport=4, dev=2, op_id_=HIGH)
    h.op("delete", "t-b", lamport=4, op_id_=MID[:-1] + "d")
    h.op("set", "t-b", "title", "lower id", lamport=4, dev=2, op_id_=LOW)
    return h


def concurrent_delete_restore() -> History:
    h = History(
        "concurrent_delete_restore",
        "concurrent lifecycle heads: the greatest order key decides deleted",
    )
    h.op("set", field="title", value="x", lamport=1)
    d1 = h.op("delete", lamport=2, dev=1)
    h.op("delete", lamport=5, dev=1, pred=(d1,))
    h.op("restore", lamport=4, dev=2, pred=(d1,))
    h.op("delete", "t-2", lamport=3, dev=1)
    h.op("restore", "t-2", lamport=6, dev=2)
    return h


def server_kinds_only() -> History:
    h = History(
        "server_kinds_only",
        "server and unknown kinds are held but change no field: no client event, no view",
    )
    h.op(
        "member_added",
        "dddddddd-0000-4000-8000-0000000000ff",
        value={"user_id": "u", "role": "owner", "previous_role": None, "by": "u"},
        lamport=0,
        entity_type="_member",
    )
    h.op(
        "reminder_fired",
        value={"reminder_id": "r", "fire_at": "2026-11-23T10:00:00Z", "lateness_ms": 12},
        lamport=3,
    )
    h.op("some_future_kind", "t-2", field="title", value="ignored", lamport=9)
    return h


def server_kinds_mixed() -> History:
    h = History(
        "server_kinds_mixed",
        "server events count in last_lamport, never in fields or edited_while_deleted",
    )
    h.op("set", field="remind_at", value="2026-11-23T10:00:00Z", lamport=1)
    h.op("delete", lamport=2)
    h.op(
        "reminder_skipped",
        value={"reminder_id": "r", "fire_at": "2026-11-23T10:00:00Z", "reason": "too_late"},
        lamport=8,
    )
    return h


def chain_out_of_order() -> History:
    h = History(
        "chain_out_of_order",
        "a chain of sets delivered in any order ends with its last one as the only head",
    )
    prev = h.op("set", field="title", value="v0", lamport=1)
    for n in range(1, 6):
        prev = h.op("set", field="title", value=f"v{n}", lamport=n + 1, dev=n % 2 + 1, pred=(prev,))
    side = h.op("set", field="notes", value="n0", lamport=1, dev=3)
    h.op("set", field="notes", value="n1", lamport=7, dev=3, pred=(side,))
    return h


def everything_twice() -> History:
    h = History("everything_twice", "every op of a mixed history delivered twice")
    a = h.op("set", field="title", value="a", lamport=1)
    b = h.op("set", field="title", value="b", lamport=1, dev=2)
    c = h.op("add", field="tags", value="t", lamport=2)
    d = h.op("remove", field="tags", value="t", lamport=3, dev=2, pred=(c,))
    e = h.op("inc", field="pomodoros", value=2, lamport=2, dev=2)
    f = h.op("delete", lamport=4)
    for op in (a, b, c, d, e, f):
        h.again(op)
    return h


def list_entity() -> History:
    h = History("list_entity", "a list entity beside tasks; entities are independent")
    n = h.op("set", "l-1", "name", "Groceries", lamport=1, entity_type="list")
    h.op("set", "l-1", "name", "Shopping", lamport=2, dev=2, pred=(n,), entity_type="list")
    h.op("set", "l-1", "archived", True, lamport=3, entity_type="list")
    h.op("set", "t-1", "list_id", "l-1", lamport=1)
    h.op("set", "l-1", "name", "Groceries!", lamport=2, dev=3, entity_type="list")
    return h


CASES: list[Callable[[], History]] = [
    lww_single_set,
    lww_sequential_overwrite,
    lww_concurrent_conflict,
    lww_tie_broken_by_op_id,
    lww_conflict_resolved,
    lww_written_without_resolving,
    lww_three_way_then_partial,
    lww_value_types,
    mv_concurrent_values,
    mv_resolved,
    counter_increments,
    counter_duplicates,
    set_add_then_remove,
    set_add_wins,
    set_readd_after_remove,
    set_remove_unseen,
    set_string_order,
    set_integer_elements,
    board_shapes,
    delete_simple,
    delete_then_restore,
    edited_while_deleted,
    edited_while_deleted_kinds,
    edited_tie_with_delete,
    concurrent_delete_restore,
    server_kinds_only,
    server_kinds_mixed,
    chain_out_of_order,
    everything_twice,
    list_entity,
]
"""Every hand-written vector, in the order the file lists them."""
