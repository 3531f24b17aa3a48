// The sync engine against an in-process fake server: the paths a real server cannot be
// made to take on cue. (js/e2e/ runs the client against a real one.)

import assert from "node:assert/strict";
import { test } from "node:test";

import { Device, Faults, MemoryStore } from "../concord.js";
import { FakeServer, SPACE, setOp, until } from "../testlib/fake-server.js";

const QUICK = { backoffBaseMs: 5, backoffCapMs: 20 };

async function open(server, options = {}) {
  return Device.open({
    baseUrl: "http://concord.test",
    email: "ana@example.test",
    password: "pw",
    store: new MemoryStore(),
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    ...options,
    config: { ...QUICK, ...options.config },
  });
}

test("hello carries each space's cursor; events advance it; own ops come back once", async () => {
  const server = new FakeServer();
  server.store(setOp("00000000-0000-4000-8000-000000000001", "from elsewhere"));
  const d = await open(server);
  try {
    await d.sync();
    assert.deepEqual(server.sent("hello")[0].subscriptions, [{ space_id: SPACE, after: 0 }]);
    assert.equal(d.cursor(SPACE), 1);
    assert.equal(d.state(SPACE, "task", "t-1").fields.title.value, "from elsewhere");
    await d.set(SPACE, "task", "t-1", "title", "mine");
    await d.sync();
    assert.equal(d.cursor(SPACE), 2);
    assert.equal(d.state(SPACE, "task", "t-1").fields.title.heads.length, 1);
    server.live[0].drop(1001, "going away");
    await until(() => server.sent("hello").length === 2, 3000, "a second hello");
    assert.deepEqual(server.sent("hello")[1].subscriptions, [{ space_id: SPACE, after: 2 }]);
  } finally {
    await d.close();
  }
});

test("lamport: max(own, every lamport seen, server_lamport) + 1", async () => {
  const server = new FakeServer();
  server.serverLamport = 100;
  const d = await open(server);
  try {
    await d.sync();
    await d.set(SPACE, "task", "t-1", "title", "a");
    assert.equal(d.pending()[0].lamport, 101);
    await d.sync();
    server.store(setOp("00000000-0000-4000-8000-000000000002", "b", { lamport: 200, entityId: "t-2" }));
    await d.sync();
    await d.set(SPACE, "task", "t-3", "title", "c");
    assert.equal(d.pending()[0].lamport, 201);
    server.serverLamport = 300;
    await d.sync();
    await d.set(SPACE, "task", "t-4", "title", "d");
    assert.equal(d.pending()[0].lamport, 301);
  } finally {
    await d.close();
  }
});

test("pred: a set names the field's heads, a remove the live adds, delete the lifecycle heads", async () => {
  const server = new FakeServer();
  const d = await open(server, { online: false });
  try {
    const a = await d.set(SPACE, "task", "t-1", "title", "a");
    const b = await d.set(SPACE, "task", "t-1", "title", "b");
    const add = await d.add(SPACE, "task", "t-1", "tags", "x");
    await d.remove(SPACE, "task", "t-1", "tags", "x");
    const del = await d.delete(SPACE, "task", "t-1");
    await d.restore(SPACE, "task", "t-1");
    await d.inc(SPACE, "task", "t-1", "pomodoros", 1);
    const preds = d.pending().map((op) => [op.kind, op.pred]);
    assert.deepEqual(preds, [
      ["set", []],
      ["set", [a]],
      ["add", []],
      ["remove", [add]],
      ["delete", []],
      ["restore", [del]],
      ["inc", []],
    ]);
    assert.deepEqual(d.fieldHeads(SPACE, "task", "t-1", "title"), [b]);
    const lamports = d.pending().map((op) => op.lamport);
    assert.deepEqual(lamports, [1, 2, 3, 4, 5, 6, 7]);
  } finally {
    await d.close();
  }
});

test("writing over a conflict resolves it; resolve:false and an explicit pred do not", async () => {
  const server = new FakeServer();
  const x = "00000000-0000-4000-8000-00000000000a";
  const y = "ffffffff-0000-4000-8000-00000000000b";
  server.store(setOp(x, "X"));
  server.store(setOp(y, "Y"));
  const d = await open(server);
  try {
    await d.sync();
    assert.deepEqual(d.fieldHeads(SPACE, "task", "t-1", "title"), [y, x]);
    const partial = await d.set(SPACE, "task", "t-1", "title", "Y2", { resolve: false });
    assert.deepEqual(d.pending().at(-1).pred, [y]);
    assert.deepEqual(d.fieldHeads(SPACE, "task", "t-1", "title"), [partial, x]);
    await d.set(SPACE, "task", "t-1", "title", "blind", { pred: [] });
    assert.equal(d.state(SPACE, "task", "t-1").fields.title.heads.length, 3);
    const all = await d.set(SPACE, "task", "t-1", "title", "resolved");
    assert.equal(d.pending().at(-1).pred.length, 3);
    assert.deepEqual(d.fieldHeads(SPACE, "task", "t-1", "title"), [all]);
    assert.equal(d.state(SPACE, "task", "t-1").fields.title.conflicted, false);
  } finally {
    await d.close();
  }
});

test("a gap in seqs drops the link and resubscribes from the cursor", async () => {
  const server = new FakeServer();
  const d = await open(server);
  try {
    await d.sync();
    const first = server.live[0];
    first.deliver({
      type: "events",
      space_id: SPACE,
      head: 5,
      events: [
        {
          ...setOp("00000000-0000-4000-8000-000000000005", "gap"),
          seq: 5,
          device_id: "x",
          user_id: null,
          recorded_at: "",
          schema_version: 1,
        },
      ],
    });
    await until(() => server.sent("hello").length === 2, 3000, "reconnect");
    assert.equal(first.readyState, 3);
    assert.equal(d.cursor(SPACE), 0);
    assert.equal(d.state(SPACE, "task", "t-1"), null);
  } finally {
    await d.close();
  }
});

test("auth_expired per op: auth, then the same ops again after auth_ok", async () => {
  const server = new FakeServer();
  let expire = 1;
  server.hooks.push = (socket, message) => {
    if (expire === 0) return false;
    expire -= 1;
    const error = { code: "auth_expired", message: "expired", retryable: true };
    socket.deliver({
      type: "push_result",
      batch_id: message.batch_id,
      server_lamport: 0,
      results: message.ops.map((op) => ({ op_id: op.op_id, status: "rejected", error })),
    });
    return true;
  };
  const d = await open(server);
  try {
    const id = await d.set(SPACE, "task", "t-1", "title", "later");
    await d.sync();
    const pushes = server.sent("push");
    assert.equal(pushes.length, 2);
    assert.deepEqual(
      pushes.map((p) => p.ops.map((op) => op.op_id)),
      [[id], [id]],
    );
    const order = server.received.map((m) => m.type).filter((t) => t !== "subscribe");
    assert.deepEqual(order.slice(0, 4), ["hello", "push", "auth", "push"]);
    assert.equal(server.sent("auth")[0].token, "access-2"); // refreshed over HTTP first
    assert.equal(d.stats.results.auth_expired, 1);
    assert.equal(d.stats.authOk, 1);
  } finally {
    await d.close();
  }
});

test("rate_limited waits retry_after_ms; unavailable backs off; both resend", async () => {
  const server = new FakeServer();
  const answers = [
    { code: "rate_limited", message: "slow down", retryable: true, retry_after_ms: 150 },
    { code: "unavailable", message: "db down", retryable: true },
  ];
  const times = [];
  server.hooks.push = (socket, message) => {
    times.push(Date.now());
    const error = answers.shift();
    if (!error) return false;
    socket.deliver({
      type: "push_result",
      batch_id: message.batch_id,
      server_lamport: 0,
      results: message.ops.map((op) => ({ op_id: op.op_id, status: "rejected", error })),
    });
    return true;
  };
  const d = await open(server, { config: { backoffCapMs: 100 } });
  try {
    await d.set(SPACE, "task", "t-1", "title", "eventually");
    await d.sync();
    assert.equal(times.length, 3);
    assert.ok(times[1] - times[0] >= 140, `waited ${times[1] - times[0]} ms`);
    assert.ok(times[2] - times[1] >= 90, `waited ${times[2] - times[1]} ms`);
    assert.deepEqual(d.stats.results, { rate_limited: 1, unavailable: 1, applied: 1 });
  } finally {
    await d.close();
  }
});

test("too_large for a batch halves it; a single op refused so is rejected for good", async () => {
  const server = new FakeServer();
  server.hooks.push = (socket, message) => {
    const big = message.ops.length > 2 || message.ops.some((op) => op.value === "huge");
    if (big)
      socket.deliver({
        type: "error",
        ref: message.batch_id,
        error: { code: "too_large", message: "too big", retryable: false },
      });
    return big;
  };
  const d = await open(server, { online: false });
  const rejected = [];
  d.on("rejected", (r) => rejected.push(r));
  try {
    for (let i = 0; i < 5; i++) await d.set(SPACE, "task", `t-${i}`, "title", `v${i}`);
    const huge = await d.set(SPACE, "task", "t-h", "title", "huge");
    d.goOnline();
    await d.sync();
    assert.deepEqual(
      server.sent("push").map((p) => p.ops.length),
      [6, 3, 1, 1, 1, 1, 1, 1],
    );
    assert.deepEqual(
      rejected.map((r) => [r.op.op_id, r.code]),
      [[huge, "too_large"]],
    );
    assert.equal(d.state(SPACE, "task", "t-h"), null);
  } finally {
    await d.close();
  }
});

test("a 4401 close refreshes the token before the next hello", async () => {
  const server = new FakeServer();
  const d = await open(server);
  try {
    await d.sync();
    assert.equal(server.sent("hello")[0].token, "access-1");
    server.live[0].drop(4401, "revoked");
    await until(() => server.sent("hello").length === 2, 3000, "reconnect");
    assert.equal(server.sent("hello")[1].token, "access-2");
    assert.equal(server.fetches.filter((f) => f.path === "/v1/auth/refresh").length, 1);
  } finally {
    await d.close();
  }
});

test("refused connections back off exponentially with jitter, then connect", async () => {
  const server = new FakeServer();
  server.refuse = 3;
  const d = await open(server, { config: { backoffBaseMs: 10 } });
  try {
    await d.sync();
    assert.equal(d.stats.reconnects, 3);
    assert.equal(d.stats.connects, 1);
    assert.equal(d.status, "online");
  } finally {
    await d.close();
  }
});

test("space_lost, notification, server kinds and unknown kinds", async () => {
  const server = new FakeServer();
  const d = await open(server);
  const seen = { lost: [], notes: [], events: [] };
  d.on("space_lost", (x) => seen.lost.push(x.space_id));
  d.on("notification", (n) => seen.notes.push(n.id));
  d.on("events", (x) => seen.events.push(...x.events.map((e) => e.kind)));
  try {
    await d.sync();
    server.store({
      op_id: "00000000-0000-4000-8000-0000000000f1",
      space_id: SPACE,
      entity_type: "task",
      entity_id: "t-9",
      kind: "reminder_fired",
      value: { reminder_id: "r" },
      lamport: 0,
    });
    server.store({
      op_id: "00000000-0000-4000-8000-0000000000f2",
      space_id: SPACE,
      entity_type: "task",
      entity_id: "t-9",
      kind: "from_the_future",
      field: "title",
      value: "no",
      lamport: 3,
    });
    const notification = {
      id: "r",
      space_id: SPACE,
      entity_type: "task",
      entity_id: "t-9",
      kind: "reminder",
      fire_at: "2026-11-23T10:00:00Z",
      fired_at: "2026-11-23T10:00:01Z",
    };
    server.live[0].deliver({ type: "notification", notification });
    await until(() => seen.events.length === 2 && seen.notes.length === 1);
    assert.deepEqual(seen.events, ["reminder_fired", "from_the_future"]);
    assert.equal(d.state(SPACE, "task", "t-9"), null); // no client event: nothing to show
    assert.equal(d.cursor(SPACE), 2);
    assert.deepEqual(d.notifications, [notification]);
    const other = "11111111-1111-4111-8111-111111111111";
    d.subscribe(other);
    await until(() => server.sent("subscribe").some((m) => m.space_id === other));
    server.live[0].deliver({
      type: "error",
      ref: other,
      error: { code: "not_found", message: "no", retryable: false },
    });
    await until(() => seen.lost.length === 1);
    assert.deepEqual(seen.lost, [other]);
    await d.sync(); // a lost space does not hold sync up
  } finally {
    await d.close();
  }
});

test("going offline stops the link; writes queue; online again drains them", async () => {
  const server = new FakeServer();
  const d = await open(server);
  const statuses = [];
  try {
    await d.sync();
    d.on("status", (s) => statuses.push(s));
    d.goOffline();
    assert.equal(d.status, "offline");
    await d.set(SPACE, "task", "t-1", "title", "queued");
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(server.sent("push").length, 0);
    assert.equal(server.live.length, 0);
    d.goOnline();
    await d.sync();
    assert.equal(server.sent("push").length, 1);
    assert.deepEqual(statuses, ["offline", "connecting", "online"]);
  } finally {
    await d.close();
  }
});

test("a listener that throws does not stop sync", async () => {
  const server = new FakeServer();
  const d = await open(server);
  const errors = console.error;
  const reported = [];
  console.error = (...args) => reported.push(args);
  d.on("ack", () => {
    throw new Error("app bug");
  });
  try {
    await d.set(SPACE, "task", "t-1", "title", "x");
    await d.set(SPACE, "task", "t-1", "title", "y");
    await d.sync();
    assert.equal(reported.length, 2);
    assert.equal(d.pending().length, 0);
  } finally {
    console.error = errors;
    await d.close();
  }
});

test("Faults: budgets fire that many times; flaky draws from its random", () => {
  const f = new Faults({ dropResults: 2, cutAfterSend: 1, dropRefreshResults: 1 });
  assert.deepEqual([f.takeDrop(), f.takeDrop(), f.takeDrop()], [true, true, false]);
  assert.deepEqual([f.takeCut(), f.takeCut()], [true, false]);
  assert.deepEqual([f.takeRefreshDrop(), f.takeRefreshDrop()], [true, false]);
  const draws = [0.1, 0.9];
  const flaky = new Faults({ flaky: 0.5, random: () => draws.shift() });
  assert.deepEqual([flaky.takeDrop(), flaky.takeDrop()], [true, false]);
});

test("Backoff: uniform(0, min(cap, base * 2 ** attempt)), reset after a welcome", async () => {
  const { Backoff } = await import("../concord.js");
  const top = new Backoff(200, 1000, () => 0.999999);
  const delays = [0, 1, 2, 3, 4].map(() => Math.round(top.next()));
  assert.deepEqual(delays, [200, 400, 800, 1000, 1000]);
  top.reset();
  assert.equal(Math.round(top.next()), 200);
  const draws = [0.5, 0.25];
  const half = new Backoff(200, 1000, () => draws.shift());
  assert.deepEqual([half.next(), half.next()], [100, 100]);
});
