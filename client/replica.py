"""The device's replica: merged entity states, the pending ops on top, the Lamport clock.

No I/O. Two states are kept per entity: ``confirmed`` (server events and acknowledged
ops: everything known to be stored) and ``local`` (confirmed plus the ops still queued),
which is what the device shows and what ``pred`` is computed from (docs/protocol.md section 2:
"as the device saw them when it made the edit"). An op the server rejects for good is
dropped from ``local`` by rebuilding it from ``confirmed`` and the remaining queue: a
CRDT state cannot forget an op, so the rejected op must never reach ``confirmed``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from client.store import StateRow
from core.ops import op_from_event
from core.wire import Event, Operation
from crdt import (
    DEFAULT_SCHEMA,
    EntityState,
    EntityView,
    LamportClock,
    Schema,
    decode_state,
    encode_state,
)

Key = tuple[str, str, str]
"""(space_id, entity_type, entity_id)"""


class Replica:
    """Entity states of every space the device holds, and its queue of pending ops."""

    def __init__(self, device_id: str, *, lamport: int = 0, schema: Schema = DEFAULT_SCHEMA):
        self.device_id = device_id
        self.schema = schema
        self.clock = LamportClock(lamport)
        self.confirmed: dict[Key, EntityState] = {}
        self.local: dict[Key, EntityState] = {}
        self.pending: dict[str, Operation] = {}
        self._pending_by_key: dict[Key, list[str]] = {}

    # ------------------------------------------------------------------ loading

    def load(self, states: Iterable[StateRow], queue: Iterable[Operation]) -> None:
        """Restore what the store held at open: states first, then the queue on top."""
        for space_id, entity_type, entity_id, blob in states:
            state = decode_state(blob)
            self.confirmed[(space_id, entity_type, entity_id)] = state
            self.clock.observe(state.last_lamport)
        for op in queue:
            self.add_pending(op)

    # ------------------------------------------------------------------ local edits

    def make_op(
        self,
        space_id: str,
        entity_type: str,
        entity_id: str,
        kind: str,
        field: str | None,
        value: Any,
        *,
        client_time: str | None = None,
    ) -> Operation:
        """A new operation with ``pred`` from the local state and the next lamport."""
        state = self.local.get((space_id, entity_type, entity_id))
        pred: tuple[str, ...] = ()
        if state is not None:
            if kind == "set" and field is not None:
                pred = state.field_heads(field)
            elif kind == "remove" and field is not None:
                pred = state.live_adds(field, value)
            elif kind in ("delete", "restore"):
                pred = state.lifecycle_heads()
            self.clock.observe(state.last_lamport)
        return Operation(
            op_id=str(uuid.uuid4()),
            space_id=space_id,
            entity_type=entity_type,
            entity_id=entity_id,
            kind=kind,
            field=field,
            value=value,
            pred=list(pred),
            lamport=self.clock.tick(),
            client_time=client_time,
        )

    def add_pending(self, op: Operation) -> None:
        """Queue an op: it shows in ``local`` at once."""
        key = (op.space_id, op.entity_type, op.entity_id)
        self.pending[op.op_id] = op
        self._pending_by_key.setdefault(key, []).append(op.op_id)
        self._local(key).apply(op_from_event(op, self.device_id))
        self.clock.observe(op.lamport)

    def _local(self, key: Key) -> EntityState:
        state = self.local.get(key)
        if state is None:
            confirmed = self.confirmed.get(key)
            state = confirmed.copy() if confirmed is not None else EntityState.new(*key[1:])
            self.local[key] = state
        return state

    def _confirmed(self, key: Key) -> EntityState:
        state = self.confirmed.get(key)
        if state is None:
            state = self.confirmed[key] = EntityState.new(key[1], key[2])
        return state

    def _unqueue(self, op_id: str) -> Operation | None:
        op = self.pending.pop(op_id, None)
        if op is not None:
            key = (op.space_id, op.entity_type, op.entity_id)
            ids = self._pending_by_key.get(key, [])
            if op_id in ids:
                ids.remove(op_id)
            if not ids:
                self._pending_by_key.pop(key, None)
        return op

    def next_batch(self, limit: int, budget: int) -> list[Operation]:
        """The next push: the oldest queued op's space, and that space's queued ops in
        queue order (not only the run at the head: writes interleaved over spaces must
        not go out one or two per push), at most ``limit`` of them and roughly
        ``budget`` bytes (the first op always goes). Order only matters within a space
        (``pred`` names ops of the same space), so the other spaces' ops wait for the
        next pushes, in their own order."""
        batch: list[Operation] = []
        for op in self.pending.values():
            if batch and op.space_id != batch[0].space_id:
                continue
            budget -= len(str(op.value)) + 40 * len(op.pred) + 400
            if batch and (budget < 0 or len(batch) >= limit):
                break
            batch.append(op)
        return batch

    # ------------------------------------------------------------------ server answers

    def acknowledge(self, op_ids: Iterable[str]) -> list[StateRow]:
        """Ops the server stored (applied or duplicate): they join ``confirmed``."""
        touched: set[Key] = set()
        for op_id in op_ids:
            op = self._unqueue(op_id)
            if op is None:
                continue
            key = (op.space_id, op.entity_type, op.entity_id)
            self._confirmed(key).apply(op_from_event(op, self.device_id))
            touched.add(key)
        return [self._row(key) for key in touched]

    def reject(self, op_ids: Iterable[str]) -> None:
        """Ops the server refused for good: rebuild ``local`` without them."""
        touched: set[Key] = set()
        for op_id in op_ids:
            op = self._unqueue(op_id)
            if op is not None:
                touched.add((op.space_id, op.entity_type, op.entity_id))
        for key in touched:
            self.local.pop(key, None)
            rebuilt = self._local(key)
            for op_id in self._pending_by_key.get(key, []):
                rebuilt.apply(op_from_event(self.pending[op_id], self.device_id))

    def apply_events(self, events: Iterable[Event]) -> list[StateRow]:
        """Events of one ``events`` message: into both states; the rows to store."""
        touched: set[Key] = set()
        for event in events:
            key = (event.space_id, event.entity_type, event.entity_id)
            op = op_from_event(event)
            self._confirmed(key).apply(op)
            self._local(key).apply(op)
            self.clock.observe(event.lamport)
            touched.add(key)
        return [self._row(key) for key in touched]

    def _row(self, key: Key) -> StateRow:
        return (*key, encode_state(self.confirmed[key]))

    # ------------------------------------------------------------------ reads

    def view(self, space_id: str, entity_type: str, entity_id: str) -> EntityView | None:
        """What the device shows for an entity (None while it has no client op)."""
        state = self.local.get((space_id, entity_type, entity_id))
        if state is None:
            state = self.confirmed.get((space_id, entity_type, entity_id))
        if state is None or not state.has_client_events:
            return None
        return state.view(self.schema.entity_types.get(entity_type))

    def entity_ids(self, space_id: str, entity_type: str) -> list[str]:
        keys = self.local.keys() | self.confirmed.keys()
        return sorted(k[2] for k in keys if k[0] == space_id and k[1] == entity_type)
