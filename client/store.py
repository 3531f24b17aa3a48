"""The device's durable state in one SQLite file: the offline queue, the ops the server
rejected, per-space cursors, the merged states of server events, and the session.

Every change that must survive a crash is one SQLite transaction: an op is queued
together with the Lamport clock that made it; an acknowledgement removes ops from the
queue and folds them into the stored states at once; an ``events`` message updates the
states and the space's cursor together. SQLite runs on one worker thread of its own, so
the event loop never blocks on disk and calls never interleave.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from core.wire import Operation

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    pos      INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id    TEXT NOT NULL UNIQUE,
    space_id TEXT NOT NULL,
    op       BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    op_id       TEXT PRIMARY KEY,
    space_id    TEXT NOT NULL,
    op          BLOB NOT NULL,
    code        TEXT NOT NULL,
    message     TEXT NOT NULL,
    rejected_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS cursors (space_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entities (
    space_id    TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    state       BLOB NOT NULL,
    PRIMARY KEY (space_id, entity_type, entity_id)
);
"""

_OP_ENCODER = msgspec.json.Encoder()
_OP_DECODER = msgspec.json.Decoder(Operation)

#: One stored entity state: (space_id, entity_type, entity_id, crdt.encode_state bytes).
StateRow = tuple[str, str, str, bytes]


@dataclass(frozen=True)
class RejectedRow:
    op: Operation
    code: str
    message: str
    rejected_at: str


@dataclass(frozen=True)
class Snapshot:
    """Everything ``LocalStore.load`` reads back at open."""

    meta: dict[str, str]
    queue: list[Operation]
    cursors: dict[str, int]
    states: list[StateRow]
    rejected: list[RejectedRow]


class LocalStore:
    """The SQLite file of one device installation."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="concord-sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> Snapshot:
        """Open (creating it, mode 0600) and read everything back."""
        return await self._run(self._open)

    def _open(self) -> Snapshot:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.executescript(_SCHEMA)
        self._db = db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        queue = [
            _OP_DECODER.decode(row[0]) for row in db.execute("SELECT op FROM queue ORDER BY pos")
        ]
        cursors = dict(db.execute("SELECT space_id, seq FROM cursors").fetchall())
        states = db.execute(
            "SELECT space_id, entity_type, entity_id, state FROM entities"
        ).fetchall()
        return Snapshot(
            meta=meta, queue=queue, cursors=cursors, states=states, rejected=self._rejected()
        )

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(close)
        self._pool.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "LocalStore.open() first"
        return self._db

    def _transaction(self, work: Callable[[sqlite3.Connection], None]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            work(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ------------------------------------------------------------------ writes

    async def put_meta(self, values: dict[str, str]) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

        await self._run(self._transaction, work)

    async def enqueue(self, op: Operation, lamport: int) -> None:
        """Queue one op and the clock that made it, in one transaction."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO queue (op_id, space_id, op) VALUES (?, ?, ?)",
                (op.op_id, op.space_id, _OP_ENCODER.encode(op)),
            )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('lamport', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(lamport),),
            )

        await self._run(self._transaction, work)

    def settle(
        self,
        acked: Iterable[str],
        rejected: Iterable[tuple[Operation, str, str]],
        states: Iterable[StateRow],
    ) -> asyncio.Future[None]:
        """Apply one push result: acked op_ids leave the queue and their states are
        stored; rejected ops move to ``rejected``. All or nothing.

        Not a coroutine: the write is queued on the SQLite thread *now*, in the order
        of the caller's state snapshots. (Queued one loop turn later, it could land
        after a newer ``apply_events`` and store an older state of the entity over it,
        with the cursor already past the events that state lacks.)"""
        acked, rejected, states = list(acked), list(rejected), list(states)

        def work(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM queue WHERE op_id = ?", [(i,) for i in acked])
            for op, code, message in rejected:
                db.execute("DELETE FROM queue WHERE op_id = ?", (op.op_id,))
                db.execute(
                    "INSERT OR REPLACE INTO rejected (op_id, space_id, op, code, message) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (op.op_id, op.space_id, _OP_ENCODER.encode(op), code, message),
                )
            _put_states(db, states)

        return asyncio.get_running_loop().run_in_executor(self._pool, self._transaction, work)

    async def apply_events(self, space_id: str, seq: int, states: Iterable[StateRow]) -> None:
        """Store the states an ``events`` message changed and advance the cursor."""
        states = list(states)

        def work(db: sqlite3.Connection) -> None:
            _put_states(db, states)
            db.execute(
                "INSERT INTO cursors (space_id, seq) VALUES (?, ?) "
                "ON CONFLICT (space_id) DO UPDATE SET seq = max(seq, excluded.seq)",
                (space_id, seq),
            )

        await self._run(self._transaction, work)

    # ------------------------------------------------------------------ reads

    def _rejected(self) -> list[RejectedRow]:
        rows = self.db.execute(
            "SELECT op, code, message, rejected_at FROM rejected ORDER BY rejected_at, op_id"
        ).fetchall()
        return [RejectedRow(_OP_DECODER.decode(r[0]), r[1], r[2], r[3]) for r in rows]


def _put_states(db: sqlite3.Connection, states: list[StateRow]) -> None:
    db.executemany(
        "INSERT INTO entities (space_id, entity_type, entity_id, state) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (space_id, entity_type, entity_id) DO UPDATE SET state = excluded.state",
        states,
    )
