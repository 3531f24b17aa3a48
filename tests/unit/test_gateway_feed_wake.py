"""A space feed wakes its listeners whenever it learns of a newer head, also when it
learns it by reading the log rather than from a hint."""

from __future__ import annotations

from typing import Any

from core.wire import Event
from gateway.ws.feed import SpaceFeed

SPACE = "6b1f4a43-6a53-4e5e-9a58-2f2f0e4f1a01"


def event(seq: int) -> Event:
    return Event(
        seq=seq, op_id=f"00000000-0000-4000-8000-{seq:012d}", space_id=SPACE,
        entity_type="task", entity_id="t", kind="set", field="title", value="x", pred=[],
        lamport=seq, device_id="00000000-0000-4000-8000-000000000001", user_id=None,
        client_time=None, recorded_at="2030-01-01T00:00:00Z", schema_version=1,
    )  # fmt: skip


class Log:
    def __init__(self, head: int) -> None:
        self.head = head

    async def read(self, space_id: str, after: int, limit: int) -> list[Event]:
        return [event(s) for s in range(after + 1, min(self.head, after + limit) + 1)]


async def test_a_head_learnt_by_reading_wakes_the_sleeping_subscriptions() -> None:
    """Found by ``concord lab chaos --seed 19``: one subscription's read found the
    space's last event before its hint came, so the hint was no news and another
    subscription, asleep at the old head, was never woken: one device stayed an event
    short for good."""
    log = Log(head=3)
    feed = SpaceFeed(SPACE, log)  # type: ignore[arg-type]
    woken: list[Any] = []
    feed.listeners.add(lambda: woken.append(True))
    assert len(await feed.read_after(0, 100)) == 3
    log.head = 6  # seqs 4..6 committed
    feed.advance(5)  # the hints of 4 and 5 came; the one of 6 has not yet
    woken.clear()
    assert [e.seq for e in await feed.read_after(3, 100)] == [4, 5, 6]  # a reader finds 6
    assert woken, "the other subscriptions must learn of seq 6"
    woken.clear()
    feed.advance(6)  # the hint of 6, late: no news now
    assert not woken
