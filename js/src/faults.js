// Fault switches for the app, the sandbox and tests, and the reconnect backoff
// (client/faults.py). Going offline is `device.goOffline()`; these reproduce what a bad
// link does to a device that is online.

/**
 * Faults to inject on the device's link; all off (a healthy link) by default. Counts are
 * budgets: each fires that many times. Change them while the device runs.
 */
export class Faults {
  constructor({
    dropResults = 0,
    flaky = 0,
    cutAfterSend = 0,
    dropRefreshResults = 0,
    proactiveRefresh = true,
    random = Math.random,
  } = {}) {
    /** `push_result` messages to drop after the server stored the push; the link is then
     * cut, as a lost answer leaves it, and the device resends: `duplicate`. */
    this.dropResults = dropResults;
    /** Probability (0..1) of dropping each `push_result` the same way: a flaky link. */
    this.flaky = flaky;
    /** Pushes after which the link is cut at once, before any answer can arrive. */
    this.cutAfterSend = cutAfterSend;
    /** Refresh answers to lose after the server rotated the token: the device presents
     * the same refresh token again, which the server's 30 s grace answers alike. */
    this.dropRefreshResults = dropRefreshResults;
    /** Whether the device renews on `auth_expiring` (off: tokens expire under a queue,
     * forcing the per-op `auth_expired` path). */
    this.proactiveRefresh = proactiveRefresh;
    this.random = random;
  }

  takeDrop() {
    if (this.dropResults > 0) {
      this.dropResults -= 1;
      return true;
    }
    return this.flaky > 0 && this.random() < this.flaky;
  }

  takeCut() {
    if (this.cutAfterSend > 0) {
      this.cutAfterSend -= 1;
      return true;
    }
    return false;
  }

  takeRefreshDrop() {
    if (this.dropRefreshResults > 0) {
      this.dropRefreshResults -= 1;
      return true;
    }
    return false;
  }
}

/**
 * Exponential backoff with full jitter: `uniform(0, min(cap, base * 2 ** attempt))` ms.
 * Full jitter spreads the reconnects of many devices after an outage.
 */
export class Backoff {
  constructor(baseMs = 200, capMs = 10_000, random = Math.random) {
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.attempt = 0;
    this.random = random;
  }

  next() {
    const delay = this.random() * Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return delay;
  }

  reset() {
    this.attempt = 0;
  }
}
