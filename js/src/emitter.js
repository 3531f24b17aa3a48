// A minimal event emitter: `on(name, fn)` returns the function that unsubscribes.

import { safeCall } from "./util.js";

export class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  on(name, fn) {
    if (typeof fn !== "function") throw new TypeError("a listener must be a function");
    let set = this._listeners.get(name);
    if (set === undefined) this._listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /** Call every listener of `name`; one that throws is reported and the rest still run. */
  emit(name, payload) {
    const set = this._listeners.get(name);
    if (set === undefined) return;
    for (const fn of [...set]) safeCall(fn, payload);
  }
}
