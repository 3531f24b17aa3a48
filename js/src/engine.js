// The sync engine: keep one WebSocket up, drain the queue through it, apply what arrives
// (client/engine.py).
//
// One loop runs the connection: refresh the token if it is due, connect, `hello` with a
// subscription per space from its cursor, then read and write until the link fails;
// then back off (exponential, full jitter) and start over. The writer (writer.js) sends
// one push at a time from the head of the queue and waits for its `push_result`; an
// unanswered push is resent on the next link with the same op_ids, and the server's
// dedup makes that safe (`duplicate`, with the original seq).

import { LinkClosed, SignedOut } from "./errors.js";
import { Backoff } from "./faults.js";
import { CLOSE_UNAUTHENTICATED, Link } from "./link.js";
import { entitiesOf, parseTime, Signal } from "./util.js";
import { Writer } from "./writer.js";

export const DEFAULT_CONFIG = Object.freeze({
  /** Most ops per push (the server's `max_ops_per_push` caps it too). */
  batchSize: 200,
  /** Pause after each push, ms: pacing, so a long queue drains over a known time. */
  pushIntervalMs: 0,
  /** A push unanswered this long is given up: the link is cut and the ops resent. */
  pushTimeoutMs: 30_000,
  /** Reconnect backoff: `uniform(0, min(cap, base * 2 ** attempt))` ms. */
  backoffBaseMs: 200,
  backoffCapMs: 10_000,
  /** Renew this long before expiry after `auth_expiring` (null: a quarter of the token's
   * lifetime, between 1 and 60 s). */
  refreshLeadMs: null,
});

export const DEFAULT_LIMITS = Object.freeze({
  max_message_bytes: 1_048_576,
  max_ops_per_push: 1000,
  max_value_bytes: 65_536,
  max_pred: 64,
  max_subscriptions: 100,
  max_pull_limit: 1000,
  lamport_headroom: 2 ** 20,
});

export class SyncEngine {
  constructor({
    baseUrl,
    replica,
    store,
    session,
    config,
    faults,
    cursors,
    rejected,
    emitter,
    persist,
    WebSocket,
  }) {
    Object.assign(this, { baseUrl, replica, store, session, faults, emitter, persist });
    this.config = { ...DEFAULT_CONFIG, ...config };
    this.WebSocket = WebSocket;
    this.cursors = cursors; // Map space_id -> last seq held
    this.rejected = rejected;
    this.stats = {
      connects: 0,
      reconnects: 0,
      pushes: 0,
      events: 0,
      renewals: 0,
      authOk: 0,
      resultsDropped: 0,
      linksCut: 0,
      mixedPushes: 0,
      results: {},
    };
    this.spaces = new Set(cursors.keys());
    this.lostSpaces = new Set();
    this.caught = new Map(); // space_id -> {generation, seq}
    this.ackedSeq = new Map();
    this.notifications = [];
    this.limits = DEFAULT_LIMITS;
    this.online = false;
    this.authed = false;
    this.fatal = null;
    this.link = null;
    this.lastError = null;
    this.wake = new Signal(); // the writer: work to do, auth_ok, link gone
    this.changed = new Signal(); // waitUntil: something changed
    this.kick = new Signal(); // the connection loop: online, offline, stop
    this.dropped = new Signal(); // a link went away
    this.newSpaces = new Set();
    this.writer = new Writer(this);
    this.linkGeneration = 0;
    this.linkExpiresAt = 0;
    this._forceRefresh = false;
    this._renewTimer = null;
    this._stopped = false;
    this._task = null;
    this._status = "offline";
  }

  // ------------------------------------------------------------------ control

  start(online) {
    this.online = online;
    this._task = this._run();
  }

  async stop() {
    this._stopped = true;
    this.online = false;
    this.kick.notify();
    this.dropLink();
    await this._task;
  }

  goOffline() {
    this.online = false;
    this.kick.notify();
    this.dropLink();
    if (this.fatal === null) this._setStatus("offline");
  }

  goOnline() {
    if (this._stopped) return;
    this.online = true;
    this.kick.notify();
  }

  /** Subscribe to a space (at once when connected, else at the next hello). */
  watch(spaceId) {
    if (!this.spaces.has(spaceId)) {
      this.spaces.add(spaceId);
      this.lostSpaces.delete(spaceId);
      this.newSpaces.add(spaceId);
      this.wake.notify();
    }
  }

  /** Subscribe again (on the live link, or at the next hello): a fresh caught_up each. */
  resubscribe(spaces) {
    for (const s of spaces) this.newSpaces.add(s);
    this.wake.notify();
  }

  unwatch(spaceId) {
    this.spaces.delete(spaceId);
    this.newSpaces.delete(spaceId);
    if (this.link && !this.link.isClosed && this.authed)
      this.link.send({ type: "unsubscribe", space_id: spaceId });
  }

  /** Wake everyone waiting in `waitUntil`. */
  notify() {
    this.changed.notify();
  }

  /** Resolve true once `check()` holds, false at `deadline` (epoch ms); SignedOut throws. */
  async waitUntil(check, deadline) {
    for (;;) {
      if (this.fatal !== null) throw this.fatal;
      if (check()) return true;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return false;
      await this.changed.wait(Math.min(remaining, 1000));
    }
  }

  get status() {
    return this._status;
  }

  _setStatus(status) {
    if (status !== this._status) {
      this._status = status;
      this.emitter.emit("status", status);
    }
  }

  // ------------------------------------------------------------------ connection loop

  async _run() {
    const { backoffBaseMs, backoffCapMs } = this.config;
    const backoff = new Backoff(backoffBaseMs, backoffCapMs, this.faults.random);
    while (!this._stopped) {
      if (!this.online) {
        this._setStatus("offline");
        await this.kick.wait();
        continue;
      }
      try {
        this._setStatus("connecting");
        await this._serve(backoff);
      } catch (err) {
        if (err instanceof SignedOut) {
          this._signedOut(err);
          return;
        }
        if (err instanceof LinkClosed && err.code === CLOSE_UNAUTHENTICATED) this._forceRefresh = true;
        this.lastError = err;
        if (!(err instanceof LinkClosed) && err?.name !== "ApiError") this.emitter.emit("error", err);
      } finally {
        this.dropLink();
      }
      if (this.online && !this._stopped) {
        this.stats.reconnects += 1;
        this._setStatus("connecting");
        await this.kick.wait(backoff.next());
      }
    }
    this._setStatus("offline");
  }

  async _serve(backoff) {
    const session = this.session;
    let token;
    if (this._forceRefresh) {
      this._forceRefresh = false;
      token = await session.refresh(session.generation);
    } else {
      token = await session.freshToken(1000);
    }
    const link = await Link.connect(this.baseUrl, this.WebSocket);
    if (!this.online || this._stopped) {
      link.close(1000, "offline");
      return;
    }
    this.link = link;
    const subs = [...this.spaces].sort().map((s) => ({ space_id: s, after: this.cursors.get(s) ?? 0 }));
    this.newSpaces.clear();
    const welcome = await link.hello(token, this.replica.clock.value, subs);
    this.linkGeneration = session.generation;
    this.linkExpiresAt = session.expiresAt;
    this.replica.clock.observe(welcome.server_lamport);
    this.limits = { ...DEFAULT_LIMITS, ...welcome.limits };
    backoff.reset();
    this.stats.connects += 1;
    this.authed = true;
    this._setStatus("online");
    link.listen((message) => this._dispatch(link, message));
    this.notify();
    const writing = this.writer.run(link);
    writing.catch(() => {}); // it ends with the link; the link's close is what we report
    const closed = await Promise.race([link.closed, writing.then(() => link.closed)]);
    throw closed;
  }

  /** Close the link (if any) and wake whatever waits on it. */
  dropLink() {
    this.authed = false;
    if (this._renewTimer !== null) clearTimeout(this._renewTimer);
    this._renewTimer = null;
    const link = this.link;
    this.link = null;
    if (link !== null && !link.isClosed) link.close(1000, "client closing");
    this.writer.abort(link?.closedWith ?? new LinkClosed(1000, "closed"));
    this.wake.notify();
    this.dropped.notify();
  }

  _signedOut(err) {
    this.fatal = err;
    this.online = false;
    this._setStatus("signed_out");
    this.emitter.emit("signed_out", err);
    this.notify();
  }

  // ------------------------------------------------------------------ reading

  _dispatch(link, message) {
    switch (message.type) {
      case "push_result":
        return this.writer.onResult(link, message);
      case "events":
        return this._onEvents(link, message);
      case "caught_up": {
        const generation = (this.caught.get(message.space_id)?.generation ?? 0) + 1;
        this.caught.set(message.space_id, { generation, seq: message.seq });
        this.emitter.emit("caught_up", { space_id: message.space_id, seq: message.seq });
        return this.notify();
      }
      case "auth_ok":
        this.stats.authOk += 1;
        this.authed = true;
        this.linkExpiresAt = parseTime(message.token_expires_at);
        this.emitter.emit("auth_ok", { token_expires_at: message.token_expires_at });
        this.wake.notify();
        return this.notify();
      case "auth_expiring":
        return this._scheduleRenewal(link, parseTime(message.expires_at));
      case "notification":
        this.notifications.push(message.notification);
        this.emitter.emit("notification", message.notification);
        return this.notify();
      case "error":
        return this._onError(link, message.error ?? {}, message.ref ?? null);
      default:
        return undefined; // pong, and shapes of newer servers
    }
  }

  _onEvents(link, message) {
    const spaceId = message.space_id;
    const cursor = this.cursors.get(spaceId) ?? 0;
    const fresh = (message.events ?? []).filter((e) => e.seq > cursor);
    if (fresh.length === 0) return;
    if (fresh[0].seq !== cursor + 1) {
      link.close(1000, `gap in ${spaceId}: expected seq ${cursor + 1}, got ${fresh[0].seq}`);
      return;
    }
    const last = fresh.at(-1).seq;
    const rows = this.replica.applyEvents(fresh);
    this.cursors.set(spaceId, last);
    this.persist(() => this.store.applyEvents(spaceId, last, rows)).catch((err) =>
      this.emitter.emit("error", err),
    );
    this.stats.events += fresh.length;
    this.emitter.emit("events", { space_id: spaceId, events: fresh });
    this.emitter.emit("change", { space_id: spaceId, entities: entitiesOf(fresh) });
    this.notify();
  }

  _onError(link, error, ref) {
    if (this.writer.onError(error, ref)) return;
    if (error.code === "not_found" && ref !== null && this.spaces.has(ref)) {
      this.spaces.delete(ref);
      this.lostSpaces.add(ref);
      this.emitter.emit("space_lost", { space_id: ref });
      this.notify();
    } else if (error.code === "auth_expired") {
      this.renew(link).catch((err) => this._renewFailed(link, err));
    } else {
      this.emitter.emit("server_error", { error, ref });
    }
  }

  // ------------------------------------------------------------------ renewal

  _scheduleRenewal(link, expiresAt) {
    if (!this.faults.proactiveRefresh || this._renewTimer !== null) return;
    const lead = this.config.refreshLeadMs ?? Math.min(60_000, Math.max(1000, this.session.lifetime * 0.25));
    const delay = Math.max(0, expiresAt - lead - Date.now());
    this._renewTimer = setTimeout(() => {
      this._renewTimer = null;
      if (link === this.link) this.renew(link).catch((err) => this._renewFailed(link, err));
    }, delay);
  }

  _renewFailed(link, err) {
    if (err instanceof SignedOut) {
      this._signedOut(err);
      this.dropLink();
    } else if (link === this.link) {
      link.close(1000, `renewal failed: ${err.message}`); // reconnect, refreshing first
    }
  }

  /** Give the live link a valid token with `auth` (`auth_ok` resumes it): the session's
   * own if it is newer than the link's and still valid, else a fresh one. */
  async renew(link) {
    const session = this.session;
    if (session.generation === this.linkGeneration || session.expiresIn() <= 1000) {
      await session.refresh(session.generation);
    }
    if (link.isClosed) return;
    this.linkGeneration = session.generation;
    this.linkExpiresAt = session.expiresAt;
    link.send({ type: "auth", token: session.token });
    this.stats.renewals += 1;
  }
}
