// Small helpers shared by the modules: ids, time, sleeping, a resettable signal.

/** A random lowercase canonical UUID (version 4). */
export function uuid4() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Now as RFC 3339 UTC with a `Z` suffix, to the second (a `client_time`). */
export function nowIso(now = Date.now()) {
  return new Date(now).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Epoch milliseconds of an RFC 3339 timestamp. */
export function parseTime(value) {
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new TypeError(`not a timestamp: ${value}`);
  return t;
}

/**
 * A wake-up signal: `wait(ms)` resolves on the next `notify()` or after `ms` (resolving
 * false then). Every waiter of one round is woken together.
 */
export class Signal {
  constructor() {
    this._waiters = new Set();
  }

  wait(ms = null) {
    return new Promise((resolve) => {
      let timer = null;
      const done = (value) => {
        if (timer !== null) clearTimeout(timer);
        this._waiters.delete(done);
        resolve(value);
      };
      this._waiters.add(done);
      if (ms !== null) timer = setTimeout(() => done(false), Math.max(0, ms));
    });
  }

  notify() {
    for (const done of [...this._waiters]) done(true);
  }
}

/** Call `fn(...args)`, reporting (not throwing) what an app callback throws. */
export function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (err) {
    console.error("concord: a callback failed", err);
  }
}

/** The distinct entities of some events or ops: [{entity_type, entity_id}]. */
export function entitiesOf(items) {
  const seen = new Map();
  for (const e of items) {
    seen.set(`${e.entity_type}\n${e.entity_id}`, { entity_type: e.entity_type, entity_id: e.entity_id });
  }
  return [...seen.values()];
}
