"""The SDK's replica and local store, without a server: pred, lamport, rejection, restart."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import pytest

from client.faults import Backoff, FlakyLink
from client.replica import Replica
from client.store import LocalStore
from core.wire import Event

SPACE = str(uuid.uuid4())
DEVICE = str(uuid.uuid4())
PEER = str(uuid.uuid4())


def event(
    seq: int,
    op_id: str,
    *,
    kind: str = "set",
    field: str | None = "title",
    value: object = "x",
    lamport: int = 1,
) -> Event:
    return Event(
        seq=seq,
        op_id=op_id,
        space_id=SPACE,
        entity_type="task",
        entity_id="t",
        kind=kind,
        field=field,
        value=value,
        pred=[],
        lamport=lamport,
        device_id=PEER,
        user_id=None,
        recorded_at="2026-01-01T00:00:00Z",
        schema_version=1,
    )


def test_set_pred_names_the_field_heads_and_lamport_passes_everything_seen() -> None:
    replica = Replica(DEVICE)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    replica.apply_events([event(1, a, lamport=7), event(2, b, lamport=9)])  # two heads
    op = replica.make_op(SPACE, "task", "t", "set", "title", "mine")
    assert sorted(op.pred) == sorted([a, b])
    assert op.lamport == 10  # max(own, seen) + 1
    replica.add_pending(op)
    view = replica.view(SPACE, "task", "t")
    assert view is not None
    assert view.fields["title"].value == "mine"
    assert not view.fields["title"].conflicted


def test_remove_pred_is_the_live_adds_of_that_element_and_add_has_none() -> None:
    replica = Replica(DEVICE)
    add1 = replica.make_op(SPACE, "task", "t", "add", "tags", "x")
    replica.add_pending(add1)
    assert add1.pred == []
    add2 = replica.make_op(SPACE, "task", "t", "add", "tags", "y")
    replica.add_pending(add2)
    remove = replica.make_op(SPACE, "task", "t", "remove", "tags", "x")
    assert remove.pred == [add1.op_id]
    inc = replica.make_op(SPACE, "task", "t", "inc", "pomodoros", 2)
    assert inc.pred == []


def test_delete_and_restore_pred_are_the_lifecycle_heads() -> None:
    replica = Replica(DEVICE)
    replica.add_pending(replica.make_op(SPACE, "task", "t", "set", "title", "x"))
    delete = replica.make_op(SPACE, "task", "t", "delete", None, None)
    assert delete.pred == []
    replica.add_pending(delete)
    restore = replica.make_op(SPACE, "task", "t", "restore", None, None)
    assert restore.pred == [delete.op_id]
    replica.add_pending(restore)
    view = replica.view(SPACE, "task", "t")
    assert view is not None
    assert not view.deleted


def test_a_rejected_op_disappears_from_the_local_state() -> None:
    replica = Replica(DEVICE)
    good = replica.make_op(SPACE, "task", "t", "set", "title", "kept")
    replica.add_pending(good)
    replica.acknowledge([good.op_id])
    bad = replica.make_op(SPACE, "task", "t", "set", "done", "not a boolean")
    replica.add_pending(bad)
    other = replica.make_op(SPACE, "task", "t", "add", "tags", "still here")
    replica.add_pending(other)
    view = replica.view(SPACE, "task", "t")
    assert view is not None
    assert "done" in view.fields
    replica.reject([bad.op_id])
    view = replica.view(SPACE, "task", "t")
    assert view is not None
    assert "done" not in view.fields
    assert view.fields["tags"].value == ["still here"]
    assert view.fields["title"].value == "kept"
    assert list(replica.pending) == [other.op_id]


def test_server_kinds_are_kept_but_change_no_field() -> None:
    replica = Replica(DEVICE)
    replica.apply_events([event(1, str(uuid.uuid4()))])
    fired = event(2, str(uuid.uuid4()), kind="reminder_fired", field=None, value={"x": 1})
    replica.apply_events([fired])
    view = replica.view(SPACE, "task", "t")
    assert view is not None
    assert set(view.fields) == {"title"}
    assert replica.view(SPACE, "task", "nothing") is None


async def test_the_store_keeps_queue_cursor_states_and_rejections(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    store = LocalStore(path)
    snap = await store.open()
    assert snap.queue == []
    assert snap.cursors == {}
    replica = Replica(DEVICE)
    ops = [replica.make_op(SPACE, "task", f"t{i}", "set", "title", str(i)) for i in range(3)]
    for op in ops:
        await store.enqueue(op, replica.clock.value)
        replica.add_pending(op)
    rows = replica.acknowledge([ops[0].op_id])
    await store.settle([ops[0].op_id], [(ops[1], "type_mismatch", "no")], rows)
    await store.apply_events(SPACE, 5, replica.apply_events([event(5, str(uuid.uuid4()))]))
    await store.put_meta({"device_id": DEVICE})
    await store.close()

    again = LocalStore(path)
    snap = await again.open()
    assert [op.op_id for op in snap.queue] == [ops[2].op_id]
    assert snap.cursors == {SPACE: 5}
    assert [(r.op.op_id, r.code) for r in snap.rejected] == [(ops[1].op_id, "type_mismatch")]
    assert snap.meta["lamport"] == "3"
    assert snap.meta["device_id"] == DEVICE
    restored = Replica(DEVICE, lamport=int(snap.meta["lamport"]))
    restored.load(snap.states, snap.queue)
    assert restored.view(SPACE, "task", "t0") is not None  # acknowledged: in the states
    assert restored.view(SPACE, "task", "t2") is not None  # queued: on top
    assert restored.view(SPACE, "task", "t1") is None  # rejected: nowhere
    assert restored.make_op(SPACE, "task", "t9", "set", "title", "z").lamport == 4
    assert stat_mode(path) == 0o600
    await again.close()


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_backoff_is_jittered_exponential_and_capped() -> None:
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(12)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(delays[:1]) <= 0.5
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next() <= 0.5


@pytest.mark.parametrize(("drops", "cuts"), [(0, 0), (2, 1)])
def test_flaky_link_budgets_run_out(drops: int, cuts: int) -> None:
    link = FlakyLink(drop_results=drops, cut_after_send=cuts)
    assert sum(link.take_drop() for _ in range(5)) == drops
    assert sum(link.take_cut() for _ in range(5)) == cuts


def test_a_push_takes_every_queued_op_of_the_oldest_ops_space_in_order() -> None:
    """Writes interleaved over spaces go out a space at a time, in full batches (they
    went out one per push when only the run at the head of the queue was taken)."""
    replica = Replica(DEVICE)
    other = str(uuid.uuid4())
    made = []
    for i in range(10):
        for space in (SPACE, other):
            op = replica.make_op(space, "task", f"t-{i}", "set", "title", f"v{i}")
            replica.add_pending(op)
            made.append(op)
    first = replica.next_batch(limit=8, budget=1_000_000)
    assert [op.op_id for op in first] == [op.op_id for op in made if op.space_id == SPACE][:8]
    replica.acknowledge(op.op_id for op in first)
    second = replica.next_batch(limit=100, budget=1_000_000)
    assert [op.op_id for op in second] == [op.op_id for op in made if op.space_id == other]
    assert len(replica.next_batch(limit=1, budget=1)) == 1  # the first op always goes


async def test_an_acknowledgement_never_stores_an_older_state_over_newer_events(
    tmp_path: Path,
) -> None:
    """Found by ``concord lab chaos --quick --seed 7``: a push result and an ``events``
    message handled back to back. The acknowledgement's state was written one loop turn
    late, over the newer state the events had stored with their cursor; after a restart
    the device lacked a peer's increment for good (its cursor was past it)."""
    from client.engine import SyncEngine
    from client.state import DeviceConfig
    from core.wire import Events, OpResult, PushResult

    path = tmp_path / "device.db"
    store = LocalStore(path)
    await store.open()
    replica = Replica(DEVICE)
    engine = SyncEngine(
        base_url="http://127.0.0.1:9", replica=replica, store=store, session=None,  # type: ignore[arg-type]
        config=DeviceConfig(), faults=FlakyLink(), cursors={}, rejected=[],
    )  # fmt: skip
    own = replica.make_op(SPACE, "task", "t", "inc", "pomodoros", 2)
    await store.enqueue(own, own.lamport)
    replica.add_pending(own)
    answer = PushResult(
        batch_id="b", server_lamport=9, results=[OpResult(op_id=own.op_id, status="applied", seq=2)]
    )
    peer = event(1, str(uuid.uuid4()), kind="inc", field="pomodoros", value=3, lamport=1)
    await asyncio.gather(
        engine._settle(None, [own], answer),  # type: ignore[arg-type]
        engine._on_events(Events(space_id=SPACE, events=[peer], head=2)),
    )
    await store.close()

    again = LocalStore(path)
    snapshot = await again.open()
    await again.close()
    reopened = Replica(DEVICE)
    reopened.load(snapshot.states, snapshot.queue)
    view = reopened.view(SPACE, "task", "t")
    assert view is not None
    assert snapshot.cursors == {SPACE: 1}
    assert view.fields["pomodoros"].value == 5  # both increments, as the cursor promises


async def test_a_stop_that_races_a_wake_up_is_not_lost(tmp_path: Path) -> None:
    """Found by ``concord lab chaos --quick --seed 7``: closing a device whose writer was
    woken in the same loop turn hung for ever. ``asyncio.wait_for`` (Python 3.11)
    returned the wake-up and dropped the cancellation, so the writer went on waiting
    and ``stop()`` waited for it."""
    import time

    from client.engine import SyncEngine
    from client.state import DeviceConfig

    store = LocalStore(tmp_path / "device.db")
    await store.open()
    engine = SyncEngine(
        base_url="http://127.0.0.1:9", replica=Replica(DEVICE), store=store, session=None,  # type: ignore[arg-type]
        config=DeviceConfig(), faults=FlakyLink(), cursors={}, rejected=[],
    )  # fmt: skip
    engine._link_expires_at = time.time() + 600
    idle = asyncio.create_task(engine._idle(None))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # waiting for work
    engine.wake.set()
    idle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await idle
    await store.close()
