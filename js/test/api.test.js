// The public surface: the declarations name exactly what the module exports, the default
// schema is that of docs/protocol.md (as crdt/ has it), and a device reopened on its store resumes.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as concord from "../concord.js";
import {
  Device,
  DEFAULT_SCHEMA,
  EntityState,
  LamportClock,
  MemoryStore,
  Replica,
  compareElements,
  wsUrl,
} from "../concord.js";
import { FakeServer, SPACE, setOp } from "../testlib/fake-server.js";

const read = (path) => readFileSync(new URL(path, import.meta.url), "utf8");

test("concord.d.ts declares every runtime export, and nothing else", () => {
  const declared = [
    ...read("../concord.d.ts").matchAll(/^export (?:declare )?(?:class|function|const) (\w+)/gm),
  ].map((m) => m[1]);
  assert.deepEqual([...new Set(declared)].sort(), Object.keys(concord).sort());
});

test("every module stays small (under 400 lines)", () => {
  for (const name of [
    "device",
    "engine",
    "writer",
    "state",
    "replica",
    "session",
    "http",
    "link",
    "idb-store",
    "store",
  ]) {
    const lines = read(`../src/${name}.js`).split("\n").length;
    assert.ok(lines < 400, `src/${name}.js has ${lines} lines`);
  }
});

test("DEFAULT_SCHEMA has the field types of crdt/'s default schema", () => {
  const python = JSON.parse(read("../vectors/cases.json")).schema.entity_types;
  for (const [type, spec] of Object.entries(DEFAULT_SCHEMA.entity_types)) {
    assert.deepEqual(spec.fields, python[type].fields, type);
  }
});

test("wsUrl, LamportClock and element order", () => {
  assert.equal(wsUrl("http://127.0.0.1:8000/"), "ws://127.0.0.1:8000/v1/sync");
  assert.equal(wsUrl("https://concord.example"), "wss://concord.example/v1/sync");
  const clock = new LamportClock();
  clock.observe(5);
  clock.observe(3);
  assert.equal(clock.tick(), 6);
  assert.deepEqual([3, "b", -1, "\u{1f600}", "\uffff", 10].sort(compareElements), [
    -1,
    3,
    10,
    "b",
    "\uffff",
    "\u{1f600}",
  ]);
});

test("a device reopened on its store resumes: session, queue, cursors, states, rejected", async () => {
  const server = new FakeServer();
  server.store(setOp("00000000-0000-4000-8000-000000000001", "from the server"));
  const store = new MemoryStore();
  const options = { baseUrl: "http://concord.test", store, WebSocket: server.WebSocket, fetch: server.fetch };
  const first = await Device.open({ ...options, email: "a@x.test", password: "pw" });
  await first.sync();
  first.goOffline();
  const queued = await first.set(SPACE, "task", "t-2", "title", "queued offline");
  await first.close();
  const logins = server.fetches.length;
  const again = await Device.open(options); // no password: the stored session
  try {
    assert.equal(server.fetches.length, logins);
    assert.equal(again.deviceId, first.deviceId);
    assert.equal(again.cursor(SPACE), 1);
    assert.equal(again.state(SPACE, "task", "t-1").fields.title.value, "from the server");
    assert.deepEqual(
      again.pending().map((op) => op.op_id),
      [queued],
    );
    assert.equal(again.state(SPACE, "task", "t-2").fields.title.value, "queued offline");
    assert.ok(again.replica.clock.value >= 2);
    await again.sync();
    assert.deepEqual([...store.queue.keys()], []);
    assert.equal(server.sent("hello").at(-1).subscriptions[0].after, 1);
  } finally {
    await again.close();
  }
  await assert.rejects(
    Device.open({ ...options, email: "someone@else.test", password: "pw" }),
    /belongs to a@x.test/,
  );
});

test("the replica rebuilds its local state without an op rejected for good", () => {
  const r = new Replica("dev");
  const a = r.makeOp(SPACE, "task", "t-1", "set", "title", "a");
  r.addPending(a);
  const bad = r.makeOp(SPACE, "task", "t-1", "set", "done", "nope");
  r.addPending(bad);
  const b = r.makeOp(SPACE, "task", "t-1", "add", "tags", "x");
  r.addPending(b);
  r.acknowledge([a.op_id]);
  r.reject([bad.op_id]);
  assert.deepEqual(Object.keys(r.view(SPACE, "task", "t-1").fields), ["tags", "title"]);
  assert.deepEqual([...r.pending.keys()], [b.op_id]);
  const confirmed = r.confirmed.get(`${SPACE}\ntask\nt-1`);
  assert.ok(confirmed.holds(a.op_id) && !confirmed.holds(bad.op_id) && !confirmed.holds(b.op_id));
  assert.ok(EntityState.fromJSON(confirmed.toJSON()).holds(a.op_id));
});
