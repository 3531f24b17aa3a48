"""The write half of a transaction: lock spaces, number and chain new events, flush them.

Every writer (client pushes, member changes, server events) goes through here, so the
invariants live in one place:

* a space's row is locked ``FOR UPDATE`` before anything of it is read or written, in
  ascending ``space_id`` order when a transaction takes several, so two transactions
  never wait on each other in a cycle;
* seqs continue gaplessly from the locked ``head``, chain hashes from ``chain_tip``;
* the events, the new heads and the outbox rows are written in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from core.canonical import canonical_json
from core.keys import Purpose, derive
from core.wire import SERVER_DEVICE_ID, Event, format_time
from crdt import Op
from eventstore.chain import chain_hash, payload_digest
from eventstore.rows import EVENT_COLUMNS, Conn

# Row locks: https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-ROWS
# FOR UPDATE blocks every other writer of the same space (they all take this lock) until
# COMMIT, which makes the space's seqs gapless and commit-ordered, and orders a push
# against a membership change of the same space. ORDER BY makes PostgreSQL lock the rows
# in space_id order (the LockRows step runs on the sorted rows), so transactions that
# lock several spaces cannot deadlock. Under READ COMMITTED, statements issued after
# this one see everything committed by the previous holder of the lock.
LOCK_SPACES = """
SELECT space_id, head, max_lamport, chain_tip
FROM spaces WHERE space_id = ANY($1::uuid[])
ORDER BY space_id
FOR UPDATE
"""

# Advancing the spaces a transaction wrote to, and queueing them for the relay, as one
# statement of literals (uuids, integers and hex, all made here, never client text): sent
# with the simple query protocol it can share a round trip with COMMIT.
_ADVANCE = """
WITH advanced AS (
    UPDATE spaces AS s
    SET head = u.head, max_lamport = u.max_lamport, chain_tip = u.chain_tip
    FROM (VALUES {values}) AS u(space_id, head, max_lamport, chain_tip)
    WHERE s.space_id = u.space_id
    RETURNING s.space_id, s.head
)
INSERT INTO outbox (space_id, head) SELECT space_id, head FROM advanced;
"""


#: COPY's column list (asyncpg wants a list), made once.
_COPY_COLUMNS = list(EVENT_COLUMNS)


@dataclass
class SpaceCursor:
    """The locked state of one space inside a transaction, advanced as events are added."""

    space_id: str
    head: int
    max_lamport: int
    chain_tip: bytes


async def lock_spaces(conn: Conn, space_ids: Sequence[str]) -> dict[str, SpaceCursor]:
    """Lock the rows of ``space_ids`` (those that exist) in a fixed order; their cursors."""
    rows = await conn.fetch(LOCK_SPACES, sorted(set(space_ids)))
    return {
        str(r["space_id"]): SpaceCursor(
            str(r["space_id"]), r["head"], r["max_lamport"], bytes(r["chain_tip"])
        )
        for r in rows
    }


def server_op_id(secret_key: str, key: str) -> str:
    """A UUID (version 8, RFC 9562) from HMAC-SHA256 of ``key`` under the server-op-id
    key derived from the root ``secret_key`` (core.keys): unguessable ids."""
    return _uuid8(hmac.new(derive(secret_key, Purpose.SERVER_OP_ID), key.encode(), hashlib.sha256))


def legacy_server_op_id(secret_key: str, key: str) -> str:
    """The op_id ``key`` had before keys were separated (HMAC under the root secret).

    Only ever looked up, never written: a firing that committed its event before an
    upgrade and is retried after it must find that event, not append a second one."""
    return _uuid8(hmac.new(secret_key.encode(), key.encode(), hashlib.sha256))


def _uuid8(mac: hmac.HMAC) -> str:
    n = int.from_bytes(mac.digest()[:16], "big")
    n &= ~(0xF000 << 64)  # version nibble
    n |= 0x8000 << 64
    n &= ~(0xC000 << 48)  # variant bits
    n |= 0x8000 << 48
    return str(uuid.UUID(int=n))


def _as_stored(value: Any, value_json: bytes) -> Any:
    """The value as reads return it: decoded from its canonical JSON (``1.0`` becomes
    ``1``). Strings, integers, booleans and null come back unchanged: skip the decode."""
    if value is None or type(value) in (str, int, bool):
        return value
    return msgspec.json.decode(value_json)


@dataclass
class NewEvent:
    """One server event to store, before it has a seq: written by the server's device, by
    no user, of no field and with no pred (reminder and member events)."""

    op_id: str
    entity_type: str
    entity_id: str
    kind: str
    value: Any
    lamport: int


@dataclass
class Batch:
    """The rows one transaction will COPY, numbered and chained as they are added."""

    recorded_at: datetime
    schema_version: int
    records: list[tuple[Any, ...]] = field(default_factory=list)
    cursors: dict[str, SpaceCursor] = field(default_factory=dict)
    recorded: str = ""

    def __post_init__(self) -> None:
        self.recorded = format_time(self.recorded_at)

    def add_new(self, cursor: SpaceCursor, new: NewEvent) -> Event:
        """Add a server event: hashes computed here."""
        value_json = canonical_json(new.value)
        digest = payload_digest(
            new.op_id,
            cursor.space_id,
            new.entity_type,
            new.entity_id,
            new.kind,
            None,
            value_json,
            (),
            new.lamport,
        )
        op = Op(
            op_id=new.op_id,
            entity_type=new.entity_type,
            entity_id=new.entity_id,
            kind=new.kind,
            field=None,
            value=new.value,
            pred=(),
            lamport=new.lamport,
            device_id=SERVER_DEVICE_ID,
        )
        return self.add(cursor, op, None, None, value_json, digest)

    def add(
        self,
        cursor: SpaceCursor,
        op: Op,
        user_id: str | None,
        client_time: str | None,
        value_json: bytes,
        digest: bytes,
    ) -> Event:
        """Give ``op`` the next seq of its space and its chain hash; the stored event.

        ``value_json`` is the canonical JSON of ``op.value``, ``digest`` its payload hash
        (the caller computed both to compare with a stored duplicate)."""
        space_id = cursor.space_id
        self.cursors[space_id] = cursor
        seq = cursor.head + 1
        recorded, schema_version = self.recorded, self.schema_version
        device_id, lamport, value = op.device_id, op.lamport, op.value
        chained = chain_hash(
            cursor.chain_tip, digest, seq, device_id, user_id, client_time, recorded, schema_version
        )
        cursor.head = seq
        cursor.chain_tip = chained
        if lamport > cursor.max_lamport:
            cursor.max_lamport = lamport
        pred = list(op.pred)
        # fmt: off
        self.records.append((
            space_id, seq, op.op_id, op.entity_type, op.entity_id, op.kind, op.field,
            None if value is None else value_json.decode(), pred, lamport, device_id,
            user_id, client_time, self.recorded_at, schema_version, digest, chained,
        ))  # the order of EVENT_COLUMNS
        # fmt: on
        return Event(  # the stored event as reads return it
            seq=seq,
            op_id=op.op_id,
            space_id=space_id,
            entity_type=op.entity_type,
            entity_id=op.entity_id,
            kind=op.kind,
            field=op.field,
            value=_as_stored(value, value_json),
            pred=pred,
            lamport=lamport,
            client_time=client_time,
            device_id=device_id,
            user_id=user_id,
            recorded_at=recorded,
            schema_version=schema_version,
        )

    async def copy(self, conn: Conn) -> None:
        """COPY the rows (one round trip for any number)."""
        if self.records:
            await conn.copy_records_to_table("events", records=self.records, columns=_COPY_COLUMNS)

    def advance_sql(self) -> str:
        """The statement advancing every space an event was added to and queueing it in the
        outbox ("" when no event was added)."""
        if not self.cursors:
            return ""
        values = ", ".join(
            f"('{uuid.UUID(c.space_id)}'::uuid, {int(c.head)}::bigint, "
            f"{int(c.max_lamport)}::bigint, decode('{c.chain_tip.hex()}', 'hex'))"
            for c in self.cursors.values()
        )
        return _ADVANCE.format(values=values)

    async def flush(self, conn: Conn) -> None:
        """COPY the rows, then advance every touched space and queue it in the outbox."""
        await self.copy(conn)
        advance = self.advance_sql()
        if advance:
            await conn.execute(advance)
