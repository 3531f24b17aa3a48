"""The relay publishes a batch of spaces per cycle (one read, pipelined publishes, one
ack wait) and never moves a cursor past a message the stream did not acknowledge:
proved against a real stream that refuses one message, and a nats-server killed in
the middle of a batch."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

import concord.embedded
import projector.relay
from concord.embedded import EmbeddedNats
from core.settings import Settings
from core.wire import Event
from eventstore.postgres import PostgresEventStore
from eventstore.testing import new_id, op
from projector.relay import Range, Relay, RelayFailed, plan
from projector.stream import Names, decode_log_message, ensure_stream, stream_config
from tests.conftest import TEST_SECRET
from tests.integration.test_projector_support import (
    append_unchecked,
    connected_bus,
    eventually,
    head,
    increments,
    new_space,
    push,
    stream_seqs,
)


@pytest.fixture(scope="module")
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pool, secret_key=TEST_SECRET) as s:
        yield s


async def _cursor(pool: asyncpg.Pool, space: str) -> int:
    seq = await pool.fetchval("SELECT published_seq FROM outbox_cursors WHERE space_id = $1", space)
    return int(seq or 0)


async def _outbox_heads(pool: asyncpg.Pool, space: str) -> list[int]:
    rows = await pool.fetch("SELECT head FROM outbox WHERE space_id = $1 ORDER BY head", space)
    return [r[0] for r in rows]


async def _drain_outbox_of_others(pool: asyncpg.Pool, spaces: list[str]) -> None:
    """Other tests' outbox rows (same database) are not this relay's business here."""
    await pool.execute("DELETE FROM outbox WHERE NOT (space_id = ANY($1::uuid[]))", spaces)


async def _big_and_small(
    pool: asyncpg.Pool, store: PostgresEventStore, *, before: int, size: int
) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two spaces (and owners), alone in the outbox: ``big`` with ``before`` increments
    (seqs 2..before+1), an event with a ``size``-character value (past the title's
    length check, as an older server stored such values), then 5 more; ``small`` with
    20 increments (seqs 2..21)."""
    big, small = await new_space(store), await new_space(store)
    await increments(store, big[0], big[1], before)
    seq = await append_unchecked(store, big[1], big[0], entity_id="t-big", value="x" * size)
    assert seq == before + 2
    await increments(store, big[0], big[1], 5)
    await increments(store, small[0], small[1], 20)
    await _drain_outbox_of_others(pool, [big[0], small[0]])
    return big, small


def test_plan_shares_the_budget_so_no_space_starves() -> None:
    a, b, c = (uuid.UUID(int=i) for i in (1, 2, 3))
    heads = {a: [10_000], b: [5], c: [40]}
    cursors = [(a, 0), (b, 0), (c, 30)]
    assert plan(cursors, heads, per_space=5000, budget=100) == [
        Range(a, 0, 85),  # an even share (33), then what the others left
        Range(b, 0, 5),
        Range(c, 30, 40),
    ]
    assert plan(cursors, heads, per_space=50, budget=1000)[0] == Range(a, 0, 50)
    # Nothing to publish (the cursor is past the claimed head): an empty range.
    assert plan([(b, 7)], heads, per_space=50, budget=10) == [Range(b, 7, 7)]


async def _stream_events(url: str, names: Names, space: str, expect: int) -> list[Event]:
    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().pull_subscribe(names.log_subject(space), stream=names.stream)
        events: list[Event] = []
        while len(events) < expect:
            events += [
                e for m in await sub.fetch(expect, timeout=5) for e in decode_log_message(m.data)
            ]
        return events
    finally:
        await nc.close()


async def test_messages_are_the_stored_events(
    pool: asyncpg.Pool, store: PostgresEventStore, settings: Settings
) -> None:
    """Each message decodes to exactly the event a read of the log returns: values of
    every shape (embedded as stored), ids, times, a server event without a user."""
    names = Names(f"{settings.nats_prefix}m{secrets.token_hex(2)}")
    url = settings.nats_url or ""
    space, owner = await new_space(store)
    values = ['Grüße ☃ "q"', 1.5, 10**15, None, {"a": [1, {"b": None}]}, True]
    for i, value in enumerate(values):
        await append_unchecked(store, owner, space, entity_id="t-1", value=value, lamport=i + 1)
    # Stored JSON text that is not msgspec's own spelling of the value.
    raw = b'{"x": 1.0, "s": "\\u00e9"}'
    await append_unchecked(store, owner, space, entity_id="t-2", value_json=raw, lamport=9)
    delete = op(space, entity_id="t-1", kind="delete", field=None, lamport=20)
    await push(store, owner, new_id(), [delete])
    await store.append_server_event(
        space_id=space, kind="reminder_fired", entity_type="task", entity_id="t-1",
        value={"reminder_id": new_id(), "lateness_ms": 3}, key=f"k:{new_id()}",
    )  # fmt: skip
    await _drain_outbox_of_others(pool, [space])
    async with connected_bus(url, names, "relay-payload-test") as bus:
        relay = Relay(pool, bus, names)
        top = await head(pool, space)
        assert await relay.relay_once() == top
        assert await _stream_events(url, names, space, top) == await store.read(space, 0, 100)


async def test_a_refused_message_stops_its_space_there_and_not_the_others(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream that refuses messages over 2 KiB: the space with a 3 KiB event in the
    middle of its range advances to just before it, the other space to its head; the
    next cycle refuses it again and the cursor stays. (Messages of at most 1 KiB, so
    that the big event travels alone.)"""
    names = Names(f"{settings.nats_prefix}r{secrets.token_hex(2)}")
    url = settings.nats_url or ""
    big, small = await _big_and_small(pool, store, before=10, size=3000)  # the big one: 12

    async with connected_bus(url, names, "relay-test") as bus:
        js = bus.jetstream()
        assert js is not None
        config = stream_config(names)
        config.max_msg_size = 2048
        await js.add_stream(config)

        async def keep_config(js: JetStreamContext, names: Names) -> None:
            pass  # the relay would restore the default config (no size limit)

        monkeypatch.setattr(projector.relay, "ensure_stream", keep_config)
        relay = Relay(pool, bus, names, ack_timeout=5, message_bytes=1024)
        with pytest.raises(RelayFailed):
            await relay.relay_once()
        assert await _cursor(pool, big[0]) == 11  # not past the refused seq 12
        assert await _outbox_heads(pool, big[0]) == [12, 17]
        assert await _cursor(pool, small[0]) == 21
        assert await _outbox_heads(pool, small[0]) == []
        with pytest.raises(RelayFailed):
            await relay.relay_once()
        assert await _cursor(pool, big[0]) == 11
        # 13..17 were acked after the refusal (pipelined): stored once, republished
        # ones dropped by message id. Consumers read the missing 12 from PostgreSQL.
        assert await stream_seqs(url, names, big[0], 17) == [*range(1, 12), *range(13, 18)]
        assert await stream_seqs(url, names, small[0], 21) == list(range(1, 22))


async def test_a_server_killed_mid_batch_leaves_no_cursor_past_an_ack(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """nats-server is killed after 300 of a batch's publishes (two events a message):
    the cycle fails, and every seq at or below each cursor is in the stream. Back on the
    same port, the relay publishes the rest: each space's stream holds every seq once,
    in order."""
    nats_server = EmbeddedNats(tmp_path)
    url = nats_server.start()
    names = Names(f"{settings.nats_prefix}k{secrets.token_hex(2)}")
    spaces = [await new_space(store) for _ in range(4)]
    for space, owner in spaces:
        await increments(store, space, owner, 250)  # seqs 2..251 each
    ids = [s for s, _ in spaces]
    await _drain_outbox_of_others(pool, ids)
    try:
        async with connected_bus(url, names, "relay-kill-test") as bus:
            js = bus.jetstream()
            assert js is not None
            await ensure_stream(js, names)
            relay = Relay(pool, bus, names, ack_timeout=2, message_events=2)
            real = NatsClient.publish
            calls = 0

            async def killing(self: NatsClient, *args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls == 300:
                    await asyncio.sleep(0.3)  # let the first acks arrive
                    nats_server.stop()
                return await real(self, *args, **kwargs)

            monkeypatch.setattr(NatsClient, "publish", killing)
            with pytest.raises((RelayFailed, nats.errors.Error, OSError)):
                await relay.relay_once()
            monkeypatch.setattr(NatsClient, "publish", real)
            cursors = {s: await _cursor(pool, s) for s in ids}
            assert sum(cursors.values()) < 4 * 251  # the kill did cut the batch

            port = nats_server.port
            monkeypatch.setattr(concord.embedded, "free_port", lambda *_, **__: port)
            assert nats_server.start() == url
            for space in ids:  # what the cursors claim was acked is in the stream
                stored = await stream_seqs(url, names, space, 251)
                assert stored[: cursors[space]] == list(range(1, cursors[space] + 1))

            async def relayed() -> bool:
                try:
                    await relay.relay_once()
                except Exception:
                    return False
                return all([await _cursor(pool, s) == await head(pool, s) for s in ids])

            await eventually(relayed, within=30, interval=0.2)
            for space in ids:
                assert await stream_seqs(url, names, space, 300) == list(range(1, 252))
    finally:
        nats_server.stop()


@pytest.fixture
def small_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server of its own whose ``max_payload`` is 4 KiB (the default is 1 MiB)."""
    config = tmp_path / "nats.conf"
    config.write_text("max_payload: 4096\n")
    port = concord.embedded.free_port()
    server = subprocess.Popen(
        [
            str(concord.embedded.nats_server_binary()), "-a", "127.0.0.1", "-p", str(port),
            "-js", "-sd", str(tmp_path / "js"), "-c", str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert concord.embedded.wait_for_port("127.0.0.1", port, 30)
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


async def test_messages_fit_a_server_that_takes_less_than_the_default(
    pool: asyncpg.Pool,
    store: PostgresEventStore,
    settings: Settings,
    small_nats: str,
) -> None:
    """A nats-server configured with ``max_payload: 4096``: the relay cuts its runs to
    fit (they were 64 KiB, which the client refused before sending anything, so every
    space stalled); an event alone larger than that stops its space just before it, as
    a refused message does, and the other space reaches its head."""
    url = small_nats
    names = Names(f"{settings.nats_prefix}p{secrets.token_hex(2)}")
    # seqs 2..31 about 11 KB of JSON, then the big one: 32
    big, small = await _big_and_small(pool, store, before=30, size=5000)
    async with connected_bus(url, names, "relay-max-payload-test") as bus:
        relay = Relay(pool, bus, names, ack_timeout=5)
        for _ in range(2):  # the next cycle stops there again
            with pytest.raises(RelayFailed, match=r"event 32 of space .* max_payload"):
                await relay.relay_once()
            assert await _cursor(pool, big[0]) == 31
            assert await _outbox_heads(pool, big[0]) == [32, 37]
            assert await _cursor(pool, small[0]) == 21
        assert await stream_seqs(url, names, big[0], 31) == list(range(1, 32))
        assert await stream_seqs(url, names, small[0], 21) == list(range(1, 22))
        nc = await nats.connect(url)
        try:
            sub = await nc.jetstream().pull_subscribe(
                names.log_subject(big[0]), stream=names.stream
            )
            messages = await sub.fetch(100, timeout=5)
            assert len(messages) > 3  # cut into several runs
            assert all(len(m.data) <= 4096 - projector.relay.HEADER_ROOM for m in messages)
        finally:
            await nc.close()


async def test_a_cycle_says_whether_it_stopped_at_one_of_its_bounds(
    pool: asyncpg.Pool, store: PostgresEventStore, settings: Settings
) -> None:
    """``behind`` is what the run loop reads to start the next cycle at once: true when a
    cycle took as many outbox rows as it may, or left events of a space for later."""
    space, owner = await new_space(store)
    for _ in range(2):  # outbox rows for heads 1 (the space made), 2 and 3
        await increments(store, space, owner, 1)
    await _drain_outbox_of_others(pool, [space])
    url, names = settings.nats_url or "", Names(f"{settings.nats_prefix}b{secrets.token_hex(2)}")
    async with connected_bus(url, names, "relay-bounds-test") as bus:
        relay = Relay(pool, bus, names, claim_rows=2)
        assert await relay.relay_once() == 2  # the rows of heads 1 and 2
        assert relay.behind
        assert await relay.relay_once() == 1
        assert not relay.behind
        assert await relay.relay_once() == 0
        assert not relay.behind
    await increments(store, space, owner, 6)  # one commit of six events: head 9
    await _drain_outbox_of_others(pool, [space])
    names = Names(f"{settings.nats_prefix}e{secrets.token_hex(2)}")
    async with connected_bus(url, names, "relay-bounds-test") as bus:
        relay = Relay(pool, bus, names, max_events=4)
        assert await relay.relay_once() == 4
        assert relay.behind
        assert await relay.relay_once() == 2
        assert not relay.behind


async def test_a_trickle_of_commits_goes_out_a_cycle_per_coalesce_and_a_backlog_at_once(
    pool: asyncpg.Pool, store: PostgresEventStore, settings: Settings
) -> None:
    """One commit every 20 ms: with ``coalesce`` 0.3 s the relay publishes them a cycle
    per 0.3 s, not one per commit. Then a backlog of eight rows, one claimed per cycle:
    the cycles follow each other at once (pauses of 0.5 s would take 3.5 s)."""
    space, owner = await new_space(store)
    await _drain_outbox_of_others(pool, [space])
    clock = asyncio.get_running_loop().time
    url, names = settings.nats_url or "", Names(f"{settings.nats_prefix}c{secrets.token_hex(2)}")
    async with connected_bus(url, names, "relay-coalesce-test") as bus:
        relay = Relay(pool, bus, names, coalesce=0.3, interval=0.05)
        cycles: list[int] = []
        once = relay.relay_once

        async def counted() -> int:
            count = await once()
            if count:
                cycles.append(count)
            return count

        relay.relay_once = counted  # type: ignore[method-assign]
        async with _running(relay):
            started = clock()
            for _ in range(60):
                await increments(store, space, owner, 1)
                await asyncio.sleep(0.02)
            top = await head(pool, space)
            await eventually(lambda: _published(pool, space, top), within=10)
            took = clock() - started
            # a cycle is counted when its relay_once returns, a moment after the COMMIT
            # that made its rows published: wait for that before the relay is stopped
            await eventually(lambda: _summed(cycles, top), within=5, interval=0.01)
        assert sum(cycles) == top  # seq 1 (the owner's member_added) and the 60
        # a cycle per 0.3 s of the trickle, the first and the last
        assert len(cycles) <= took / 0.3 + 2, (took, cycles)
        for _ in range(8):
            await increments(store, space, owner, 1)
        await _drain_outbox_of_others(pool, [space])
        relay.claim_rows, relay.coalesce = 1, 0.5
        cycles.clear()
        top = await head(pool, space)
        async with _running(relay):
            started = clock()
            await eventually(lambda: _published(pool, space, top), within=10, interval=0.01)
            assert clock() - started < 2.5, cycles
            await eventually(lambda: _summed(cycles, 8), within=5, interval=0.01)
        assert cycles == [1] * 8


@contextlib.asynccontextmanager
async def _running(relay: Relay) -> AsyncIterator[None]:
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _summed(cycles: list[int], rows: int) -> bool:
    """Whether the counted cycles account for ``rows``."""
    return sum(cycles) >= rows


async def _published(pool: asyncpg.Pool, space: str, top: int) -> bool:
    return await _cursor(pool, space) >= top
