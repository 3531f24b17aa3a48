"""The outbox relay's edges on real PostgreSQL and NATS, written against the survivors of
its mutation target (``make mutation MUTATION_ARGS=relay``, docs/development.md): the
run loop's back-off, a stream deleted under the relay, a space without a cursor row,
an event too large for any message, and the ack inbox's bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NatsClient

import projector.relay
from core.natsbus import NatsBus
from core.settings import Settings
from eventstore.postgres import PostgresEventStore
from projector.relay import Acks, Range, RefusedError, Relay, RelayFailed, plan
from projector.stream import Names, ensure_stream
from tests.conftest import TEST_SECRET, own_prefix
from tests.integration.test_projector_support import (
    append_unchecked,
    connected_bus,
    delete_stream,
    eventually,
    head,
    increments,
    new_space,
    stream_seqs,
)

A, B = uuid.UUID(int=1), uuid.UUID(int=2)


@pytest.fixture(scope="module")
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def _cursor(pool: asyncpg.Pool, space: str) -> int | None:
    seq = await pool.fetchval("SELECT published_seq FROM outbox_cursors WHERE space_id = $1", space)
    return None if seq is None else int(seq)


async def _outbox_heads(pool: asyncpg.Pool, space: str) -> list[int]:
    rows = await pool.fetch("SELECT head FROM outbox WHERE space_id = $1 ORDER BY head", space)
    return [r[0] for r in rows]


async def _alone(pool: asyncpg.Pool, spaces: list[str]) -> None:
    """Other tests' outbox rows (same database) are not this relay's business here."""
    await pool.execute("DELETE FROM outbox WHERE NOT (space_id = ANY($1::uuid[]))", spaces)


# ---------------------------------------------------------------------------- run loop


class _Sleeps:
    """``asyncio`` as ``projector.relay`` sees it, but ``sleep`` records how long the
    run loop asked to wait and returns at once (the loop's clock, not the services)."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(0)


async def test_the_run_loop_backs_off_on_failures_and_waits_as_its_cycles_say(
    pool: asyncpg.Pool,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failed cycle doubles the wait (from ``interval``, at most 5 s) and is logged; a
    cycle that publishes or finds nothing resets it; after a cycle that took everything
    the loop waits ``coalesce``, after one that stopped at a bound not at all."""
    sleeps = _Sleeps()
    monkeypatch.setattr(projector.relay, "asyncio", sleeps)
    names = Names(own_prefix(settings, "l"))
    relay = Relay(pool, NatsBus(settings.nats_url or ""), names, interval=1.0, coalesce=0.3)
    # each cycle: an error to raise, or (events published, stopped at a bound)
    script: list[Exception | tuple[int, bool]] = [
        RuntimeError("boom 1"),  # waits 2 (interval doubled)
        RuntimeError("boom 2"),  # 4
        RuntimeError("boom 3"),  # 5 (8, capped)
        RuntimeError("boom 4"),  # 5
        (0, False),  # nothing to do: interval, and the back-off starts again
        RuntimeError("boom 5"),  # 2
        (3, False),  # took everything: coalesce
        RuntimeError("boom 6"),  # 2: a cycle that published reset the back-off too
        (3, True),  # stopped at a bound: at once
        (0, False),  # interval
    ]
    cycles = 0

    async def scripted() -> int:
        nonlocal cycles
        cycles += 1
        if not script:
            raise asyncio.CancelledError
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        count, relay.behind = step
        return count

    relay.relay_once = scripted  # type: ignore[method-assign]
    with (
        caplog.at_level(logging.WARNING, logger="concord.projector.relay"),
        pytest.raises(asyncio.CancelledError),
    ):
        await relay.run()
    assert cycles == 11
    assert sleeps.asked == [2.0, 4.0, 5.0, 5.0, 1.0, 2.0, 0.3, 2.0, 1.0]
    assert [r.getMessage() for r in caplog.records if r.name == "concord.projector.relay"] == [
        f"relay cycle failed (will retry): boom {i}" for i in range(1, 7)
    ]


# ------------------------------------------------------------------ stream and cursors


async def test_a_stream_deleted_under_the_relay_is_made_again_and_nothing_is_skipped(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay makes its stream once, not every cycle. Deleted behind its back, the
    server answers every publish with an empty 503 status (no stream listens): that is
    no ack, so the cursor and the outbox rows stay, and the cycle fails naming it. The
    run loop then makes the stream again and publishes what the failed cycle could not."""
    url = settings.nats_url or ""
    names = Names(own_prefix(settings, "d"))
    space, owner = await new_space(store)
    await increments(store, space, owner, 4)  # seqs 2..5
    await _alone(pool, [space])
    made: list[Names] = []

    async def counted(js: Any, names: Names) -> None:
        made.append(names)
        await ensure_stream(js, names)

    monkeypatch.setattr(projector.relay, "ensure_stream", counted)
    async with connected_bus(url, names, "relay-edges-test") as bus:
        relay = Relay(pool, bus, names, interval=0.05, ack_timeout=5)
        assert await relay.relay_once() == 5
        await increments(store, space, owner, 1)
        assert await relay.relay_once() == 1
        assert made == [names]  # once for both cycles

        await delete_stream(url, names)
        await increments(store, space, owner, 3)  # seqs 7..9
        await _alone(pool, [space])
        with pytest.raises(RelayFailed) as failed:
            await relay.relay_once()
        assert str(failed.value) == (
            "0 of 3 events acked: RefusedError(\"status {'Status': '503'}\")"
        )
        assert isinstance(failed.value.__cause__, RefusedError)
        assert await _cursor(pool, space) == 6
        assert await _outbox_heads(pool, space) == [9]
        assert relay.published == 6
        assert made == [names]

        task = asyncio.create_task(relay.run())
        try:
            await eventually(lambda: _published(pool, space, 9), within=20)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert made == [names, names]  # made again after the failure
        assert relay.published == 9
        assert await _outbox_heads(pool, space) == []
        assert await stream_seqs(url, names, space, 3) == [7, 8, 9]


async def _published(pool: asyncpg.Pool, space: str, top: int) -> bool:
    return (await _cursor(pool, space) or 0) >= top


async def test_a_space_without_a_cursor_row_gets_one_and_is_relayed(
    pool: asyncpg.Pool, store: PostgresEventStore, settings: Settings
) -> None:
    """A space made before the cursor table has no ``outbox_cursors`` row: the relay
    makes it (from 0) and publishes the space from its first event, in the same cycle."""
    url = settings.nats_url or ""
    names = Names(own_prefix(settings, "c"))
    space, owner = await new_space(store)
    await increments(store, space, owner, 3)
    await pool.execute("DELETE FROM outbox_cursors WHERE space_id = $1", space)
    await _alone(pool, [space])
    async with connected_bus(url, names, "relay-edges-test") as bus:
        relay = Relay(pool, bus, names)
        assert await relay.relay_once() == 4
        assert await _cursor(pool, space) == 4
        assert await _outbox_heads(pool, space) == []
        assert await stream_seqs(url, names, space, 4) == [1, 2, 3, 4]


async def test_the_published_count_adds_up_over_cycles(
    pool: asyncpg.Pool, store: PostgresEventStore, settings: Settings
) -> None:
    """``published`` counts every event the relay has published, cycle after cycle;
    a relay that cannot reach NATS publishes nothing and touches nothing."""
    url = settings.nats_url or ""
    names = Names(own_prefix(settings, "n"))
    space, owner = await new_space(store)
    for _ in range(3):  # outbox rows for heads 1, 2, 3, 4
        await increments(store, space, owner, 1)
    await _alone(pool, [space])
    offline = Relay(pool, NatsBus(url, prefix=names.prefix), names)
    assert await offline.relay_once() == 0
    assert (offline.published, offline.behind) == (0, False)
    assert await _outbox_heads(pool, space) == [1, 2, 3, 4]
    async with connected_bus(url, names, "relay-edges-test") as bus:
        relay = Relay(pool, bus, names, claim_rows=3)
        assert relay.published == 0
        assert await relay.relay_once() == 3
        assert relay.published == 3
        assert await relay.relay_once() == 1
        assert relay.published == 4
        assert await relay.relay_once() == 0
        assert relay.published == 4


async def test_a_space_whose_next_event_is_too_large_alone_fails_the_cycle(
    pool: asyncpg.Pool, store: PostgresEventStore, settings: Settings
) -> None:
    """Every message of a cycle dropped (its one space's next event is larger than the
    server's ``max_payload``): nothing is published, the cursor stays, and the cycle
    fails naming the event, as it does when other messages went out."""
    url = settings.nats_url or ""
    names = Names(own_prefix(settings, "t"))
    space, owner = await new_space(store)
    await _alone(pool, [space])
    async with connected_bus(url, names, "relay-edges-test") as bus:
        relay = Relay(pool, bus, names)
        assert await relay.relay_once() == 1
        nc = bus.connection()
        assert nc is not None
        size = nc.max_payload + 10
        seq = await append_unchecked(store, owner, space, entity_id="t-big", value="x" * size)
        assert seq == 2
        await _alone(pool, [space])
        try:
            for _ in range(2):
                with pytest.raises(RelayFailed, match=r"^0 of 1 events acked: ") as failed:
                    await relay.relay_once()
                assert isinstance(failed.value.__cause__, projector.relay.TooLargeError)
                limit = nc.max_payload - projector.relay.HEADER_ROOM
                assert re.fullmatch(
                    rf"event 2 of space {space} is [0-9]{{1,3}}(,[0-9]{{3}})+ bytes of JSON,"
                    rf" more than the NATS server takes in one message \({limit:,} with 1,024"
                    r" for headers, of its max_payload\); raise max_payload",
                    str(failed.value.__cause__),
                ), str(failed.value.__cause__)
                assert await _cursor(pool, space) == 1
                assert await _outbox_heads(pool, space) == [2]
        finally:  # no other relay of the database should meet this event
            await pool.execute("DELETE FROM outbox WHERE space_id = $1", space)
    assert await head(pool, space) == 2


# ---------------------------------------------------------------------------- the plan


def test_plan_shares_the_budget_among_busy_spaces_then_the_rest_in_order() -> None:
    """The even share counts only spaces with something to publish; what the shares
    leave goes to the spaces in order until it is spent; a space's range reaches its
    highest claimed head."""
    x, y, z, w = (uuid.UUID(int=i) for i in (1, 2, 3, 4))
    # z has nothing to publish: x and y share the budget, 50 each
    heads = {x: [3, 90], y: [90], z: [5], w: [1]}
    assert plan([(x, 0), (y, 0), (z, 5)], heads, per_space=5000, budget=100) == [
        Range(x, 0, 50),
        Range(y, 0, 50),
        Range(z, 5, 5),
    ]
    # w needs one event: a busy space all the same (shares of 33), then x takes what is
    # left (34 of the 57 more it wants), y none
    assert plan([(x, 0), (w, 0), (y, 0)], heads, per_space=5000, budget=101) == [
        Range(x, 0, 67),
        Range(w, 0, 1),
        Range(y, 0, 33),
    ]
    # shares of 33, then 33 left: 27 to x (all it wants up to 60), the last 6 to y
    heads = {x: [60], y: [60], w: [1]}
    assert plan([(x, 0), (y, 0), (w, 0)], heads, per_space=5000, budget=100) == [
        Range(x, 0, 60),
        Range(y, 0, 39),
        Range(w, 0, 1),
    ]


# ------------------------------------------------------------------------- the acks


@contextlib.asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(settings.nats_url or "")
    try:
        yield nc
    finally:
        await nc.close()


def _answer(nc: NatsClient) -> Callable[[str, bytes], Awaitable[None]]:
    """Answer a relay's message as JetStream would: a reply on its reply subject."""

    async def answer(subject: str, data: bytes) -> None:
        await nc.publish(subject, data)
        await nc.flush()

    return answer


STORED = b'{"stream":"s","seq":7}'


async def test_an_answer_counts_only_in_its_own_cycle_and_only_once(settings: Settings) -> None:
    """Replies name their cycle: an answer that comes in after its cycle ended does not
    count in the next one (where the same index is another message), and a message
    answered twice counts once, so the wait is not cut short."""
    acks = Acks()
    async with _client(settings) as nc:
        answer = _answer(nc)
        first = await acks.begin(nc, 2)
        await answer(f"{first}0", STORED)
        second = await acks.begin(nc, 2)
        assert second != first
        assert second.startswith(first.rsplit(".", 2)[0] + ".")  # one inbox for all cycles
        await answer(f"{first}1", STORED)  # late: cycle one is over
        await answer(f"{second}0", STORED)
        await answer(f"{second}0", STORED)  # again
        started = asyncio.get_running_loop().time()
        await acks.wait(0.5)
        assert asyncio.get_running_loop().time() - started >= 0.4  # index 1 unanswered
        acked, failure = acks.prefixes([(A, 3), (A, 5)])
        assert acked == {A: 3}
        assert isinstance(failure, TimeoutError)
        assert str(failure) == "no ack"
        await answer(f"{second}1", STORED)
        await acks.wait(5)
        assert acks.prefixes([(A, 3), (A, 5)]) == ({A: 5}, None)


async def test_each_space_stops_at_its_first_message_not_acked(settings: Settings) -> None:
    """JetStream's error answers, and an empty status answer, are refusals; the first
    failure is the one reported, with the server's words (at most 300 bytes), and a
    space's later acks do not count past its refused message."""
    acks = Acks()
    # cut at 300 bytes in the middle of a character: decoded with a replacement
    long_error = b'{"error":{"code":400,"description":"x' + "é".encode() * 400 + b'"}}'
    async with _client(settings) as nc:
        answer = _answer(nc)
        reply = await acks.begin(nc, 6)
        await answer(f"{reply}0", STORED)  # A 1..2
        await answer(f"{reply}1", long_error)  # A 3..4: refused
        await answer(f"{reply}2", STORED)  # B 1..1
        await answer(f"{reply}3", STORED)  # A 5..6: acked, but after a refusal
        await answer(f"{reply}4", b'{"error":{"code":503},"seq":1}')  # B 2..2
        await answer(f"{reply}5", STORED)  # B 3..3
        started = asyncio.get_running_loop().time()
        await acks.wait(10)
        assert asyncio.get_running_loop().time() - started < 5  # all answered: no wait
        acked, failure = acks.prefixes([(A, 2), (A, 4), (B, 1), (A, 6), (B, 2), (B, 3)])
        assert acked == {A: 2, B: 1}
        assert isinstance(failure, RefusedError)
        assert str(failure) == long_error[:300].decode(errors="replace")
        assert str(failure).endswith("é\ufffd")
