// The shared vectors (js/vectors/*.json, generated from the Python crdt/ by
// `python -m tests.vectors.generate`) hold for the JavaScript state too.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { EntityState, compareOrder, compareStrings, fold } from "../concord.js";
import { shuffled } from "../testlib/random.js";

const load = (name) => JSON.parse(readFileSync(new URL(`../vectors/${name}`, import.meta.url), "utf8"));
const FILES = ["cases.json", "random.json"];
const PERMUTATIONS = 6;

function sameElement(a, b) {
  return typeof a === typeof b && a === b;
}

/** The facts of one entity, computed as tests/vectors/expect.py computes them. */
function facts(state, ops, schema) {
  const registers = [];
  const elements = [];
  for (const op of [...ops].sort(compareOrder)) {
    if (op.field == null) continue;
    if (op.kind === "set" && !registers.includes(op.field)) registers.push(op.field);
    else if (
      (op.kind === "add" || op.kind === "remove") &&
      !elements.some(([f, e]) => f === op.field && sameElement(e, op.value))
    ) {
      elements.push([op.field, op.value]);
    }
  }
  const winner = state.deletedBy();
  return {
    entity_type: state.entity_type,
    entity_id: state.entity_id,
    has_client_events: state.hasClientEvents,
    last_lamport: state.lastLamport,
    deleted_by: winner === null ? null : winner.op_id,
    lifecycle_heads: state.lifecycleHeads(),
    field_heads: Object.fromEntries(registers.map((f) => [f, state.fieldHeads(f)])),
    live_adds: elements.map(([f, e]) => [f, e, state.liveAdds(f, e)]),
    view: state.hasClientEvents ? state.view(schema.entity_types[state.entity_type] ?? null) : null,
  };
}

function entitiesOf(ops, schema) {
  const states = fold(ops);
  const keys = [...states.keys()].sort((a, b) => {
    const [ta, ia] = a.split("\n");
    const [tb, ib] = b.split("\n");
    return compareStrings(ta, tb) || compareStrings(ia, ib);
  });
  return keys.map((key) => {
    const state = states.get(key);
    const own = ops.filter((op) => op.entity_type === state.entity_type && op.entity_id === state.entity_id);
    return facts(state, own, schema);
  });
}

function resultsOf(ops) {
  const states = new Map();
  return ops.map((op) => {
    const key = `${op.entity_type}\n${op.entity_id}`;
    if (!states.has(key)) states.set(key, new EntityState(op.entity_type, op.entity_id));
    const { applied, conflicted } = states.get(key).apply(op);
    return [applied, conflicted];
  });
}

function check(vector, schema) {
  assert.deepEqual(resultsOf(vector.ops), vector.results, `${vector.name}: apply results`);
  assert.deepEqual(entitiesOf(vector.ops, schema), vector.entities, `${vector.name}: entities`);
  for (let i = 0; i < PERMUTATIONS; i++) {
    const order = shuffled(vector.ops, vector.seed * 31 + i);
    assert.deepEqual(entitiesOf(order, schema), vector.entities, `${vector.name}: permutation ${i}`);
  }
  const doubled = [...vector.ops, ...shuffled(vector.ops, vector.seed)];
  assert.deepEqual(entitiesOf(doubled, schema), vector.entities, `${vector.name}: doubled delivery`);
}

for (const name of FILES) {
  const data = load(name);
  test(`${name}: format 1, vectors present`, () => {
    assert.equal(data.format, 1);
    assert.ok(data.vectors.length > 0);
  });
  if (name === "cases.json") {
    for (const vector of data.vectors) test(`case ${vector.name}`, () => check(vector, data.schema));
  } else {
    test(`${name}: every history`, () => {
      for (const vector of data.vectors) check(vector, data.schema);
    });
  }
}

test("a wrong expectation is caught", () => {
  const data = load("cases.json");
  const vector = structuredClone(data.vectors[0]);
  vector.entities[0].view.fields.title.value = "something else";
  assert.throws(() => check(vector, data.schema), /entities/);
});

test("states survive toJSON / fromJSON", () => {
  const data = load("random.json");
  for (const vector of data.vectors.slice(0, 50)) {
    for (const state of fold(vector.ops).values()) {
      const again = EntityState.fromJSON(JSON.parse(JSON.stringify(state)));
      const spec = data.schema.entity_types[state.entity_type];
      assert.deepEqual(again.view(spec), state.view(spec));
      assert.equal(again.lastLamport, state.lastLamport);
      for (const op of vector.ops) {
        assert.deepEqual(again.copy().apply(op), state.copy().apply(op));
      }
    }
  }
});
