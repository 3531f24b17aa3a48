// The device's session: sign-in, token refresh, and its durable record (client/session.py).
//
// The refresh token rotates on every use (docs/protocol.md section 6). The new pair is written to
// the store before it is used, so a device closed right after a refresh resumes with the
// pair the server issued. A refresh whose answer is lost (no answer, a 5xx) is retried
// with the SAME refresh token: within 30 s of the rotation the server answers it with the
// very pair it issued, so nothing is revoked. A page closed before the new pair was
// stored presents the spent token again at the next open, recovered the same way.
// Only one refresh runs at a time; callers pass the `generation` of the token they found
// wanting, so a burst of `auth_expired` answers refreshes once.

import { ApiError, SignedOut } from "./errors.js";
import { parseTime } from "./util.js";

/** Codes after which a refresh token is worthless: sign in again, or give up. */
const DEAD_SESSION = new Set(["unauthenticated", "refresh_reused"]);
/** How long a lost refresh answer is retried with the same token (the server's grace
 * window is 30 s from the rotation; this stays inside it). */
export const REFRESH_GRACE_MS = 25_000;

export class Session {
  constructor(
    api,
    store,
    { email = null, password = null, deviceName = "concord-js", register = false } = {},
  ) {
    this.api = api;
    this.store = store;
    this.login = { email, password, deviceName, register };
    this.userId = "";
    this.deviceId = "";
    this.personalSpaceId = "";
    this.token = "";
    this.refreshToken = "";
    this.expiresAt = 0; // epoch ms
    this.issuedAt = 0;
    this.generation = 0;
    this.refreshes = 0;
    this.refreshRetries = 0;
    this.signIns = 0; // sign-ins after the first (a session the server ended)
    this._inflight = null;
    this.now = () => Date.now();
    this.sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  }

  /** The token's lifetime in ms (at least one second). */
  get lifetime() {
    return Math.max(1000, this.expiresAt - this.issuedAt);
  }

  expiresIn() {
    return this.expiresAt - this.now();
  }

  /** Resume the stored session, or sign in (register) as the options say. */
  async start(meta) {
    const same = meta.base_url === this.api.baseUrl;
    if (same && meta.refresh_token) {
      this.userId = meta.user_id;
      this.deviceId = meta.device_id;
      this.personalSpaceId = meta.personal_space_id ?? "";
      this.token = meta.access_token;
      this.refreshToken = meta.refresh_token;
      this.expiresAt = Number(meta.access_expires_at ?? 0);
      this.issuedAt = Number(meta.access_issued_at ?? 0);
      return;
    }
    await this._signIn(same ? (meta.device_id ?? null) : null);
  }

  async _signIn(deviceId) {
    const { email, password, deviceName, register } = this.login;
    if (!email || !password) throw new SignedOut("no stored session and no email/password to sign in with");
    const answer =
      register && !deviceId
        ? await this.api.register(email, password, deviceName)
        : await this.api.login(email, password, deviceName, deviceId);
    await this._adopt(answer, email);
  }

  async _adopt(answer, email = null) {
    const now = this.now();
    this.userId = answer.user_id;
    this.deviceId = answer.device_id;
    this.personalSpaceId = answer.personal_space_id;
    this.token = answer.access_token;
    this.refreshToken = answer.refresh_token;
    this.expiresAt = parseTime(answer.access_expires_at);
    this.issuedAt = Math.min(now, this.expiresAt);
    this.generation += 1;
    const values = {
      base_url: this.api.baseUrl,
      user_id: this.userId,
      device_id: this.deviceId,
      personal_space_id: this.personalSpaceId,
      access_token: this.token,
      refresh_token: this.refreshToken,
      access_expires_at: String(this.expiresAt),
      access_issued_at: String(this.issuedAt),
    };
    if (email) values.email = email;
    await this.store.putMeta(values);
  }

  /**
   * A fresh access token. `seenGeneration`: the generation the caller found wanting (a
   * newer one is returned as is). No answer within the grace retries: ApiError
   * (retryable); a dead session signs in again with the password, else SignedOut.
   */
  refresh(seenGeneration = null) {
    if (seenGeneration !== null && seenGeneration !== this.generation) return Promise.resolve(this.token);
    if (this._inflight === null) {
      this._inflight = this._refresh().finally(() => {
        this._inflight = null;
      });
    }
    return this._inflight;
  }

  async _refresh() {
    const presented = this.refreshToken;
    const started = this.now();
    for (let attempt = 0; ; attempt++) {
      try {
        const answer = await this.api.refresh(presented);
        await this._adopt(answer);
        this.refreshes += 1;
        return this.token;
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        if (err.retryable) {
          // The server may have rotated the pair and the answer got lost: present the
          // same token again while its grace window lasts.
          const wait = Math.min(4000, 250 * 2 ** attempt);
          if (this.now() + wait - started > REFRESH_GRACE_MS) throw err;
          this.refreshRetries += 1;
          await this.sleep(wait);
          continue;
        }
        if (!DEAD_SESSION.has(err.code)) throw err;
        try {
          this.signIns += 1;
          await this._signIn(this.deviceId);
        } catch (again) {
          throw new SignedOut(`session ended (${err.code}); sign-in failed: ${again.message}`);
        }
        return this.token;
      }
    }
  }

  /** The access token, refreshed first if it expires within `marginMs`. */
  async freshToken(marginMs = 1000) {
    if (this.expiresIn() <= marginMs) return this.refresh(this.generation);
    return this.token;
  }
}
