// The JavaScript client against a real Concord server (CONCORD_JS_E2E_URL): two devices
// sync, an offline queue drains, a conflict shows two heads then resolves, a resend
// after a lost push_result is absorbed as `duplicate`, a permanent rejection is reported.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Device, Faults } from "../concord.js";
import { seeded } from "../testlib/random.js";
import { PASSWORD, recorder, serverUrl, serverView, storedCounts, twoDevices } from "../testlib/e2e.js";

const BASE = serverUrl("CONCORD_JS_E2E_URL");

test("two devices sync a task, and both show what the server reads", async () => {
  const { a, b, space, close } = await twoDevices(BASE);
  try {
    await a.set(space, "task", "t-1", "title", "Buy milk");
    await a.add(space, "task", "t-1", "tags", "errand");
    await a.add(space, "task", "t-1", "tags", "\u{1f95b}");
    await a.inc(space, "task", "t-1", "pomodoros", 2);
    await a.set(space, "task", "t-1", "assignee", "ana");
    await a.sync();
    await b.sync();
    const view = b.state(space, "task", "t-1");
    assert.equal(view.fields.title.value, "Buy milk");
    assert.deepEqual(view.fields.tags.value, ["errand", "\u{1f95b}"]);
    assert.equal(view.fields.pomodoros.value, 2);
    assert.deepEqual(view.fields.assignee.value, ["ana"]);
    assert.deepEqual(view, await serverView(b, space, "task", "t-1"));
    assert.deepEqual(a.state(space, "task", "t-1"), view);
    assert.equal(a.cursor(space), b.cursor(space));
  } finally {
    await close();
  }
});

test("an offline queue drains after reconnect, each op stored once", async () => {
  const { a, b, space, close } = await twoDevices(BASE);
  const seen = recorder(a);
  try {
    await a.sync();
    a.goOffline();
    assert.equal(a.status, "offline");
    const ids = [];
    for (let i = 0; i < 12; i++) ids.push(await a.set(space, "task", `t-${i}`, "title", `offline ${i}`));
    ids.push(await a.delete(space, "task", "t-0"));
    assert.equal(a.pending().length, 13);
    assert.equal(a.state(space, "task", "t-3").fields.title.value, "offline 3"); // shown at once
    await assert.rejects(a.sync(), { name: "Offline" });
    a.goOnline();
    await a.sync();
    assert.equal(a.pending().length, 0);
    assert.deepEqual(
      seen.ack.map((x) => x.op.op_id),
      ids,
    );
    assert.ok(seen.ack.every((x) => x.status === "applied" && x.seq >= 2));
    await b.sync();
    assert.equal(b.entityIds(space, "task").length, 12);
    assert.equal(b.state(space, "task", "t-0").deleted, true);
    const counts = await storedCounts(a, space);
    assert.deepEqual(
      ids.map((id) => counts.get(id)),
      ids.map(() => 1),
    );
  } finally {
    await close();
  }
});

test("a conflict shows two heads on both devices, then a write resolves it", async () => {
  const { a, b, space, close } = await twoDevices(BASE);
  try {
    await a.set(space, "task", "t-1", "title", "Buy milk");
    await a.sync();
    await b.sync();
    a.goOffline();
    b.goOffline();
    const fromA = await a.set(space, "task", "t-1", "title", "Buy oat milk");
    const fromB = await b.set(space, "task", "t-1", "title", "Buy soy milk");
    a.goOnline();
    b.goOnline();
    await a.sync();
    await b.sync();
    await a.sync();
    for (const device of [a, b]) {
      const title = device.state(space, "task", "t-1").fields.title;
      assert.equal(title.conflicted, true);
      assert.deepEqual(new Set(title.heads.map((h) => h.op_id)), new Set([fromA, fromB]));
      assert.deepEqual(device.state(space, "task", "t-1"), await serverView(device, space, "task", "t-1"));
    }
    const winner = a.state(space, "task", "t-1").fields.title.value;
    assert.equal(winner, b.state(space, "task", "t-1").fields.title.value);
    // Writing without resolving keeps the conflict; a plain write resolves it.
    const partial = await b.set(space, "task", "t-1", "title", "still two", { resolve: false });
    assert.equal(b.state(space, "task", "t-1").fields.title.heads.length, 2);
    await b.sync();
    // a must hold b's write before resolving: its live delivery may trail b's ack by a
    // few ms, and a set made before it arrives names only the heads a knows.
    await a.sync();
    const resolved = await a.set(space, "task", "t-1", "title", "Buy milk, any kind");
    await a.sync();
    await b.sync();
    for (const device of [a, b]) {
      const title = device.state(space, "task", "t-1").fields.title;
      assert.equal(title.conflicted, false);
      assert.deepEqual(
        title.heads.map((h) => h.op_id),
        [resolved],
      );
    }
    const events = await a.api.pullAll(await a.token(), space);
    const last = events.find((e) => e.op_id === resolved);
    assert.equal(last.pred.length, 2);
    assert.ok(last.pred.includes(partial));
  } finally {
    await close();
  }
});

test("a push_result lost after the server stored the push: resent, absorbed as duplicate", async () => {
  const { a, space, close } = await twoDevices(BASE, { phone: { faults: new Faults({ dropResults: 1 }) } });
  const seen = recorder(a);
  try {
    const id = await a.set(space, "task", "t-dup", "title", "once");
    await a.sync();
    assert.equal(a.stats.resultsDropped, 1);
    assert.equal(seen.fault[0].fault, "result_dropped");
    assert.deepEqual(
      seen.ack.map((x) => [x.op.op_id, x.status]),
      [[id, "duplicate"]],
    );
    assert.ok(a.stats.connects >= 2);
    assert.equal((await storedCounts(a, space)).get(id), 1);
    assert.equal(a.state(space, "task", "t-dup").fields.title.value, "once");
  } finally {
    await close();
  }
});

test("a flaky link and cut links lose nothing and store nothing twice", async () => {
  const faults = new Faults({ flaky: 0.5, cutAfterSend: 2, random: seeded(7) });
  const { a, b, space, close } = await twoDevices(BASE, {
    phone: { faults, config: { batchSize: 3, backoffBaseMs: 20 } },
  });
  const seen = recorder(a);
  try {
    const ids = [];
    for (let i = 0; i < 15; i++) ids.push(await a.inc(space, "task", "t-flaky", "pomodoros", 1));
    await a.sync();
    faults.flaky = 0;
    assert.ok(a.stats.resultsDropped >= 1);
    assert.equal(a.stats.linksCut, 2);
    assert.ok(seen.ack.some((x) => x.status === "duplicate"));
    assert.deepEqual(new Set(seen.ack.map((x) => x.op.op_id)), new Set(ids));
    const counts = await storedCounts(a, space);
    assert.deepEqual(
      ids.map((id) => counts.get(id)),
      ids.map(() => 1),
    );
    await b.sync();
    assert.equal(b.state(space, "task", "t-flaky").fields.pomodoros.value, 15);
  } finally {
    await close();
  }
});

test("a permanent rejection is reported, leaves the queue and the shown state", async () => {
  const { a, space, close } = await twoDevices(BASE);
  const seen = recorder(a);
  try {
    await a.set(space, "task", "t-1", "title", "kept");
    const bad = await a.set(space, "task", "t-1", "done", "not a boolean");
    assert.equal(a.state(space, "task", "t-1").fields.done.value, "not a boolean"); // optimistic
    await a.sync();
    assert.deepEqual(
      seen.rejected.map((r) => [r.op.op_id, r.code, r.retryable]),
      [[bad, "type_mismatch", false]],
    );
    assert.deepEqual(
      a.rejected().map((r) => r.op.op_id),
      [bad],
    );
    assert.equal(a.pending().length, 0);
    assert.deepEqual(Object.keys(a.state(space, "task", "t-1").fields), ["title"]);
    assert.equal((await storedCounts(a, space)).get(bad), undefined);
  } finally {
    await close();
  }
});

test("queued ops survive closing the device; reopened, it resends them", async () => {
  const { a, b, space, close } = await twoDevices(BASE);
  try {
    await a.sync();
    a.goOffline();
    const ids = [
      await a.set(space, "task", "t-r", "title", "written offline"),
      await a.add(space, "task", "t-r", "tags", "x"),
    ];
    await a.close();
    const again = await Device.open({ baseUrl: BASE, store: a.store }); // the stored session: no password
    try {
      assert.equal(again.deviceId, a.deviceId);
      assert.deepEqual(
        again.pending().map((op) => op.op_id),
        ids,
      );
      assert.equal(again.state(space, "task", "t-r").fields.title.value, "written offline");
      await again.sync();
      await b.sync();
      assert.deepEqual(b.state(space, "task", "t-r").fields.tags.value, ["x"]);
    } finally {
      await again.close();
    }
    assert.equal(PASSWORD.length > 0, true);
  } finally {
    await close();
  }
});

test("mv, delete, restore and edited_while_deleted match the server's reads", async () => {
  const { a, b, space, close } = await twoDevices(BASE);
  try {
    await a.set(space, "task", "t-1", "title", "x");
    await a.sync();
    await b.sync();
    a.goOffline();
    b.goOffline();
    await a.delete(space, "task", "t-1");
    await a.set(space, "task", "t-1", "assignee", "ana");
    await b.set(space, "task", "t-1", "assignee", "ben");
    await b.remove(space, "task", "t-1", "tags", "never added");
    await b.inc(space, "task", "t-1", "pomodoros", -3);
    a.goOnline();
    b.goOnline();
    await a.sync();
    await b.sync();
    await a.sync();
    for (const device of [a, b]) {
      const view = device.state(space, "task", "t-1");
      assert.equal(view.deleted, true);
      assert.equal(view.fields.assignee.value.length, 2);
      assert.deepEqual(view, await serverView(device, space, "task", "t-1"));
    }
    await b.restore(space, "task", "t-1");
    await b.sync();
    await a.sync();
    assert.equal(a.state(space, "task", "t-1").deleted, false);
    assert.deepEqual(a.state(space, "task", "t-1"), await serverView(a, space, "task", "t-1"));
  } finally {
    await close();
  }
});
