"""The pure parts of ``concord lab chaos``: the seeded fault schedule, and the checker's
judgement on made-up records (the e2e test shows it on real runs)."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

from client import Acknowledged, RejectedOp
from core.wire import Operation
from lab.chaos.checker import (
    Facts,
    Verdict,
    check_acknowledged,
    check_counters,
    check_membership,
)
from lab.chaos.model import Received, Sim, User
from lab.chaos.run import server_lines_of
from lab.chaos.schedule import KINDS, make_schedule

SPACE = str(uuid.uuid4())


def test_a_seed_gives_one_schedule_with_every_fault_kind_in_time_order() -> None:
    one = make_schedule(19, 120.0)
    assert one == make_schedule(19, 120.0)
    assert one != make_schedule(20, 120.0)
    assert set(KINDS) <= {f.kind for f in one}
    assert [f.at for f in one] == sorted(f.at for f in one)
    assert all(0 < f.at < 120.0 and f.seconds > 0 for f in one)
    assert len(make_schedule(1, 30.0)) == len(KINDS)


def op(kind: str = "inc", value: object = 2) -> Operation:
    return Operation(
        op_id=str(uuid.uuid4()), space_id=SPACE, entity_type="task", entity_id="t-1",
        kind=kind, field="pomodoros", value=value, pred=[], lamport=1,
    )  # fmt: skip


def sim(user: User) -> Sim:
    return Sim(index=0, user=user, path=Path("unused.db"), gateway="gateway-a", refresh_early=True)


def facts(**overrides: object) -> Facts:
    base: dict[str, object] = {
        "replay": {},
        "op_counts": Counter(),
        "op_seq": {},
        "heads": {},
        "members": {},
        "membership": {},
    }
    base.update(overrides)
    return Facts(**base)  # type: ignore[arg-type]


def test_an_acknowledged_op_missing_or_twice_in_the_log_fails() -> None:
    device = sim(User("u0", "u0@example.com", user_id="u"))
    stored, lost = op(), op()
    device.acked = {o.op_id: Acknowledged(o, "applied", 1) for o in (stored, lost)}
    verdict = check_acknowledged([device], facts(op_counts=Counter({stored.op_id: 1})))
    assert not verdict.holds
    assert "1 lost" in verdict.detail
    twice = check_acknowledged(
        [device], facts(op_counts=Counter([stored.op_id] * 2 + [lost.op_id]))
    )
    assert not twice.holds
    assert "1 duplicated" in twice.detail
    fine = check_acknowledged([device], facts(op_counts=Counter([stored.op_id, lost.op_id])))
    assert fine.holds


def test_a_refused_op_found_stored_fails_unless_access_was_lost() -> None:
    device = sim(User("u0", "u0@example.com", user_id="u"))
    refused = op()
    device.rejected = {refused.op_id: RejectedOp(refused, "invalid_op", "", "")}
    stored = facts(op_counts=Counter([refused.op_id]))
    assert not check_acknowledged([device], stored).holds
    device.rejected = {refused.op_id: RejectedOp(refused, "not_found", "", "")}
    assert check_acknowledged([device], stored).holds


def test_events_after_a_removal_fail_membership_and_a_readdition_allows_them() -> None:
    user = User("u0", "u0@example.com", user_id="u")
    device = sim(user)
    history = {(SPACE, "u"): [(10.0, 1, "member_added"), (20.0, 5, "member_removed")]}
    device.received = [Received(SPACE, 4, "set", 15.0), Received(SPACE, 5, "member_removed", 21)]
    assert check_membership([device], facts(membership=history)).holds
    device.received.append(Received(SPACE, 6, "set", 22.0))
    assert not check_membership([device], facts(membership=history)).holds
    history[(SPACE, "u")].append((21.5, 7, "member_added"))  # added back: history again
    assert check_membership([device], facts(membership=history)).holds
    device.received.append(Received(SPACE, 1, "set", 5.0))  # before ever being a member
    assert not check_membership([device], facts(membership=history)).holds


def test_a_counter_must_equal_its_acknowledged_increments() -> None:
    device = sim(User("u0", "u0@example.com", user_id="u"))
    a, b = op(value=2), op(value=3)
    device.acked = {o.op_id: Acknowledged(o, "applied", 1) for o in (a, b)}
    key = (SPACE, "task", "t-1")
    right = {key: {"deleted": False, "fields": {"pomodoros": (5, None)}}}
    assert check_counters([device], facts(replay=right)).holds
    wrong = {key: {"deleted": False, "fields": {"pomodoros": (7, None)}}}
    assert not check_counters([device], facts(replay=wrong)).holds


def test_a_write_refused_for_a_server_fault_fails_the_queue_property() -> None:
    from unittest.mock import Mock

    from lab.chaos.checker import check_queues

    device = sim(User("u0", "u0@example.com", user_id="u"))
    good, dropped = op(), op()
    device.made = {good.op_id: good, dropped.op_id: dropped}
    device.acked = {good.op_id: Acknowledged(good, "applied", 1)}
    device.rejected = {dropped.op_id: RejectedOp(dropped, "invalid_op", "", "")}
    device.device = Mock(pending=list, rejected=list)
    assert check_queues([device]).holds
    device.rejected = {dropped.op_id: RejectedOp(dropped, "internal", "", "")}
    verdict = check_queues([device])
    assert not verdict.holds
    assert "1 refused for a server fault" in verdict.detail
    device.rejected = {}
    assert "1 vanished" in check_queues([device]).detail


def test_a_failing_verdict_brings_the_server_lines_of_its_references(tmp_path: Path) -> None:
    ref, other = uuid.uuid4().hex, uuid.uuid4().hex
    logged = f'{{"event": "internal error", "reference": "reference {ref}", "traceback": "..."}}'
    (tmp_path / "gateway-a.log").write_text(
        f'{logged}\n{{"event": "internal error", "reference": "reference {other}"}}\n'
        '{"event": "push"}\n'
    )
    (tmp_path / "projector.log").write_text("nothing here\n")
    dropped = (
        f"1 refused for a server fault; e.g. u1-d1 x (internal: internal error; reference {ref})"
    )
    failing = Verdict("queues-accounted", False, dropped)
    lines = server_lines_of([failing, Verdict("converged", True, f"reference {other}")], tmp_path)
    assert lines[1] == "== server log lines of the references above"
    assert lines[2:] == [f"gateway-a.log: {logged}"]
    assert server_lines_of([Verdict("queues-accounted", True, dropped)], tmp_path) == []
    assert server_lines_of([failing], tmp_path / "elsewhere")[2:] == [
        "(none: the logs hold no line naming them)"
    ]
