// `Device`: the client's one entry point (the Python SDK's client/device.py).
//
//   const phone = await Device.open({ baseUrl, email, password, store: new IndexedDBStore("phone") });
//   const opId = await phone.set(space, "task", "t-1", "title", "Buy milk");
//   await phone.sync();
//   phone.state(space, "task", "t-1").fields.title.value;
//
// Every write is queued durably (the store) before the call resolves and shows in
// `state` at once; the sync engine sends it when a link is up, as often as needed, until
// the server answers for it for good.

import { Emitter } from "./emitter.js";
import { SyncEngine } from "./engine.js";
import { ApiError, ClientError, Offline, SyncTimeout } from "./errors.js";
import { Faults } from "./faults.js";
import { HttpApi } from "./http.js";
import { Replica } from "./replica.js";
import { DEFAULT_SCHEMA } from "./schema.js";
import { Session } from "./session.js";
import { MemoryStore } from "./store.js";
import { entitiesOf, nowIso } from "./util.js";

export class Device {
  /**
   * Open (or create) the device kept in `store`. A stored session is resumed (no password
   * needed); otherwise the device signs in with `email`/`password` (`register: true`
   * creates the account), naming its stored device_id so it stays the same device.
   */
  static async open(options = {}) {
    const {
      baseUrl = globalThis.location?.origin,
      store = new MemoryStore(),
      email = null,
      password = null,
      deviceName = "concord-js",
      register = false,
      online = true,
      config = {},
      faults = new Faults(),
      schema = DEFAULT_SCHEMA,
      WebSocket = globalThis.WebSocket,
      fetch = globalThis.fetch,
    } = options;
    if (!baseUrl) throw new TypeError("Device.open needs a baseUrl");
    if (typeof WebSocket !== "function") {
      throw new TypeError(
        "no WebSocket here: pass options.WebSocket (Node 20: run with --experimental-websocket)",
      );
    }
    const api = new HttpApi(baseUrl, { fetch, faults });
    const snapshot = await store.open();
    try {
      const stored = snapshot.meta.email;
      if (email && stored && stored !== email)
        throw new ClientError(`this store belongs to ${stored}, not ${email}`);
      const session = new Session(api, store, { email, password, deviceName, register });
      await session.start(snapshot.meta);
      const device = new Device(api, store, session, snapshot, { config, faults, schema, WebSocket });
      device.engine.start(online);
      return device;
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  constructor(api, store, session, snapshot, { config, faults, schema, WebSocket }) {
    this.api = api;
    this.store = store;
    this.session = session;
    this.emitter = new Emitter();
    this._chain = Promise.resolve();
    this._closed = false;
    this.replica = new Replica(session.deviceId, { lamport: Number(snapshot.meta.lamport ?? 0), schema });
    this.replica.load(snapshot.states, snapshot.queue);
    this.engine = new SyncEngine({
      baseUrl: api.baseUrl,
      replica: this.replica,
      store,
      session,
      config,
      faults,
      cursors: new Map(Object.entries(snapshot.cursors)),
      rejected: [...snapshot.rejected],
      emitter: this.emitter,
      persist: (fn) => this._persist(fn),
      WebSocket,
    });
    for (const op of snapshot.queue) this.engine.watch(op.space_id);
    if (session.personalSpaceId) this.engine.watch(session.personalSpaceId);
  }

  /** Run store writes one at a time, in call order (each is all or nothing). */
  _persist(fn) {
    const run = this._chain.then(fn);
    this._chain = run.catch(() => {});
    return run;
  }

  /** Stop syncing and close the store; queued ops stay there for the next open. */
  async close() {
    if (this._closed) return;
    this._closed = true;
    await this.engine.stop();
    await this._chain;
    await this.store.close();
  }

  // ------------------------------------------------------------------ identity

  get userId() {
    return this.session.userId;
  }

  get deviceId() {
    return this.session.deviceId;
  }

  get personalSpaceId() {
    return this.session.personalSpaceId;
  }

  /** A valid access token, for HTTP calls through `device.api`. */
  token() {
    return this.session.freshToken(2000);
  }

  // ------------------------------------------------------------------ writes

  /**
   * Set an lww or mv field. `pred` is the field's current heads, so writing over a
   * conflict resolves it. `{resolve: false}` supersedes only the winning head (the value
   * shown), leaving the other heads in conflict; `{pred: [...]}` names them yourself.
   */
  set(spaceId, entityType, entityId, field, value, { resolve = true, pred = null } = {}) {
    if (pred === null && !resolve)
      pred = this.replica.fieldHeads(spaceId, entityType, entityId, field).slice(0, 1);
    return this._write(spaceId, entityType, entityId, "set", field, value, pred);
  }

  /** Add `delta` (an integer) to a counter field. */
  inc(spaceId, entityType, entityId, field, delta) {
    return this._write(spaceId, entityType, entityId, "inc", field, delta);
  }

  /** Add an element to a set field. */
  add(spaceId, entityType, entityId, field, element) {
    return this._write(spaceId, entityType, entityId, "add", field, element);
  }

  /** Remove an element: `pred` is the live adds of it this device has seen. */
  remove(spaceId, entityType, entityId, field, element) {
    return this._write(spaceId, entityType, entityId, "remove", field, element);
  }

  delete(spaceId, entityType, entityId) {
    return this._write(spaceId, entityType, entityId, "delete", null, null);
  }

  restore(spaceId, entityType, entityId) {
    return this._write(spaceId, entityType, entityId, "restore", null, null);
  }

  async _write(spaceId, entityType, entityId, kind, field, value, pred = null) {
    if (this._closed) throw new ClientError("the device is closed");
    const { replica, engine } = this;
    const op = replica.makeOp(spaceId, entityType, entityId, kind, field, value, {
      pred,
      clientTime: nowIso(),
    });
    engine.writer.notDurable.add(op.op_id);
    replica.addPending(op); // shown at once; later writes see it (pred, lamport)
    engine.watch(spaceId);
    this.emitter.emit("change", { space_id: spaceId, entities: entitiesOf([op]) });
    try {
      await this._persist(() => this.store.enqueue(op, replica.clock.value));
    } catch (err) {
      replica.reject([op.op_id]);
      this.emitter.emit("change", { space_id: spaceId, entities: entitiesOf([op]) });
      throw err;
    } finally {
      engine.writer.notDurable.delete(op.op_id);
    }
    engine.wake.notify();
    return op.op_id;
  }

  // ------------------------------------------------------------------ reads

  /** The merged state this device shows (server events plus its queued ops): the shape
   * of the server's entity read without `seq`; null while it holds no client op. */
  state(spaceId, entityType, entityId) {
    return this.replica.view(spaceId, entityType, entityId);
  }

  /** The op_ids of a field's heads as shown, greatest order key first. */
  fieldHeads(spaceId, entityType, entityId, field) {
    return this.replica.fieldHeads(spaceId, entityType, entityId, field);
  }

  entityIds(spaceId, entityType) {
    return this.replica.entityIds(spaceId, entityType);
  }

  /** Ops queued and not yet answered for good, in send order. */
  pending() {
    return [...this.replica.pending.values()];
  }

  /** Ops the server refused for good: `{op, code, message, rejected_at}` (persisted). */
  rejected() {
    return [...this.engine.rejected];
  }

  /** The last seq of the space this device holds. */
  cursor(spaceId) {
    return this.engine.cursors.get(spaceId) ?? 0;
  }

  get stats() {
    return this.engine.stats;
  }

  get notifications() {
    return this.engine.notifications;
  }

  get faults() {
    return this.engine.faults;
  }

  /** "offline" | "connecting" | "online" | "signed_out". */
  get status() {
    return this.engine.status;
  }

  get online() {
    return this.engine.online;
  }

  get connected() {
    return this.engine.authed;
  }

  /**
   * Listen: "change" {space_id, entities}, "events" {space_id, events}, "ack" {op,
   * status, seq}, "rejected" {op, code, message, rejected_at, retryable}, "caught_up"
   * {space_id, seq}, "notification", "status", "auth_ok", "space_lost" {space_id},
   * "signed_out", "fault", "server_error", "error". Returns the unsubscribe function.
   */
  on(name, fn) {
    return this.emitter.on(name, fn);
  }

  // ------------------------------------------------------------------ link

  /** Switch the link off (airplane mode): writes keep queueing. */
  goOffline() {
    this.engine.goOffline();
  }

  /** Switch the link on: connect, resend the queue, catch up. */
  goOnline() {
    this.engine.goOnline();
  }

  /** Receive a space's events (the personal space and spaces written to are automatic). */
  subscribe(spaceId) {
    this.engine.watch(spaceId);
  }

  unsubscribe(spaceId) {
    this.engine.unwatch(spaceId);
  }

  /**
   * Resolve once the queue is drained and every subscribed space is caught up with the
   * server: a fresh `caught_up` per space, asked for after the queue drained, so it
   * covers what other devices stored before the call. Offline, SyncTimeout, SignedOut.
   */
  async sync({ withinMs = 60_000 } = {}) {
    if (!this.online) throw new Offline("the device is offline: goOnline() first");
    const engine = this.engine;
    const deadline = Date.now() + withinMs;
    if (!(await engine.waitUntil(() => this.replica.pending.size === 0, deadline))) {
      throw new SyncTimeout(`${this.replica.pending.size} ops still queued after ${withinMs} ms`);
    }
    const spaces = [...engine.spaces].sort();
    const marks = new Map(spaces.map((s) => [s, engine.caught.get(s)?.generation ?? 0]));
    engine.resubscribe(spaces); // the server answers each with a fresh caught_up
    const caughtUp = () =>
      spaces.every((s) => {
        if (engine.lostSpaces.has(s)) return true;
        const { generation = 0, seq = 0 } = engine.caught.get(s) ?? {};
        const held = engine.cursors.get(s) ?? 0;
        return generation > marks.get(s) && held >= seq && held >= (engine.ackedSeq.get(s) ?? 0);
      });
    if (!(await engine.waitUntil(caughtUp, deadline))) {
      throw new SyncTimeout(`spaces not caught up after ${withinMs} ms`);
    }
  }

  // ------------------------------------------------------------------ HTTP, signed in

  /** Call `fn(token)`; an `auth_expired` answer refreshes the token and calls it again. */
  async authed(fn) {
    try {
      return await fn(await this.token());
    } catch (err) {
      if (!(err instanceof ApiError) || err.code !== "auth_expired") throw err;
      return fn(await this.session.refresh(this.session.generation));
    }
  }

  async createSpace(name) {
    const spaceId = await this.authed((t) => this.api.createSpace(t, name));
    this.subscribe(spaceId);
    return spaceId;
  }

  spaces() {
    return this.authed((t) => this.api.spaces(t));
  }

  /** Invite by email (owners): `{invitation_id, code, expires_at}`; hand the code over. */
  invite(spaceId, email, role) {
    return this.authed((t) => this.api.invite(t, spaceId, email, role));
  }

  /** Accept a code: `{space_id, role}`; the space is subscribed at once. */
  async acceptInvitation(code) {
    const joined = await this.authed((t) => this.api.acceptInvitation(t, code));
    this.subscribe(joined.space_id);
    return joined;
  }

  invitations(spaceId) {
    return this.authed((t) => this.api.invitations(t, spaceId));
  }

  cancelInvitation(spaceId, invitationId) {
    return this.authed((t) => this.api.cancelInvitation(t, spaceId, invitationId));
  }

  removeMember(spaceId, userId) {
    return this.authed((t) => this.api.removeMember(t, spaceId, userId));
  }

  /** The server's own read of an entity (null when it has none). */
  serverState(spaceId, entityType, entityId) {
    return this.authed((t) => this.api.entity(t, spaceId, entityType, entityId));
  }

  /** Revoke this device's session on the server, then close. */
  async logout() {
    await this.authed((t) => this.api.logout(t));
    await this.close();
  }
}
