// Per-field structures of an entity state: counters and add-wins sets (crdt/fields.py).

/** A counter field: each inc's delta by op_id, and their running sum. */
export class Counter {
  constructor(deltas = new Map()) {
    this.deltas = deltas;
    this.total = 0;
    for (const d of deltas.values()) this.total += d;
  }

  copy() {
    return new Counter(new Map(this.deltas));
  }
}

/**
 * An add-wins set field: live adds (op_id -> element) and how many adds are live per
 * element. Elements are keys of a Map, so 1 and "1" are two elements (as in JSON).
 */
export class ORSet {
  constructor(live = new Map()) {
    this.live = new Map();
    this.counts = new Map();
    for (const [opId, element] of live) this.addLive(opId, element);
  }

  /** Hold the add `opId` of `element` as live. */
  addLive(opId, element) {
    this.live.set(opId, element);
    this.counts.set(element, (this.counts.get(element) ?? 0) + 1);
  }

  /** Drop a live add; false when `opId` is no live add here. */
  cancel(opId) {
    if (!this.live.has(opId)) return false;
    const element = this.live.get(opId);
    this.live.delete(opId);
    const left = this.counts.get(element) - 1;
    if (left) this.counts.set(element, left);
    else this.counts.delete(element);
    return true;
  }

  copy() {
    return new ORSet(this.live);
  }
}
