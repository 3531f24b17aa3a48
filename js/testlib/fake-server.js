// An in-process stand-in for a Concord server, for unit tests of the engine's paths a
// real server cannot be made to take on cue (gaps, too_large, rate limits, 4401...).
// Its WebSocket class has the browser API; its fetch answers the auth routes. Each space
// keeps a log with seqs and dedups op_ids, like the real one (no validation, no roles).
// End-to-end behaviour is proved against the real server in js/e2e/.

const WELCOME_LIMITS = {
  max_message_bytes: 1_048_576,
  max_ops_per_push: 1000,
  max_value_bytes: 65_536,
  max_pred: 64,
  max_subscriptions: 100,
  max_pull_limit: 1000,
  lamport_headroom: 2 ** 32,
};

export const SPACE = "5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01";
export const USER = "0d8c0000-0000-4000-8000-000000000001";
export const DEVICE = "0d8c0000-0000-4000-8000-00000000000d";

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

export class FakeServer {
  constructor({ ttlMs = 15 * 60_000 } = {}) {
    this.ttlMs = ttlMs;
    this.logs = new Map(); // space_id -> events
    this.sockets = [];
    this.received = []; // every client message, in order
    this.fetches = []; // every HTTP request: {method, path, body, token}
    this.refuse = 0; // connections to refuse
    this.hooks = {}; // type -> (socket, message) => true when handled
    this.tokens = 0;
    this.serverLamport = 0;
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url, protocols) {
        this.url = url;
        this.protocol = protocols[0];
        this.readyState = 0;
        this.subs = new Map();
        server.sockets.push(this);
        setTimeout(() => {
          if (server.refuse > 0) {
            server.refuse -= 1;
            this.readyState = 3;
            this.onerror?.({});
            this.onclose?.({ code: 1006, reason: "refused" });
          } else {
            this.readyState = 1;
            this.onopen?.({});
          }
        }, 0);
      }

      send(text) {
        if (this.readyState !== 1) throw new Error("not open");
        const message = JSON.parse(text);
        server.received.push(message);
        setTimeout(() => this.readyState === 1 && server.handle(this, message), 0);
      }

      close(code = 1000, reason = "") {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code, reason }), 0);
      }

      /** Server side: send a message. */
      deliver(message) {
        if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(message) });
      }

      /** Server side: close with a code. */
      drop(code = 1001, reason = "") {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        this.onclose?.({ code, reason });
      }
    };
    this.fetch = (url, init) => this._fetch(url, init);
  }

  get live() {
    return this.sockets.filter((s) => s.readyState === 1);
  }

  sent(type) {
    return this.received.filter((m) => m.type === type);
  }

  /** Store an event as another device would; delivered to subscribed sockets. */
  store(op, { deviceId = "other-device" } = {}) {
    const log = this.logs.get(op.space_id) ?? [];
    this.logs.set(op.space_id, log);
    const known = log.find((e) => e.op_id === op.op_id);
    if (known) return { op_id: op.op_id, status: "duplicate", seq: known.seq };
    const event = {
      pred: [],
      field: null,
      value: null,
      ...op,
      seq: log.length + 1,
      device_id: deviceId,
      user_id: USER,
      recorded_at: new Date().toISOString(),
      schema_version: 1,
    };
    log.push(event);
    this.serverLamport = Math.max(this.serverLamport, event.lamport);
    for (const s of this.live) if (s.subs.has(op.space_id)) this._feed(s, op.space_id);
    return { op_id: op.op_id, status: "applied", seq: event.seq };
  }

  _feed(socket, spaceId) {
    const log = this.logs.get(spaceId) ?? [];
    const after = socket.subs.get(spaceId);
    const events = log.filter((e) => e.seq > after);
    if (events.length) {
      socket.subs.set(spaceId, events.at(-1).seq);
      socket.deliver({ type: "events", space_id: spaceId, events, head: log.length });
    }
  }

  _subscribe(socket, spaceId, after) {
    socket.subs.set(spaceId, Math.max(after, socket.subs.get(spaceId) ?? 0));
    this._feed(socket, spaceId);
    socket.deliver({ type: "caught_up", space_id: spaceId, seq: socket.subs.get(spaceId) });
  }

  handle(socket, message) {
    const hook = this.hooks[message.type];
    if (hook && hook(socket, message)) return;
    if (message.type === "hello") {
      socket.deliver({
        type: "welcome",
        user_id: USER,
        device_id: DEVICE,
        server_lamport: this.serverLamport,
        token_expires_at: new Date(Date.now() + this.ttlMs).toISOString(),
        limits: WELCOME_LIMITS,
      });
      for (const sub of message.subscriptions) this._subscribe(socket, sub.space_id, sub.after);
    } else if (message.type === "subscribe") {
      this._subscribe(socket, message.space_id, message.after);
    } else if (message.type === "push") {
      const results = message.ops.map((op) => this.store(op, { deviceId: DEVICE }));
      socket.deliver({
        type: "push_result",
        batch_id: message.batch_id,
        server_lamport: this.serverLamport,
        results,
      });
    } else if (message.type === "auth") {
      socket.deliver({ type: "auth_ok", token_expires_at: new Date(Date.now() + this.ttlMs).toISOString() });
    }
  }

  /** A pair as the auth routes answer it. */
  pair() {
    this.tokens += 1;
    return {
      user_id: USER,
      device_id: DEVICE,
      access_token: `access-${this.tokens}`,
      refresh_token: `refresh-${this.tokens}`,
      access_expires_at: new Date(Date.now() + this.ttlMs).toISOString(),
      personal_space_id: SPACE,
    };
  }

  async _fetch(url, init = {}) {
    await tick();
    const { pathname } = new URL(url);
    const body = init.body ? JSON.parse(init.body) : null;
    const token = init.headers?.authorization?.replace(/^Bearer /, "") ?? null;
    const request = { method: init.method, path: pathname, query: new URL(url).searchParams, body, token };
    this.fetches.push(request);
    const route = this.routes?.[`${init.method} ${pathname}`];
    if (route) return route(request);
    if (pathname === "/v1/auth/register") return json(201, this.pair());
    if (pathname === "/v1/auth/login" || pathname === "/v1/auth/refresh") return json(200, this.pair());
    return json(404, { error: { code: "not_found", message: "no such route", retryable: false } });
  }
}

/** A fetch Response with a JSON body. */
export function json(status, body) {
  return new Response(body === null ? null : JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** Resolve once `check()` holds (polling), or fail after `ms`. */
export async function until(check, ms = 3000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A task set op as a client writes it. */
export function setOp(opId, value, { lamport = 1, pred = [], field = "title", entityId = "t-1" } = {}) {
  return {
    op_id: opId,
    space_id: SPACE,
    entity_type: "task",
    entity_id: entityId,
    kind: "set",
    field,
    value,
    pred,
    lamport,
  };
}
