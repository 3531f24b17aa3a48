// The per-device switches: offline, flaky network, slow link, and "token expires in N s".
//
// Offline and flaky are the client's own switches (`goOffline()`, `faults.flaky`); slow
// paces the client's pushes (2 ops a push, 0.5 s apart: its `pushIntervalMs` and batch
// size), so a long queue takes a while to drain, as on a poor link. The
// token control asks the sandbox-only `POST /v1/sandbox/token` for a copy of the device's
// access token that expires in N seconds and hands it to the live link with `auth`: the
// server then pauses delivery and answers pushes `auth_expired` once it expires, as it
// would for a device whose token ran out under a queue. The device's own session (and
// its refresh token) is untouched; proactive renewal is held off until the link has
// expired and been renewed, or the device would renew early, as it normally does.
// Offline, the short token is handed over right after the next connect.

export const FLAKY_P = 0.3;
export const SLOW = { batch: 2, intervalMs: 500 };

export class LinkFaults {
  constructor(device) {
    this.device = device;
    this.pendingTtl = null; // seconds, to apply at the next connect
    this.shortUntil = 0; // epoch ms the short token expires
    this.lastApplied = null;
    device.on("status", (status) => {
      if (status === "online" && this.pendingTtl !== null) {
        const ttl = this.pendingTtl;
        this.pendingTtl = null;
        this.applyNow(ttl).catch((err) => console.warn("sandbox: short token not applied", err));
      }
    });
    device.on("auth_ok", ({ token_expires_at }) => {
      // A renewal after the short token: proactive renewal is back on.
      if (this.shortUntil && Date.parse(token_expires_at) > this.shortUntil + 1000) {
        this.shortUntil = 0;
        this.device.faults.proactiveRefresh = true;
      }
    });
  }

  get offline() {
    return !this.device.online;
  }

  setOffline(off) {
    if (off) this.device.goOffline();
    else this.device.goOnline();
  }

  get flaky() {
    return this.device.faults.flaky > 0;
  }

  setFlaky(on) {
    this.device.faults.flaky = on ? FLAKY_P : 0;
  }

  get slow() {
    return this.device.engine.config.pushIntervalMs > 0;
  }

  setSlow(on) {
    const engine = this.device.engine;
    engine.config.pushIntervalMs = on ? SLOW.intervalMs : 0;
    engine.writer.batchLimit = on ? SLOW.batch : engine.config.batchSize;
  }

  /** Drop the next `n` push results after the server stored the pushes (certain, unlike
   * `flaky`): the device resends the same op_ids and gets `duplicate`. */
  dropNextResults(n) {
    this.device.faults.dropResults += n;
  }

  /** Make the device's link token expire `ttl` seconds from now (at the next connect if
   * it is offline). Resolves with what happened: "applied" or "at next connect". */
  async expireIn(ttl) {
    this.device.faults.proactiveRefresh = false;
    if (!this.device.connected) {
      this.pendingTtl = ttl;
      return "at next connect";
    }
    await this.applyNow(ttl);
    return "applied";
  }

  async applyNow(ttl) {
    const d = this.device;
    const answer = await d.authed((token) =>
      d.api.call("POST", "/v1/sandbox/token", { token, body: { ttl_seconds: ttl } }),
    );
    const link = d.engine.link;
    if (!link || link.isClosed) {
      this.pendingTtl = ttl; // the link went away meanwhile: the next one gets it
      return;
    }
    this.shortUntil = Date.parse(answer.access_expires_at);
    this.lastApplied = answer.access_expires_at;
    this.device.faults.proactiveRefresh = false;
    link.send({ type: "auth", token: answer.access_token });
  }

  /** Milliseconds until the live link's token expires (null offline). */
  linkExpiresIn() {
    const e = this.device.engine;
    return e.link && !e.link.isClosed ? e.linkExpiresAt - Date.now() : null;
  }
}
