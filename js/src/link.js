// One WebSocket to `/v1/sync` (docs/protocol.md section 5) speaking `concord.v1.json`
// (client/link.py). Works with the browser's WebSocket and Node's (22+, or 20 with
// --experimental-websocket), or any class with that API passed as `WebSocket`.

import { LinkClosed } from "./errors.js";

export const PROTOCOL = "concord.v1.json";
export const CLOSE_UNAUTHENTICATED = 4401;
export const HELLO_TIMEOUT_MS = 15_000;

/** `http://host:port` -> `ws://host:port/v1/sync` (https -> wss). */
export function wsUrl(baseUrl) {
  const base = String(baseUrl).replace(/\/+$/, "");
  if (base.startsWith("https://")) return `wss://${base.slice(8)}/v1/sync`;
  if (base.startsWith("http://")) return `ws://${base.slice(7)}/v1/sync`;
  return `${base}/v1/sync`;
}

export class Link {
  /** Open a socket; resolves once it is open, rejects with LinkClosed if it is not. */
  static connect(baseUrl, WebSocketImpl, { openTimeoutMs = 10_000 } = {}) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocketImpl(wsUrl(baseUrl), [PROTOCOL]);
      } catch (err) {
        reject(new LinkClosed(null, `cannot connect: ${err.message}`));
        return;
      }
      const timer = setTimeout(() => {
        fail("connect timed out");
        try {
          ws.close();
        } catch {
          // already closing
        }
      }, openTimeoutMs);
      const fail = (reason, code = null) => {
        clearTimeout(timer);
        ws.onopen = ws.onclose = ws.onerror = null;
        reject(new LinkClosed(code, `cannot connect: ${reason}`));
      };
      ws.onerror = () => fail("socket error");
      ws.onclose = (e) => fail(e.reason || "closed", e.code);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve(new Link(ws));
      };
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.onMessage = () => {};
    this.closedWith = null;
    /** Resolves with a LinkClosed when the socket is gone (never rejects). */
    this.closed = new Promise((resolve) => {
      this._resolveClosed = resolve;
    });
    ws.onmessage = (e) => {
      if (this.closedWith !== null) return;
      let message;
      try {
        message = JSON.parse(typeof e.data === "string" ? e.data : new TextDecoder().decode(e.data));
      } catch {
        return; // not ours to fix: skip it, as newer servers may add shapes
      }
      if (message && typeof message.type === "string") this.onMessage(message);
    };
    ws.onclose = (e) => this._gone(new LinkClosed(e.code ?? null, e.reason ?? ""));
    ws.onerror = () => {}; // a close event follows
  }

  _gone(closed) {
    if (this.closedWith !== null) return;
    this.closedWith = closed;
    this._resolveClosed(closed);
  }

  get isClosed() {
    return this.closedWith !== null;
  }

  send(message) {
    if (this.closedWith !== null) throw this.closedWith;
    this.ws.send(JSON.stringify(message));
  }

  /** Close from this side (1000, or 3000..4999 as browsers allow); `closed` resolves now. */
  close(code = 1000, reason = "") {
    try {
      this.ws.close(code, reason);
    } catch {
      // already closed
    }
    this._gone(new LinkClosed(code, reason || "closed by the client"));
  }

  /** Take every message from now on, starting with any that arrived since `welcome`. */
  listen(handler) {
    const held = this._held ?? [];
    this._held = null;
    this.onMessage = handler;
    for (const message of held) if (this.closedWith === null) handler(message);
  }

  /** Send `hello`; resolves with `welcome` (anything else first is a protocol error). */
  hello(token, lamport, subscriptions) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new LinkClosed(null, "no welcome in time"));
        this.close(1000, "no welcome");
      }, HELLO_TIMEOUT_MS);
      this.onMessage = (message) => {
        clearTimeout(timer);
        const held = [];
        this._held = held; // what follows the welcome waits for `listen`
        this.onMessage = (next) => held.push(next);
        if (message.type === "welcome") resolve(message);
        else {
          reject(new LinkClosed(null, `expected welcome, got ${message.type}`));
          this.close(1000, "protocol error");
        }
      };
      this.closed.then((closed) => {
        clearTimeout(timer);
        reject(closed);
      });
      this.send({ type: "hello", token, lamport, subscriptions });
    });
  }
}
