// What the client throws: HTTP answers with their wire code, a lost session, a sync that
// did not finish in time (client/errors.py).

/** Root of the client's errors. */
export class ClientError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** An HTTP answer carrying an error of docs/protocol.md section 4; `status` 0: no answer at all. */
export class ApiError extends ClientError {
  constructor(status, code, message, { retryable = false, retryAfterMs = null } = {}) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.detail = message;
    this.retryable = retryable;
    this.retryAfterMs = retryAfterMs;
  }
}

/** The session is gone (revoked, logged out, refresh token reused) and no password is at
 * hand to sign in again. Queued ops stay in the store for the next open. */
export class SignedOut extends ClientError {}

/** `Device.sync` did not see the queue drain and every space catch up in time. */
export class SyncTimeout extends ClientError {}

/** `Device.sync` was called while the device is switched offline. */
export class Offline extends ClientError {}

/** The socket is gone; `code` is the close code the server sent (null: none). */
export class LinkClosed extends ClientError {
  constructor(code, reason = "") {
    super(`link closed (${code}${reason ? `: ${reason}` : ""})`);
    this.code = code;
    this.reason = reason;
  }
}

/** Codes a push result or HTTP answer may carry that a retry can cure (docs/protocol.md 4.2). */
export const RETRYABLE_CODES = Object.freeze(["auth_expired", "rate_limited", "unavailable"]);
