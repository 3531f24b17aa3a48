// The device's replica: merged entity states, the queued ops on top, the Lamport clock
// (client/replica.py). No I/O.
//
// Two states per entity: `confirmed` (server events and acknowledged ops: everything
// known to be stored) and `local` (confirmed plus the ops still queued), which is what
// the device shows and what `pred` is computed from (docs/protocol.md section 2: "as the device
// saw them when it made the edit"). An op rejected for good is dropped from `local` by
// rebuilding it from `confirmed` and the rest of the queue: a CRDT state cannot forget
// an op, so a rejected op must never reach `confirmed`.

import { LamportClock } from "./order.js";
import { DEFAULT_SCHEMA } from "./schema.js";
import { EntityState } from "./state.js";
import { stateKey } from "./store.js";
import { uuid4 } from "./util.js";

const LIFECYCLE = new Set(["delete", "restore"]);

/** The merge view of a queued op or a received event: what EntityState reads. */
export function mergeOp(op, deviceId) {
  return {
    op_id: op.op_id,
    entity_type: op.entity_type,
    entity_id: op.entity_id,
    kind: op.kind,
    field: op.field ?? null,
    value: op.value ?? null,
    pred: op.pred ?? [],
    lamport: op.lamport,
    device_id: op.device_id ?? deviceId,
  };
}

export class Replica {
  constructor(deviceId, { lamport = 0, schema = DEFAULT_SCHEMA } = {}) {
    this.deviceId = deviceId;
    this.schema = schema;
    this.clock = new LamportClock(lamport);
    this.confirmed = new Map(); // stateKey -> EntityState
    this.local = new Map();
    this.pending = new Map(); // op_id -> op, in queue order
    this._pendingByKey = new Map(); // stateKey -> [op_id]
  }

  /** Restore what the store held at open: states first, then the queue on top. */
  load(rows, queue) {
    for (const row of rows) {
      const state = EntityState.fromJSON(row.state);
      this.confirmed.set(stateKey(row.space_id, row.entity_type, row.entity_id), state);
      this.clock.observe(state.lastLamport);
    }
    for (const op of queue) this.addPending(op);
  }

  /**
   * A new op with the next lamport and its `pred` from the local state: for `set`, the
   * field's heads (writing over a conflict resolves it); for `remove`, the live adds of
   * the element; for `delete`/`restore`, the lifecycle heads. `pred` may be given (a
   * subset of the heads, say, to write without resolving).
   */
  makeOp(spaceId, entityType, entityId, kind, field, value, { pred = null, clientTime = null } = {}) {
    const state = this.local.get(stateKey(spaceId, entityType, entityId));
    let computed = [];
    if (state !== undefined) {
      if (kind === "set") computed = state.fieldHeads(field);
      else if (kind === "remove") computed = state.liveAdds(field, value);
      else if (LIFECYCLE.has(kind)) computed = state.lifecycleHeads();
      this.clock.observe(state.lastLamport);
    }
    const op = {
      op_id: uuid4(),
      space_id: spaceId,
      entity_type: entityType,
      entity_id: entityId,
      kind,
      field: field ?? null,
      value: value ?? null,
      pred: pred === null ? computed : [...pred],
      lamport: this.clock.tick(),
    };
    if (clientTime) op.client_time = clientTime;
    return op;
  }

  /** The heads of a field as the device shows them (op_ids, greatest order key first). */
  fieldHeads(spaceId, entityType, entityId, field) {
    return this.local.get(stateKey(spaceId, entityType, entityId))?.fieldHeads(field) ?? [];
  }

  /** Queue an op: it shows in `local` at once. */
  addPending(op) {
    const key = stateKey(op.space_id, op.entity_type, op.entity_id);
    this.pending.set(op.op_id, op);
    const ids = this._pendingByKey.get(key);
    if (ids === undefined) this._pendingByKey.set(key, [op.op_id]);
    else ids.push(op.op_id);
    this._local(key, op).apply(mergeOp(op, this.deviceId));
    this.clock.observe(op.lamport);
  }

  _local(key, like) {
    let state = this.local.get(key);
    if (state === undefined) {
      const confirmed = this.confirmed.get(key);
      state = confirmed?.copy() ?? new EntityState(like.entity_type, like.entity_id);
      this.local.set(key, state);
    }
    return state;
  }

  _confirmed(key, like) {
    let state = this.confirmed.get(key);
    if (state === undefined) {
      state = new EntityState(like.entity_type, like.entity_id);
      this.confirmed.set(key, state);
    }
    return state;
  }

  _unqueue(opId) {
    const op = this.pending.get(opId);
    if (op === undefined) return null;
    this.pending.delete(opId);
    const key = stateKey(op.space_id, op.entity_type, op.entity_id);
    const ids = (this._pendingByKey.get(key) ?? []).filter((id) => id !== opId);
    if (ids.length) this._pendingByKey.set(key, ids);
    else this._pendingByKey.delete(key);
    return op;
  }

  /**
   * The head of the queue for one push: ops of one space, at most `limit` of them and
   * roughly `budget` bytes (the first op always goes). `ready(op)` says whether an op
   * may go yet (it is durably queued); the batch stops at the first that may not.
   */
  nextBatch(limit, budget, ready = () => true) {
    const batch = [];
    for (const op of this.pending.values()) {
      if (!ready(op)) break;
      if (batch.length && (op.space_id !== batch[0].space_id || batch.length >= limit)) break;
      budget -= JSON.stringify(op).length + 64;
      if (batch.length && budget < 0) break;
      batch.push(op);
    }
    return batch;
  }

  /** Ops the server stored (applied or duplicate) join `confirmed`; the rows to store. */
  acknowledge(opIds) {
    const touched = new Map();
    for (const opId of opIds) {
      const op = this._unqueue(opId);
      if (op === null) continue;
      const key = stateKey(op.space_id, op.entity_type, op.entity_id);
      this._confirmed(key, op).apply(mergeOp(op, this.deviceId));
      touched.set(key, op.space_id);
    }
    return [...touched.keys()].map((key) => this._row(key));
  }

  /** Ops the server refused for good: rebuild `local` without them. */
  reject(opIds) {
    const touched = new Map();
    for (const opId of opIds) {
      const op = this._unqueue(opId);
      if (op !== null) touched.set(stateKey(op.space_id, op.entity_type, op.entity_id), op);
    }
    for (const [key, like] of touched) {
      this.local.delete(key);
      const rebuilt = this._local(key, like);
      for (const id of this._pendingByKey.get(key) ?? []) {
        rebuilt.apply(mergeOp(this.pending.get(id), this.deviceId));
      }
    }
  }

  /** Events of one `events` message into both states; the rows to store. */
  applyEvents(events) {
    const touched = new Set();
    for (const event of events) {
      const key = stateKey(event.space_id, event.entity_type, event.entity_id);
      const op = mergeOp(event, "");
      this._confirmed(key, event).apply(op);
      this._local(key, event).apply(op);
      this.clock.observe(event.lamport);
      touched.add(key);
    }
    return [...touched].map((key) => this._row(key));
  }

  _row(key) {
    const [space_id, entity_type, entity_id] = key.split("\n");
    return { space_id, entity_type, entity_id, state: this.confirmed.get(key).toJSON() };
  }

  /** What the device shows for an entity (null while it has no client op). */
  view(spaceId, entityType, entityId) {
    const key = stateKey(spaceId, entityType, entityId);
    const state = this.local.get(key) ?? this.confirmed.get(key);
    if (state === undefined || !state.hasClientEvents) return null;
    return state.view(this.schema?.entity_types?.[entityType] ?? null);
  }

  entityIds(spaceId, entityType) {
    const ids = new Set();
    for (const key of [...this.local.keys(), ...this.confirmed.keys()]) {
      const [s, t, id] = key.split("\n");
      if (s === spaceId && t === entityType) ids.add(id);
    }
    return [...ids].sort();
  }
}
