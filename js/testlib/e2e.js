// Helpers of the end-to-end tests: real Concord servers named by environment variables
// (tests/e2e/test_js_client.py starts them and runs `node --test js/e2e/`).

import assert from "node:assert/strict";

import { Device, MemoryStore } from "../concord.js";

export const PASSWORD = "correct horse battery";

/** The server URL in `variable`; a missing one fails the test (it never skips). */
export function serverUrl(variable) {
  const url = process.env[variable];
  assert.ok(url, `${variable} is not set: run these through tests/e2e/test_js_client.py`);
  return url;
}

export function newEmail(tag = "js") {
  return `${tag}-${Date.now()}-${Math.random().toString(16).slice(2, 8)}@example.test`;
}

const QUICK = { backoffBaseMs: 50, backoffCapMs: 1000 };

/** Register a user on `phone` and sign `laptop` in as the same user: two devices. */
export async function twoDevices(baseUrl, { phone = {}, laptop = {} } = {}) {
  const email = newEmail();
  const a = await Device.open({
    baseUrl,
    email,
    password: PASSWORD,
    register: true,
    deviceName: "phone",
    store: new MemoryStore(),
    config: QUICK,
    ...phone,
  });
  const b = await Device.open({
    baseUrl,
    email,
    password: PASSWORD,
    deviceName: "laptop",
    store: new MemoryStore(),
    config: QUICK,
    ...laptop,
  });
  return { a, b, email, space: a.personalSpaceId, close: () => Promise.all([a.close(), b.close()]) };
}

/** Record what a device reports: acks, rejections, faults. */
export function recorder(device) {
  const seen = { ack: [], rejected: [], fault: [], signed_out: [] };
  for (const name of Object.keys(seen)) device.on(name, (x) => seen[name].push(x));
  return seen;
}

/** The server's read without `seq`: what a device's `state` must equal once synced. */
export async function serverView(device, space, type, id) {
  const read = await device.serverState(space, type, id);
  if (read === null) return null;
  const { seq, ...view } = read;
  assert.ok(seq >= 1);
  return view;
}

/** Every event of the space on the server, counted per op_id. */
export async function storedCounts(device, space) {
  const events = await device.api.pullAll(await device.token(), space);
  const counts = new Map();
  for (const e of events) counts.set(e.op_id, (counts.get(e.op_id) ?? 0) + 1);
  return counts;
}
