"""Group commit: concurrent pushes (any spaces) share one transaction and one COPY.

Callers put their parsed push on a queue and wait on a future. ``writers`` worker tasks
each take a group from the queue, run it as one transaction (eventstore/append.py) and
resolve every future only after COMMIT. While groups commit, the next ones gather, so
under load each transaction carries several pushes and the per-transaction costs
(locks, round trips, commit) are shared.

Which pushes form a group (``_take``), in queue order:

* a space is committed by one writer at a time: pushes of a space already in flight
  wait, so one store commits each space's pushes in the order they were queued and its
  writers never wait on each other's space locks;
* pushes of spaces already in the group join it up to ``max_group_ops`` (a hot space
  is drained in big transactions: they serialise on its lock anyway);
* pushes of other spaces join only while the group stays under its spread limit, so
  many spaces are spread over the writers and commit in parallel. The limit is
  ``spread_ops``, or, when more is queued, the queued ops divided by the writers (at most
  ``max_spread_ops``): a long queue is drained in fewer, bigger transactions, each
  paying the per-transaction statements and round trips once for more ops, while a
  short one still keeps every writer busy;
* a skipped push blocks the later pushes of its space, keeping per-space order.

Failures: a transient database error answers every push of the group ``Unavailable``
(nothing was committed; the client retries). Any other error is retried push by push,
each on a fresh connection from the pool, so one poisonous push cannot fail its
neighbours, and a push alone is tried once more before its error is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from core.errors import Unavailable
from core.metrics import CONFLICTS, OPS
from core.ports import AppendOutcome
from eventstore.append import GroupResult
from eventstore.errors import is_transient, translate
from eventstore.push import Push
from eventstore.rows import Conn

log = logging.getLogger(__name__)

RunGroup = Callable[[Conn, Sequence[Push]], Awaitable[GroupResult]]


@dataclass
class _Waiting:
    push: Push
    future: asyncio.Future[AppendOutcome]


class GroupCommitter:
    """The queue and the writer tasks (started lazily on the first push)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        run: RunGroup,
        writers: int = 4,
        max_group_ops: int = 2000,
        spread_ops: int = 200,
        max_spread_ops: int = 1000,
    ) -> None:
        self._pool = pool
        self._run = run
        self._writers = writers
        self._max_ops = max_group_ops
        self._spread_ops = spread_ops
        self._max_spread_ops = max(spread_ops, max_spread_ops)
        self._pending: deque[_Waiting] = deque()
        self._in_flight: set[str | None] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._busy = 0
        #: Pushes per committed transaction, for the benchmark and tests.
        self.groups: list[int] = []

    def start(self) -> None:
        if self._closed:
            raise Unavailable("the event store is closed")
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._worker(), name=f"eventstore-writer-{i}")
                for i in range(self._writers)
            ]

    async def close(self, grace: float = 5.0) -> None:
        """Refuse new pushes, let queued and running groups finish for up to ``grace``
        seconds, then stop the writers; what is left is answered ``Unavailable``."""
        self._closed = True
        deadline = asyncio.get_running_loop().time() + grace
        while (self._busy or self._pending) and self._tasks:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.005)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        while self._pending:
            waiting = self._pending.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(translate(ConnectionError("event store closed")))

    async def submit(self, push: Push) -> AppendOutcome:
        """Queue ``push`` and wait for its outcome (raised: ``Unavailable`` and kin)."""
        if self._closed:
            raise Unavailable("the event store is closed")
        self.start()
        future: asyncio.Future[AppendOutcome] = asyncio.get_running_loop().create_future()
        self._pending.append(_Waiting(push, future))
        self._wake.set()
        return await future

    @property
    def _queued_ops(self) -> int:
        """Ops of the pushes waiting for a group (for the spread limit)."""
        return sum(len(w.push.items) for w in self._pending)

    def _take(self) -> list[_Waiting]:
        """The next group (see the module docstring); empty when nothing is eligible."""
        group: list[_Waiting] = []
        ops = 0
        spaces: set[str | None] = set()
        blocked = set(self._in_flight)
        kept: deque[_Waiting] = deque()
        spread = max(self._spread_ops, min(self._max_spread_ops, self._queued_ops // self._writers))
        for waiting in self._pending:
            space, n = waiting.push.space_id, len(waiting.push.items)
            limit = self._max_ops if space in spaces else spread
            if space in blocked or (group and ops + n > limit):
                blocked.add(space)
                kept.append(waiting)
                continue
            group.append(waiting)
            ops += n
            spaces.add(space)
        self._pending = kept
        self._in_flight |= spaces
        return group

    async def _next_group(self) -> list[_Waiting]:
        while True:
            group = self._take()
            if group:
                return group
            self._wake.clear()
            await self._wake.wait()

    async def _worker(self) -> None:
        while True:
            group = await self._next_group()
            # One connection for as long as groups keep coming: a busy writer does not
            # pay the pool's release (a reset round trip) and acquire between groups.
            try:
                conn = await self._pool.acquire()
            except Exception:  # no connection: the group's own attempt reports why
                await self._serve(None, group)
                continue
            try:
                while True:
                    if not await self._serve(conn, group) or _gone(conn):
                        # Closed, or a group failed on it though it says it is open (a
                        # killed backend can leave it busy): back to the pool, whose
                        # reset rolls it back or drops it; the next group takes another.
                        break
                    group = self._take()
                    if not group:
                        break
            finally:
                with contextlib.suppress(Exception):  # a closed pool: nothing to give back
                    await self._pool.release(conn)

    async def _serve(self, conn: Conn | None, group: list[_Waiting]) -> bool:
        """Commit one group on ``conn`` (None: a connection from the pool); False when
        the group failed on ``conn``."""
        self._busy += 1
        try:
            return await self._commit(conn, group)
        except asyncio.CancelledError:  # closing: nothing of the group is acknowledged
            _fail(group, ConnectionError("event store closed"))
            raise
        except Exception as exc:  # never let a writer die: answer and go on
            log.exception("group commit failed")
            _fail(group, exc)
            return False
        finally:
            self._busy -= 1
            self._in_flight -= {w.push.space_id for w in group}
            self._wake.set()  # its spaces may have queued pushes

    async def _commit(self, conn: Conn | None, group: list[_Waiting]) -> bool:
        """Commit ``group``, retrying push by push when it fails; False when its attempt
        on ``conn`` failed."""
        try:
            result = await self._attempt(conn, [w.push for w in group])
        except Exception as exc:
            # Retried push by push, each on a fresh connection: a poisonous push fails
            # alone, and a push that failed on the writer's kept connection (a connection
            # a fault left in a state no error names as lost) is tried once on another
            # before it is answered with a server fault (the retry is safe: duplicates
            # are detected).
            if is_transient(exc) or (conn is None and len(group) == 1):
                _fail(group, exc)
                return False
            log.warning("group of %d failed (%r); retrying push by push", len(group), exc)
            for waiting in group:
                await self._commit(None, [waiting])
            return False
        self.groups.append(len(group))
        _count(result)
        for waiting, outcome in zip(group, result.outcomes, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(outcome)
        return True

    async def _attempt(self, conn: Conn | None, pushes: list[Push]) -> GroupResult:
        """Run the group on ``conn`` (None: a connection from the pool for this group)."""
        if conn is None:
            async with self._pool.acquire() as fresh:
                return await self._attempt(fresh, pushes)
        try:
            return await self._run(conn, pushes)
        except Exception as exc:
            # A backend killed mid-transaction can surface as any client error (even
            # InternalClientError). The push is not acknowledged; whether or not COMMIT
            # reached the server, the client's retry is safe (duplicates are detected).
            if _gone(conn) and not is_transient(exc):
                raise Unavailable("event store connection lost") from exc
            raise


def _gone(conn: Conn) -> bool:
    """True once ``conn`` is closed, or no longer ours (the pool was closed under us)."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


def _fail(group: list[_Waiting], exc: BaseException) -> None:
    error = translate(exc)
    for waiting in group:
        if not waiting.future.done():
            waiting.future.set_exception(error)


def _count(result: GroupResult) -> None:
    """Metrics, after COMMIT only."""
    statuses: dict[str, int] = {}
    for outcome in result.outcomes:
        for r in outcome.results:
            statuses[r.status] = statuses.get(r.status, 0) + 1
    for status, n in statuses.items():
        OPS.labels(status=status).inc(n)
    conflicts: dict[tuple[str, str], int] = {}
    for key in result.conflicts:
        conflicts[key] = conflicts.get(key, 0) + 1
    for (entity_type, field), n in conflicts.items():
        CONFLICTS.labels(entity_type=entity_type, field=field).inc(n)
