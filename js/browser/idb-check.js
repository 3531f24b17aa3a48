// Runs in a real browser (js/browser/run.js opens it in headless Chromium): the module
// loads with no build step, and IndexedDBStore keeps a device's queue, states, cursors
// and session across a reopen. Results are posted back to the runner.

import { Device, IndexedDBStore } from "../concord.js";
import { FakeServer, SPACE, setOp } from "../testlib/fake-server.js";

const results = [];

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function run(name, fn) {
  try {
    await fn();
    results.push({ name, ok: true });
  } catch (err) {
    results.push({ name, ok: false, error: String(err?.stack ?? err) });
  }
}

await run("IndexedDBStore: writes are read back after a reopen", async () => {
  await IndexedDBStore.destroy("concord-check-store");
  const store = new IndexedDBStore("concord-check-store");
  const empty = await store.open();
  check(empty.queue.length === 0 && Object.keys(empty.meta).length === 0, "a new database is empty");
  const op = (n) => ({
    op_id: `00000000-0000-4000-8000-00000000000${n}`,
    space_id: SPACE,
    kind: "set",
    lamport: n,
  });
  await store.putMeta({ user_id: "u", access_token: "a" });
  for (const n of [1, 2, 3, 4]) await store.enqueue(op(n), n);
  const row = { space_id: SPACE, entity_type: "task", entity_id: "t-1", state: { v: 1, seen: ["x"] } };
  await store.settle(
    [op(1).op_id],
    [{ op: op(3), code: "type_mismatch", message: "no", rejected_at: "2026-01-01T00:00:00Z" }],
    [row],
  );
  await store.applyEvents(SPACE, 7, []);
  await store.applyEvents(SPACE, 5, []); // a cursor never goes back
  await store.close();
  const again = new IndexedDBStore("concord-check-store");
  const snap = await again.open();
  await again.close();
  check(JSON.stringify(snap.queue.map((o) => o.lamport)) === "[2,4]", `queue ${JSON.stringify(snap.queue)}`);
  check(snap.meta.lamport === "4" && snap.meta.user_id === "u", `meta ${JSON.stringify(snap.meta)}`);
  check(snap.cursors[SPACE] === 7, `cursors ${JSON.stringify(snap.cursors)}`);
  check(snap.rejected.length === 1 && snap.rejected[0].code === "type_mismatch", "rejected");
  check(JSON.stringify(snap.states) === JSON.stringify([row]), `states ${JSON.stringify(snap.states)}`);
});

await run("a Device on IndexedDB keeps its offline queue across a reopen", async () => {
  await IndexedDBStore.destroy("concord-check-device");
  const server = new FakeServer();
  server.store(setOp("00000000-0000-4000-8000-0000000000aa", "from the server"));
  const options = { baseUrl: "http://concord.test", WebSocket: server.WebSocket, fetch: server.fetch };
  const first = await Device.open({
    ...options,
    store: new IndexedDBStore("concord-check-device"),
    email: "a@x.test",
    password: "pw",
  });
  await first.sync();
  first.goOffline();
  const queued = await first.set(SPACE, "task", "t-2", "title", "written offline");
  await first.close();
  const again = await Device.open({ ...options, store: new IndexedDBStore("concord-check-device") });
  try {
    check(again.deviceId === first.deviceId, "the same device");
    check(
      again
        .pending()
        .map((o) => o.op_id)
        .join() === queued,
      "the queue survived",
    );
    check(again.state(SPACE, "task", "t-1")?.fields.title.value === "from the server", "states survived");
    check(again.cursor(SPACE) === 1, "the cursor survived");
    await again.sync({ withinMs: 5000 });
    check(again.pending().length === 0, "drained");
  } finally {
    await again.close();
  }
  const third = new IndexedDBStore("concord-check-device");
  const snap = await third.open();
  await third.close();
  check(
    snap.queue.length === 0 && snap.cursors[SPACE] === 2,
    `after the drain: ${JSON.stringify(snap.cursors)}`,
  );
});

document.getElementById("out").textContent = JSON.stringify(results, null, 2);
await fetch("/result", { method: "POST", body: JSON.stringify(results) });
