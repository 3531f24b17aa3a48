// Entity state: the merged result of an entity's ops (crdt/state.py, op-based apply).
//
// Per field only what the merge rules need: heads of lww/mv fields, per-op deltas of
// counters, live adds of sets, the lifecycle heads, the op_ids held (idempotency) and
// `pending`: op_ids named by a pred before the op itself arrived, so that a late
// superseded op never becomes a head whatever the delivery order.

import { Counter, ORSet } from "./fields.js";
import { compareOrder, compareStrings } from "./order.js";
import { byOrderDesc, registerView, setView } from "./views.js";

const FIELD_KINDS = new Set(["set", "inc", "add", "remove"]);
const LIFECYCLE_KINDS = new Set(["delete", "restore"]);
const LIFE = "life";
const DUPLICATE = Object.freeze({ applied: false, conflicted: false });
const APPLIED = Object.freeze({ applied: true, conflicted: false });
const CONFLICTED = Object.freeze({ applied: true, conflicted: true });

/** The merged state of one entity; `apply` changes it in place. Ops are never mutated. */
export class EntityState {
  constructor(entityType, entityId) {
    this.entity_type = entityType;
    this.entity_id = entityId;
    this._seen = new Set();
    this._pending = new Map(); // op_id -> Set of scopes ("set <field>", "remove <field>", "life")
    this._regs = new Map(); // field -> Map(op_id -> op)
    this._counters = new Map(); // field -> Counter
    this._sets = new Map(); // field -> ORSet
    this._life = null; // Map(op_id -> op) once a lifecycle op arrived
    // Order key of the greatest inc, add or remove (the greatest set is always a head).
    this._fl = 0;
    this._fo = "";
    this._ol = 0; // greatest lamport of every other op (lifecycle, server, unknown)
  }

  /** Apply one op: idempotent; returns `{applied, conflicted}`. */
  apply(op) {
    const opId = op.op_id;
    if (this._seen.has(opId)) return DUPLICATE;
    this._seen.add(opId);
    let scopes = null;
    if (this._pending.size && this._pending.has(opId)) {
      scopes = this._pending.get(opId);
      this._pending.delete(opId);
    }
    const { kind, field } = op;
    if (kind === "set" && field != null) {
      let heads = this._regs.get(field);
      if (heads === undefined) this._regs.set(field, (heads = new Map()));
      const scope = `set ${field}`;
      for (const p of op.pred ?? []) {
        if (!heads.delete(p) && !this._seen.has(p)) this._namePending(p, scope);
      }
      if (scopes === null || !scopes.has(scope)) heads.set(opId, op);
      return heads.size > 1 ? CONFLICTED : APPLIED;
    }
    if (kind === "inc" && field != null) {
      this._noteFieldOp(op);
      let counter = this._counters.get(field);
      if (counter === undefined) this._counters.set(field, (counter = new Counter()));
      counter.deltas.set(opId, op.value);
      counter.total += op.value;
      return APPLIED;
    }
    if (field == null || !FIELD_KINDS.has(kind)) return this._applyOther(op, scopes);
    this._noteFieldOp(op);
    return this._applyORSet(op, field, scopes);
  }

  /** Apply ops in order; returns the last op's result. */
  applyAll(ops) {
    let result = DUPLICATE;
    for (const op of ops) result = this.apply(op);
    return result;
  }

  _noteFieldOp(op) {
    if (op.lamport >= this._fl && (op.lamport > this._fl || compareStrings(op.op_id, this._fo) > 0)) {
      this._fl = op.lamport;
      this._fo = op.op_id;
    }
  }

  _applyORSet(op, field, scopes) {
    let orset = this._sets.get(field);
    if (orset === undefined) this._sets.set(field, (orset = new ORSet()));
    const scope = `remove ${field}`;
    if (op.kind === "add") {
      if (scopes === null || !scopes.has(scope)) orset.addLive(op.op_id, op.value);
    } else {
      for (const p of op.pred ?? []) {
        if (!orset.cancel(p) && !this._seen.has(p)) this._namePending(p, scope);
      }
    }
    return APPLIED;
  }

  /** Lifecycle ops set `_deleted`; server, unknown and malformed ops are only held. */
  _applyOther(op, scopes) {
    if (op.lamport > this._ol) this._ol = op.lamport;
    if (!LIFECYCLE_KINDS.has(op.kind)) return APPLIED;
    if (this._life === null) this._life = new Map();
    for (const p of op.pred ?? []) {
      if (!this._life.delete(p) && !this._seen.has(p)) this._namePending(p, LIFE);
    }
    if (scopes === null || !scopes.has(LIFE)) this._life.set(op.op_id, op);
    return APPLIED;
  }

  _namePending(opId, scope) {
    const scopes = this._pending.get(opId);
    if (scopes === undefined) this._pending.set(opId, new Set([scope]));
    else scopes.add(scope);
  }

  /** An independent copy (ops are shared: they are never mutated). */
  copy() {
    const c = new EntityState(this.entity_type, this.entity_id);
    c._seen = new Set(this._seen);
    for (const [k, v] of this._pending) c._pending.set(k, new Set(v));
    for (const [k, v] of this._regs) c._regs.set(k, new Map(v));
    for (const [k, v] of this._counters) c._counters.set(k, v.copy());
    for (const [k, v] of this._sets) c._sets.set(k, v.copy());
    c._life = this._life === null ? null : new Map(this._life);
    c._fl = this._fl;
    c._fo = this._fo;
    c._ol = this._ol;
    return c;
  }

  /** True once the op `opId` was applied. */
  holds(opId) {
    return this._seen.has(opId);
  }

  /** False while only server-kind (or unknown) events were applied: reads answer 404. */
  get hasClientEvents() {
    return this._regs.size > 0 || this._counters.size > 0 || this._sets.size > 0 || this._life !== null;
  }

  /** The greatest order key of the field ops (sets through their heads). */
  _fieldKey() {
    let best = { lamport: this._fl, op_id: this._fo };
    for (const heads of this._regs.values()) {
      for (const h of heads.values()) if (compareOrder(h, best) > 0) best = h;
    }
    return best;
  }

  /** The highest lamport applied (0 for none). */
  get lastLamport() {
    return Math.max(this._fieldKey().lamport, this._ol);
  }

  /** Op_ids of an lww or mv field's heads, greatest order key first: a `set`'s pred. */
  fieldHeads(field) {
    const heads = this._regs.get(field);
    return heads === undefined ? [] : byOrderDesc(heads.values()).map((h) => h.op_id);
  }

  /** Op_ids of the live adds of `element`, sorted: the pred of a `remove` of it. */
  liveAdds(field, element) {
    const orset = this._sets.get(field);
    if (orset === undefined) return [];
    const ids = [];
    for (const [opId, e] of orset.live) if (e === element) ids.push(opId);
    return ids.sort(compareStrings);
  }

  /** Op_ids of the lifecycle heads, greatest order key first: a delete's or restore's pred. */
  lifecycleHeads() {
    return this._life === null ? [] : byOrderDesc(this._life.values()).map((h) => h.op_id);
  }

  /** The winning lifecycle op when it is a delete (the entity is deleted), else null. */
  deletedBy() {
    if (this._life === null || this._life.size === 0) return null;
    let winner = null;
    for (const h of this._life.values()) if (winner === null || compareOrder(h, winner) > 0) winner = h;
    return winner.kind === "delete" ? winner : null;
  }

  /**
   * What a read reports: `{entity_type, entity_id, deleted, edited_while_deleted, fields}`.
   * `spec` (`{fields: {name: {type}}}`) tells lww from mv; without it, lww.
   */
  view(spec = null) {
    const names = new Set([...this._regs.keys(), ...this._counters.keys(), ...this._sets.keys()]);
    const fields = {};
    for (const name of [...names].sort(compareStrings)) {
      const fv = this._fieldView(name, spec?.fields?.[name]?.type ?? null);
      if (fv !== null) fields[name] = fv;
    }
    const winner = this.deletedBy();
    return {
      entity_type: this.entity_type,
      entity_id: this.entity_id,
      deleted: winner !== null,
      edited_while_deleted: winner !== null && compareOrder(this._fieldKey(), winner) > 0,
      fields,
    };
  }

  _fieldView(name, type) {
    if ((type === null || type === "lww" || type === "mv") && this._regs.has(name)) {
      return registerView(this._regs.get(name), type === "mv");
    }
    if ((type === null || type === "counter") && this._counters.has(name)) {
      return { value: this._counters.get(name).total };
    }
    if ((type === null || type === "set") && this._sets.has(name)) {
      return setView(this._sets.get(name).counts);
    }
    return null;
  }

  /** A JSON-safe snapshot (what stores persist); `EntityState.fromJSON` reads it back. */
  toJSON() {
    const ops = (m) => [...m.values()];
    return {
      v: 1,
      entity_type: this.entity_type,
      entity_id: this.entity_id,
      seen: [...this._seen],
      pending: [...this._pending].map(([k, v]) => [k, [...v]]),
      regs: [...this._regs].map(([k, v]) => [k, ops(v)]),
      counters: [...this._counters].map(([k, v]) => [k, [...v.deltas]]),
      sets: [...this._sets].map(([k, v]) => [k, [...v.live]]),
      life: this._life === null ? null : ops(this._life),
      field_key: [this._fl, this._fo],
      other_lamport: this._ol,
    };
  }

  static fromJSON(data) {
    if (data?.v !== 1) throw new Error("not an entity state of format 1");
    const s = new EntityState(data.entity_type, data.entity_id);
    s._seen = new Set(data.seen);
    s._pending = new Map(data.pending.map(([k, v]) => [k, new Set(v)]));
    const byId = (list) => new Map(list.map((op) => [op.op_id, op]));
    s._regs = new Map(data.regs.map(([k, v]) => [k, byId(v)]));
    s._counters = new Map(data.counters.map(([k, v]) => [k, new Counter(new Map(v))]));
    s._sets = new Map(data.sets.map(([k, v]) => [k, new ORSet(new Map(v))]));
    s._life = data.life === null ? null : byId(data.life);
    [s._fl, s._fo] = data.field_key;
    s._ol = data.other_lamport;
    return s;
  }
}

/** Apply ops in the order given, grouped by entity: Map("type\nid" -> EntityState). */
export function fold(ops) {
  const states = new Map();
  for (const op of ops) {
    const key = `${op.entity_type}\n${op.entity_id}`;
    let state = states.get(key);
    if (state === undefined) states.set(key, (state = new EntityState(op.entity_type, op.entity_id)));
    state.apply(op);
  }
  return states;
}
