// The engine's writer: one push at a time from the head of the queue, each settled by
// its `push_result` (client/engine.py's writer half).
//
// Per result: `applied`/`duplicate` leave the queue (acknowledged); a retryable
// rejection keeps the op queued (`auth_expired`: renew with `auth`, resend after
// `auth_ok`; `rate_limited`: wait `retry_after_ms`; `unavailable`: back off); any other
// rejection is final: the op leaves the queue, is recorded, reported to the app, and
// never sent again.

import { LinkClosed } from "./errors.js";
import { entitiesOf, nowIso, uuid4 } from "./util.js";

/** The server refused the in-flight push as a whole (`error` with ref = its batch_id). */
class BatchRefused extends Error {
  constructor(error) {
    super(error.message ?? error.code);
    this.error = error;
  }
}

/** The fields of a queued op that go on the wire. */
function wireOp(op) {
  const out = {
    op_id: op.op_id,
    space_id: op.space_id,
    entity_type: op.entity_type,
    entity_id: op.entity_id,
    kind: op.kind,
    field: op.field,
    value: op.value,
    pred: op.pred,
    lamport: op.lamport,
  };
  if (op.client_time) out.client_time = op.client_time;
  return out;
}

export class Writer {
  constructor(engine) {
    this.engine = engine;
    this.inflight = null; // {batchId, ops, resolve, reject}
    this.batchLimit = engine.config.batchSize;
    /** op_ids whose enqueue has not reached the store yet: they wait to be sent. */
    this.notDurable = new Set();
  }

  /** Wait on `signal` (at most `ms`), then throw if the link went away meanwhile. */
  async _wait(link, signal, ms = null) {
    await signal.wait(ms);
    if (link.isClosed) throw link.closedWith;
  }

  async run(link) {
    const e = this.engine;
    for (;;) {
      if (link.isClosed) throw link.closedWith;
      if (!e.authed) {
        await this._wait(link, e.wake);
        continue;
      }
      for (const spaceId of [...e.newSpaces].sort()) {
        link.send({ type: "subscribe", space_id: spaceId, after: e.cursors.get(spaceId) ?? 0 });
      }
      e.newSpaces.clear();
      const batch = this._nextBatch();
      if (batch.length === 0) {
        await this._idle(link);
        continue;
      }
      let result;
      try {
        result = await this._push(link, batch);
      } catch (err) {
        if (!(err instanceof BatchRefused)) throw err;
        await this._refused(link, batch, err.error);
        continue;
      }
      await this._settle(link, batch, result);
      if (e.config.pushIntervalMs) await this._wait(link, e.dropped, e.config.pushIntervalMs);
    }
  }

  _nextBatch() {
    const e = this.engine;
    const limit = Math.min(this.batchLimit, e.limits.max_ops_per_push);
    const ready = (op) => !this.notDurable.has(op.op_id);
    return e.replica.nextBatch(limit, Math.floor(e.limits.max_message_bytes * 0.8), ready);
  }

  /** Wait for work. A link whose token expired is renewed here even with nothing to
   * send: the server pauses delivery (`caught_up` included) until it is. */
  async _idle(link) {
    const e = this.engine;
    const left = e.linkExpiresAt - Date.now();
    if (left <= 0) {
      e.authed = false;
      await e.renew(link);
      return;
    }
    await this._wait(link, e.wake, left + 50);
  }

  async _push(link, batch) {
    const e = this.engine;
    const batchId = uuid4();
    const answered = new Promise((resolve, reject) => {
      this.inflight = { batchId, ops: batch, resolve, reject };
    });
    let timer = null;
    try {
      link.send({ type: "push", batch_id: batchId, ops: batch.map(wireOp) });
      e.stats.pushes += 1;
      if (e.faults.takeCut()) {
        e.stats.linksCut += 1;
        e.emitter.emit("fault", { fault: "cut_after_send", batch_id: batchId });
        link.close(1000, "fault: link cut right after a push");
        throw link.closedWith;
      }
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => {
          link.close(1000, "no push_result in time");
          reject(link.closedWith);
        }, e.config.pushTimeoutMs);
      });
      return await Promise.race([answered, timeout]);
    } finally {
      clearTimeout(timer);
      this.inflight = null;
    }
  }

  /** A `push_result` arrived (reader side). */
  onResult(link, message) {
    const e = this.engine;
    const inflight = this.inflight;
    if (inflight === null || message.batch_id !== inflight.batchId) return;
    if (e.faults.takeDrop()) {
      e.stats.resultsDropped += 1;
      e.emitter.emit("fault", { fault: "result_dropped", batch_id: inflight.batchId });
      link.close(1000, "fault: push_result dropped");
      inflight.reject(link.closedWith);
      return;
    }
    inflight.resolve(message);
  }

  /** An `error` arrived; true when it was about the in-flight push. */
  onError(error, ref) {
    const inflight = this.inflight;
    if (inflight === null || ref !== inflight.batchId) return false;
    inflight.reject(new BatchRefused(error));
    return true;
  }

  /** The link is gone: fail the in-flight push (its ops are resent on the next link). */
  abort(closed) {
    this.inflight?.reject(closed instanceof LinkClosed ? closed : new LinkClosed(null, "closed"));
  }

  /** The whole push was refused (over `max_ops_per_push` or `max_message_bytes`): send
   * smaller batches; a single op refused so is rejected for good. */
  async _refused(link, batch, error) {
    if (error.retryable) {
      // Not a push-level answer docs/protocol.md names; resend as is, after a pause.
      await this._wait(link, this.engine.dropped, Math.min(this.engine.config.backoffCapMs, 1000));
      return;
    }
    if (batch.length > 1) {
      this.batchLimit = Math.max(1, Math.floor(batch.length / 2));
      return;
    }
    const result = {
      server_lamport: 0,
      results: [{ op_id: batch[0].op_id, status: "rejected", error: { ...error, retryable: false } }],
    };
    await this._settle(null, batch, result);
  }

  async _settle(link, batch, result) {
    const e = this.engine;
    e.replica.clock.observe(result.server_lamport ?? 0);
    const answers = new Map((result.results ?? []).map((r) => [r.op_id, r]));
    const acked = [];
    const final = [];
    let retry = null;
    for (const op of batch) {
      const answer = answers.get(op.op_id);
      if (answer && (answer.status === "applied" || answer.status === "duplicate")) {
        acked.push({ op, status: answer.status, seq: answer.seq ?? null });
        e.ackedSeq.set(op.space_id, Math.max(e.ackedSeq.get(op.space_id) ?? 0, answer.seq ?? 0));
        count(e.stats, answer.status);
      } else if (!answer || !answer.error || answer.error.retryable) {
        retry = retry ?? answer?.error ?? null;
        count(e.stats, retry?.code ?? "unanswered");
      } else {
        const { code, message = "" } = answer.error;
        final.push({ op, code, message, rejected_at: nowIso() });
        count(e.stats, "rejected");
      }
    }
    if (retry !== null && acked.length) e.stats.mixedPushes += 1;
    const ackedIds = acked.map((a) => a.op.op_id);
    const rows = e.replica.acknowledge(ackedIds);
    e.replica.reject(final.map((r) => r.op.op_id));
    await e.persist(() => e.store.settle(ackedIds, final, rows));
    e.rejected.push(...final);
    for (const a of acked) e.emitter.emit("ack", a);
    for (const r of final) e.emitter.emit("rejected", { ...r, retryable: false });
    if (final.length) {
      const spaceId = final[0].op.space_id;
      e.emitter.emit("change", { space_id: spaceId, entities: entitiesOf(final.map((r) => r.op)) });
    }
    e.notify();
    if (retry !== null && link !== null) await this._backOff(link, retry);
  }

  async _backOff(link, error) {
    const e = this.engine;
    if (error.code === "auth_expired") {
      e.authed = false;
      await e.renew(link);
    } else if (error.code === "rate_limited") {
      await this._wait(link, e.dropped, error.retry_after_ms ?? 1000);
    } else {
      await this._wait(link, e.dropped, Math.min(e.config.backoffCapMs, 1000));
    }
  }
}

function count(stats, status) {
  stats.results[status] = (stats.results[status] ?? 0) + 1;
}
