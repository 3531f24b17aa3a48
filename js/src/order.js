// The order key and the Lamport clock (docs/protocol.md section 2), as crdt/order.py has them.

/** Largest integer every JSON client holds exactly; the bound of integer values. */
export const MAX_SAFE_INT = Number.MAX_SAFE_INTEGER;

/** Map a UTF-16 code unit so that comparing mapped units orders by code point. */
function fixUnit(u) {
  if (u < 0xd800) return u;
  return u >= 0xe000 ? u - 0x800 : u + 0x2000;
}

/**
 * Compare two strings by Unicode code point, as Python compares str (JavaScript's `<`
 * compares UTF-16 code units: it puts U+1F600 before U+FFFF). Returns -1, 0 or 1.
 */
export function compareStrings(a, b) {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return fixUnit(x) < fixUnit(y) ? -1 : 1;
  }
  return a.length < b.length ? -1 : 1;
}

/** Compare two ops by order key `(lamport, op_id)`: -1, 0 or 1. */
export function compareOrder(a, b) {
  if (a.lamport !== b.lamport) return a.lamport < b.lamport ? -1 : 1;
  return compareStrings(a.op_id, b.op_id);
}

/** A device's Lamport clock: `observe` every lamport seen, `tick` for each new op. */
export class LamportClock {
  constructor(value = 0) {
    this.value = value;
  }

  /** Advance to `n` if it is ahead: the clock never goes back. */
  observe(n) {
    if (typeof n === "number" && n > this.value) this.value = n;
  }

  /** Advance by one and return the lamport of a new operation. */
  tick() {
    this.value += 1;
    return this.value;
  }
}
