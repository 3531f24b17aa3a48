// The HTTP routes of docs/protocol.md section 6, over fetch (client/http.py).
//
// Every non-2xx answer becomes an ApiError carrying the wire `code`; a request that got
// no answer at all (refused, reset, timed out) becomes ApiError with status 0 and code
// `unavailable`, retryable.

import { ApiError } from "./errors.js";
import { uuid4 } from "./util.js";

const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);

/** One Concord base URL (`http://host:port`); `fetch` and `faults` may be injected. */
export class HttpApi {
  constructor(baseUrl, { fetch = globalThis.fetch, faults = null, timeoutMs = 30_000 } = {}) {
    if (typeof fetch !== "function") throw new TypeError("no fetch: pass options.fetch");
    this.baseUrl = String(baseUrl).replace(/\/+$/, "");
    // Called as a plain function: a browser's fetch refuses any `this` but the window.
    this._fetch = (url, init) => fetch(url, init);
    this.faults = faults;
    this.timeoutMs = timeoutMs;
  }

  /** One request; the parsed JSON answer (null for 204). */
  async call(method, path, { token = null, body = undefined, query = null } = {}) {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    const headers = { accept: "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let response;
    try {
      response = await this._fetch(url.href, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new ApiError(0, "unavailable", `${err?.name ?? "Error"}: ${err?.message ?? err}`, {
        retryable: true,
      });
    }
    const text = await response.text().catch(() => "");
    if (response.status >= 400) throw errorOf(response.status, text);
    return text ? JSON.parse(text) : null;
  }

  // ------------------------------------------------------------------ accounts

  register(email, password, deviceName) {
    return this.call("POST", "/v1/auth/register", {
      body: { email, password, device_name: deviceName },
    });
  }

  login(email, password, deviceName, deviceId = null) {
    const body = { email, password, device_name: deviceName };
    if (deviceId) body.device_id = deviceId;
    return this.call("POST", "/v1/auth/login", { body });
  }

  /** Rotate the pair. The `dropRefreshResults` fault loses the answer after the server
   * rotated it, as a dropped connection would. */
  async refresh(refreshToken) {
    const answer = await this.call("POST", "/v1/auth/refresh", {
      body: { refresh_token: refreshToken },
    });
    if (this.faults?.takeRefreshDrop()) {
      throw new ApiError(0, "unavailable", "fault: refresh answer dropped", { retryable: true });
    }
    return answer;
  }

  logout(token) {
    return this.call("POST", "/v1/auth/logout", { token });
  }

  devices(token) {
    return this.all("/v1/devices", token, "devices");
  }

  revokeDevice(token, deviceId) {
    return this.call("DELETE", `/v1/devices/${enc(deviceId)}`, { token });
  }

  // ------------------------------------------------------------------ spaces and members

  async createSpace(token, name) {
    return (await this.call("POST", "/v1/spaces", { token, body: { name } })).space_id;
  }

  spaces(token) {
    return this.all("/v1/spaces", token, "spaces");
  }

  /**
   * Invite `email` to a space as `role` (owners only). A pending invitation:
   * `{invitation_id, code, expires_at}` (hand the code over out of band). For an email
   * that is already a member the role changes at once: `{space_id, user_id, role}`.
   */
  invite(token, spaceId, email, role) {
    return this.call("POST", `/v1/spaces/${enc(spaceId)}/members`, { token, body: { email, role } });
  }

  /** Accept an invitation code as the signed-in user: `{space_id, role}`. */
  acceptInvitation(token, code) {
    return this.call("POST", "/v1/invitations/accept", { token, body: { code } });
  }

  /** The space's pending invitations (owners only; never the codes). */
  invitations(token, spaceId) {
    return this.all(`/v1/spaces/${enc(spaceId)}/invitations`, token, "invitations");
  }

  cancelInvitation(token, spaceId, invitationId) {
    return this.call("DELETE", `/v1/spaces/${enc(spaceId)}/invitations/${enc(invitationId)}`, {
      token,
    });
  }

  removeMember(token, spaceId, userId) {
    return this.call("DELETE", `/v1/spaces/${enc(spaceId)}/members/${enc(userId)}`, { token });
  }

  // ------------------------------------------------------------------ sync and reads

  push(token, ops, batchId = uuid4()) {
    return this.call("POST", "/v1/sync/push", { token, body: { batch_id: batchId, ops } });
  }

  /** Every event of the space after `after`, reading pages until the head. */
  async pullAll(token, spaceId, after = 0) {
    const events = [];
    for (;;) {
      const page = await this.call("GET", "/v1/sync/pull", {
        token,
        query: { space_id: spaceId, after, limit: 1000 },
      });
      events.push(...page.events);
      if (page.events.length === 0 || page.events.at(-1).seq >= page.head) return events;
      after = page.events.at(-1).seq;
    }
  }

  /** The server's merged state of one entity, or null when it has none (404). */
  async entity(token, spaceId, entityType, entityId, { asOfSeq = null } = {}) {
    const path = `/v1/spaces/${enc(spaceId)}/entities/${enc(entityType)}/${enc(entityId)}`;
    try {
      return await this.call("GET", path, { token, query: { as_of_seq: asOfSeq } });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    }
  }

  history(token, spaceId, entityType, entityId) {
    const path = `/v1/spaces/${enc(spaceId)}/entities/${enc(entityType)}/${enc(entityId)}/history`;
    return this.all(path, token, "events");
  }

  reminders(token, spaceId) {
    return this.all(`/v1/spaces/${enc(spaceId)}/reminders`, token, "reminders");
  }

  schema() {
    return this.call("GET", "/v1/schema");
  }

  /** Every item of a paged list route (`limit`, and `next` fed back as `after`). */
  async all(path, token, key, query = {}) {
    const items = [];
    let after = null;
    for (;;) {
      const page = await this.call("GET", path, { token, query: { ...query, limit: 500, after } });
      items.push(...page[key]);
      if (!page.next) return items;
      after = page.next;
    }
  }
}

function enc(part) {
  return encodeURIComponent(part);
}

/** The ApiError of an error answer (its JSON body, or the status alone). */
export function errorOf(status, text) {
  try {
    const error = JSON.parse(text).error;
    if (error && typeof error.code === "string") {
      return new ApiError(status, error.code, String(error.message ?? ""), {
        retryable: Boolean(error.retryable),
        retryAfterMs: error.retry_after_ms ?? null,
      });
    }
  } catch {
    // not JSON: fall through
  }
  const retryable = RETRYABLE_STATUS.has(status);
  return new ApiError(status, retryable ? "unavailable" : "bad_message", text.slice(0, 200), {
    retryable,
  });
}
