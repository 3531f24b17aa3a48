// Node devices for the Hocuspocus side of bench/e2e/peer.py (one process, one clock).
//   node driver.mjs '<json plan>'
// Protocol on stdio, one JSON line each: the driver prints {"ready": n} once every
// provider is synced, reads {"start", "from", "end"} (wall clock, seconds), runs the
// workload and prints its result.
//
// ingest: `devices` providers, each on a document of its own; a push is one Y.Doc
//   transaction of `opsPerPush` map sets over the device's 1,000 tasks (a root map per
//   task); the device waits for the server's SyncStatus ack (the provider's
//   unsyncedChanges back to 0) before the next push.
// fanout: `docs` documents with `perDoc` providers each: one writer setting a key to
//   "<phase>:<hrtime ns>:<k>" at `rate` writes/s over all documents (open loop), the
//   others observing the map and recording receipt minus send time.
import { createInterface } from "node:readline";
import { HocuspocusProvider } from "@hocuspocus/provider";
import WebSocket from "ws";
import * as Y from "yjs";

const plan = JSON.parse(process.argv[2]);
const FIELDS = ["title", "notes", "position", "done"];
const now = () => process.hrtime.bigint();
const wall = () => Date.now() / 1000;
const sleep = (s) => new Promise((r) => setTimeout(r, Math.max(0, s * 1000)));

function open(name) {
  const document = new Y.Doc();
  const provider = new HocuspocusProvider({
    url: plan.url,
    name,
    document,
    WebSocketPolyfill: WebSocket,
    quiet: true,
  });
  const synced = new Promise((resolve) => provider.on("synced", resolve));
  // Resolved when every update sent so far is acknowledged (the provider counts
  // unacknowledged updates; a SyncStatus message takes one off).
  let waiting = [];
  provider.on("unsyncedChanges", ({ number }) => {
    if (number === 0 && waiting.length) {
      const done = waiting;
      waiting = [];
      done.forEach((resolve) => resolve());
    }
  });
  const acked = () =>
    provider.unsyncedChanges === 0 ? Promise.resolve() : new Promise((r) => waiting.push(r));
  return { document, provider, synced, acked };
}

async function openAll(names) {
  const out = [];
  for (let i = 0; i < names.length; i += 100) {
    const batch = names.slice(i, i + 100).map(open);
    await Promise.all(batch.map((d) => d.synced));
    out.push(...batch);
  }
  return out;
}

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

async function ingest() {
  const devices = await openAll([...Array(plan.devices).keys()].map((i) => `${plan.tag}-${i}`));
  say({ ready: devices.length });
  const go = JSON.parse(await nextLine());
  const latencies = [];
  let ops = 0;
  let pushes = 0;
  await Promise.all(
    devices.map(async (d) => {
      await sleep(go.start - wall());
      let n = 0;
      while (wall() < go.end) {
        const sent = now();
        d.document.transact(() => {
          for (let j = 0; j < plan.opsPerPush; j++, n++) {
            const task = n % 1000;
            const field = FIELDS[Math.floor(n / 1000) % FIELDS.length];
            d.document.getMap(`t-${task}`).set(field, field === "done" ? n % 2 === 0 : `${field} ${n}`);
          }
        });
        await d.acked();
        const at = wall();
        if (at >= go.from && at <= go.end) {
          latencies.push(Number(now() - sent) / 1e9);
          ops += plan.opsPerPush;
          pushes += 1;
        }
      }
    }),
  );
  return { ops, pushes, latencies };
}

async function fanout() {
  const docs = [];
  for (let s = 0; s < plan.docs; s++) {
    docs.push(await openAll([...Array(plan.perDoc).keys()].map(() => `${plan.tag}-doc-${s}`)));
  }
  say({ ready: plan.docs * plan.perDoc });
  const go = JSON.parse(await nextLine());
  const prefix = `${plan.phase}:`;
  const received = []; // [doc index, [[k, latency ns], ...]] per subscriber
  docs.forEach((members, s) => {
    for (const sub of members.slice(1)) {
      const got = [];
      received.push([s, got]);
      const map = sub.document.getMap("m");
      map.observe((event) => {
        if (!event.keysChanged.has("w")) return;
        const value = map.get("w");
        if (typeof value !== "string" || !value.startsWith(prefix)) return;
        const [, sent, k] = value.split(":");
        got.push([Number(k), Number(now() - BigInt(sent))]);
      });
    }
  });
  const interval = docs.length / plan.rate;
  const writes = {};
  const acks = [];
  await Promise.all(
    docs.map(async (members, s) => {
      const writer = members[0];
      const map = writer.document.getMap("m");
      const offset = ((s * 0.6180339887) % 1) * interval;
      const mine = (writes[s] = []);
      const pending = [];
      for (let k = 0; ; k++) {
        const due = go.start + offset + k * interval;
        if (due >= go.end) break;
        await sleep(due - wall());
        const sent = now();
        map.set("w", `${plan.phase}:${sent}:${k}`);
        const counted = due >= go.from;
        pending.push(
          writer.acked().then(() => {
            if (counted) {
              mine.push(k);
              acks.push(Number(now() - sent) / 1e9);
            }
          }),
        );
      }
      await Promise.all(pending);
    }),
  );
  await sleep(go.end + plan.grace - wall());
  return { writes, acks, received };
}

const result = plan.mode === "ingest" ? await ingest() : await fanout();
// Exit only once the (large) line is flushed: stdout to a pipe is asynchronous.
process.stdout.write(JSON.stringify({ result }) + "\n", () => process.exit(0));
