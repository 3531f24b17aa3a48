"""After COMMIT, one place (gateway/committed.py): the announcer hands committed events
to this gateway's feeds at once and publishes hints off the caller's path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgspec
import structlog

from core.events import HINT_BYTES, MembershipChange, Names, SpaceHint, space_hint
from core.ports import Handler
from core.wire import Event
from gateway.committed import Announcer, membership_change
from tests.unit.ws_events import SPACE, USER, event


class Bus:
    """A bus whose publish waits until ``release`` is set (a slow or stuck broker)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.release = asyncio.Event()

    async def publish(self, subject: str, payload: bytes) -> None:
        await self.release.wait()
        self.sent.append((subject, payload))

    async def subscribe(self, subject: str, handler: Handler) -> object:
        return object()

    async def unsubscribe(self, token: object) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True


class Local:
    def __init__(self) -> None:
        self.events: list[tuple[str, list[int]]] = []
        self.changes: list[MembershipChange] = []

    def committed(self, space_id: str, events: Sequence[Event], committed_at: float) -> None:
        self.events.append((space_id, [e.seq for e in events]))

    def member_changed(self, change: MembershipChange) -> None:
        self.changes.append(change)


async def test_local_feeds_get_events_at_once_and_hints_never_hold_the_caller() -> None:
    bus, local = Bus(), Local()
    announcer = Announcer(bus, "p")
    announcer.local = local
    await announcer.start()
    try:
        announcer.committed(SPACE, [event(1), event(2)])
        announcer.committed(SPACE, [event(3)])
        assert local.events == [(SPACE, [1, 2]), (SPACE, [3])], "handed over synchronously"
        await asyncio.sleep(0.05)
        assert bus.sent == [], "the broker is stuck, and nobody waited for it"
        bus.release.set()
        for _ in range(100):
            if bus.sent:
                break
            await asyncio.sleep(0.01)
        assert bus.sent, "published by the announcer's own task, not only at close"
    finally:
        await announcer.close()
    hints = [(s, msgspec.json.decode(p, type=SpaceHint)) for s, p in bus.sent]
    assert [(s, h.first_seq, h.last_seq) for s, h in hints] == [(Names("p").space(SPACE), 1, 3)]
    assert [e.seq for e in hints[0][1].events] == [1, 2, 3], "the events ride along"


async def test_a_merged_hint_with_a_gap_carries_no_events() -> None:
    """Hints of one space queued together merge; they carry the events only while every
    seq of the range is held (a gap: commits of another process in between)."""
    bus = Bus()
    bus.release.set()
    announcer = Announcer(bus, "p")
    announcer.committed(SPACE, [event(1)])
    announcer.committed(SPACE, [event(3)])
    await announcer.flush()
    [hint] = [msgspec.json.decode(p, type=SpaceHint) for _, p in bus.sent]
    assert (hint.first_seq, hint.last_seq, hint.events) == (1, 3, [])


async def test_a_removal_ends_local_subscriptions_and_is_published() -> None:
    bus, local = Bus(), Local()
    bus.release.set()
    announcer = Announcer(bus, "p")
    announcer.local = local
    announcer.member_changed(event(7, "member_removed", value={"user_id": USER}))
    await announcer.flush()
    change = MembershipChange(space_id=SPACE, user_id=USER, role=None, seq=7)
    assert local.changes == [change]
    assert local.events == [(SPACE, [7])]
    subjects = [s for s, _ in bus.sent]
    assert subjects == [Names("p").space(SPACE), Names("p").membership(SPACE)]
    assert msgspec.json.decode(bus.sent[1][1], type=MembershipChange) == change


async def test_the_fault_hook_publishes_nothing_but_still_feeds_this_gateway() -> None:
    bus, local = Bus(), Local()
    bus.release.set()
    announcer = Announcer(bus, "p", publish=False)
    announcer.local = local
    announcer.committed(SPACE, [event(1)])
    announcer.member_changed(event(2, "member_role_changed", value={"role": "reader"}))
    await announcer.flush()
    assert bus.sent == []
    assert local.events == [(SPACE, [1]), (SPACE, [2])]
    assert [c.role for c in local.changes] == ["reader"]


def test_a_hint_too_large_for_its_events_carries_only_the_seqs() -> None:
    """Events that would make the hint large (NATS refuses payloads over its limit, and
    the hint would be lost whole) are left for the gateways to read."""
    small = [event(1), event(2)]
    _, payload = space_hint("p", SPACE, 1, 2, 0.0, small)
    assert [e.seq for e in msgspec.json.decode(payload, type=SpaceHint).events] == [1, 2]
    big = [event(seq, value="x" * 60_000) for seq in (1, 2)]
    _, payload = space_hint("p", SPACE, 1, 2, 0.0, big)
    assert len(payload) <= HINT_BYTES
    hint = msgspec.json.decode(payload, type=SpaceHint)
    assert (hint.first_seq, hint.last_seq, hint.events) == (1, 2, [])


async def test_local_feeds_are_told_when_the_events_were_committed() -> None:
    """``committed_at`` is the COMMIT's wall-clock time: feeds measure delivery from it."""
    times: list[float] = []

    class Timed(Local):
        def committed(self, space_id: str, events: Sequence[Event], committed_at: float) -> None:
            times.append(committed_at)

    announcer = Announcer(Bus(), "p", publish=False)
    announcer.local = Timed()
    before = time.time()
    announcer.committed(SPACE, [event(1)])
    assert len(times) == 1
    assert before <= times[0] <= time.time()


async def test_a_hint_the_bus_refuses_is_logged_and_the_rest_still_go() -> None:
    class Refusing(Bus):
        async def publish(self, subject: str, payload: bytes) -> None:
            if subject == Names("p").space(SPACE):
                raise ConnectionError("broker gone")
            self.sent.append((subject, payload))

    bus = Refusing()
    announcer = Announcer(bus, "p")
    with structlog.testing.capture_logs() as logs:
        announcer.member_changed(event(4, "member_removed", value={"user_id": USER}))
        await announcer.flush()
    assert [s for s, _ in bus.sent] == [Names("p").membership(SPACE)]
    assert [(x["event"], x["log_level"], x["subject"], x["error"]) for x in logs] == [
        ("hint not published", "warning", Names("p").space(SPACE), "broker gone")
    ]


async def test_closing_twice_is_harmless() -> None:
    bus = Bus()
    bus.release.set()
    announcer = Announcer(bus, "p")
    await announcer.start()
    await announcer.close()
    announcer.committed(SPACE, [event(1)])
    await announcer.close()  # no task left to stop; what was queued is still published
    assert [s for s, _ in bus.sent] == [Names("p").space(SPACE)]


def test_a_removal_is_a_removal_whatever_its_value_says() -> None:
    """A member event's change: a ``member_removed`` has no role even if its value
    names one; a role that is not text, or a value that is not an object, is no role."""
    removed = membership_change(event(5, "member_removed", value={"role": "editor"}))
    assert (removed.role, removed.seq, removed.user_id, removed.space_id) == (None, 5, USER, SPACE)
    changed = membership_change(event(6, "member_role_changed", value={"role": "reader"}))
    assert changed.role == "reader"
    assert membership_change(event(7, "member_role_changed", value={"role": 3})).role is None
    assert membership_change(event(8, "member_role_changed", value=["reader"])).role is None
