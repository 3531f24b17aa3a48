// The device's durable state behind one interface (client/store.py's LocalStore):
// the offline queue, ops rejected for good, per-space cursors, the confirmed entity
// states, and the session. `MemoryStore` keeps it in memory (Node, tests);
// `IndexedDBStore` (idb-store.js) persists it in a browser.
//
// The interface, every method async; each write is all or nothing:
//   open()                          -> {meta, queue, cursors, states, rejected}
//   putMeta({key: string})          merge string values into `meta`
//   enqueue(op, lamport)            append op to the queue, set meta.lamport
//   settle(ackedIds, rejected, states)
//                                   acked op_ids leave the queue, rejected records
//                                   ({op, code, message, rejected_at}) move from the
//                                   queue to `rejected`, state rows are stored
//   applyEvents(spaceId, seq, states)
//                                   store state rows; cursor = max(cursor, seq)
//   close()
// A state row is {space_id, entity_type, entity_id, state} with `state` the JSON of
// EntityState.toJSON(). `queue` comes back in enqueue order.

const copy = (value) => (value === undefined ? undefined : JSON.parse(JSON.stringify(value)));

export function stateKey(spaceId, entityType, entityId) {
  return `${spaceId}\n${entityType}\n${entityId}`;
}

/**
 * The store in memory. Values are copied in and out, as a real store serialises them,
 * so a test can close a device and open another on the same MemoryStore: a restart.
 */
export class MemoryStore {
  constructor() {
    this.meta = new Map();
    this.queue = new Map(); // op_id -> op, in enqueue order
    this.rejected = new Map();
    this.cursors = new Map();
    this.states = new Map();
    this.opened = 0;
  }

  async open() {
    this.opened += 1;
    return {
      meta: Object.fromEntries(this.meta),
      queue: [...this.queue.values()].map(copy),
      cursors: Object.fromEntries(this.cursors),
      states: [...this.states.values()].map(copy),
      rejected: [...this.rejected.values()].map(copy),
    };
  }

  async putMeta(values) {
    for (const [k, v] of Object.entries(values)) this.meta.set(k, String(v));
  }

  async enqueue(op, lamport) {
    this.queue.set(op.op_id, copy(op));
    this.meta.set("lamport", String(lamport));
  }

  async settle(ackedIds, rejected, states) {
    for (const id of ackedIds) this.queue.delete(id);
    for (const record of rejected) {
      this.queue.delete(record.op.op_id);
      this.rejected.set(record.op.op_id, copy(record));
    }
    this._putStates(states);
  }

  async applyEvents(spaceId, seq, states) {
    this._putStates(states);
    this.cursors.set(spaceId, Math.max(this.cursors.get(spaceId) ?? 0, seq));
  }

  _putStates(states) {
    for (const row of states) {
      this.states.set(stateKey(row.space_id, row.entity_type, row.entity_id), copy(row));
    }
  }

  async close() {}
}
