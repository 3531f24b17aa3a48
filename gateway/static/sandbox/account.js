// The sandbox user: a throwaway account signed up by the page (a random email and
// password kept in localStorage, so a reload resumes it), and its two devices, each with
// its own IndexedDB database and session: "laptop" (A) and "phone" (B). Both are devices
// of one user, so they share the user's personal space.

import { Device, Faults, IndexedDBStore } from "/sandbox/js/concord.js";
import { hex } from "./dom.js";

const KEY = "concord-sandbox-user";
export const DEVICES = [
  { key: "a", name: "Laptop", deviceName: "sandbox laptop" },
  { key: "b", name: "Phone", deviceName: "sandbox phone" },
];

const dbName = (user, key) => `concord-sandbox-${user.tag}-${key}`;

function stored() {
  try {
    const user = JSON.parse(localStorage.getItem(KEY) ?? "null");
    return user && user.email && user.password && user.tag ? user : null;
  } catch {
    return null;
  }
}

/** Forget the sandbox user: its two databases and the stored credentials. */
export async function forgetUser() {
  const user = stored();
  localStorage.removeItem(KEY);
  if (user) for (const d of DEVICES) await IndexedDBStore.destroy(dbName(user, d.key)).catch(() => {});
}

async function openAll(user, fresh) {
  const devices = {};
  for (const [i, d] of DEVICES.entries()) {
    devices[d.key] = await Device.open({
      baseUrl: location.origin,
      store: new IndexedDBStore(dbName(user, d.key)),
      email: user.email,
      password: user.password,
      register: fresh && i === 0, // the first device signs up; the second signs in
      deviceName: d.deviceName,
      faults: new Faults(),
    });
    if (fresh && i === 0) localStorage.setItem(KEY, JSON.stringify(user));
  }
  return devices;
}

/**
 * The sandbox user and its two open devices. A stored user the server no longer knows
 * (its data dir was wiped) is forgotten and a fresh one signed up.
 */
export async function openSandbox() {
  const known = stored();
  if (known) {
    try {
      return { user: known, devices: await openAll(known, false) };
    } catch (err) {
      console.warn("sandbox: the stored user could not sign in; starting over", err);
      await forgetUser();
    }
  }
  const user = { email: `sandbox-${hex(6)}@sandbox.example`, password: hex(16), tag: hex(4) };
  return { user, devices: await openAll(user, true) };
}
