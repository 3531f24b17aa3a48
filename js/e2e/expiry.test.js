// Tokens that expire under a queue (CONCORD_JS_E2E_SHORT_TTL_URL: a server whose access
// tokens live a few seconds): per-op `auth_expired`, then renewal and resend; proactive
// renewal on `auth_expiring`; a lost refresh answer recovered by the server's grace.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Device, Faults } from "../concord.js";
import { recorder, serverUrl, storedCounts, twoDevices } from "../testlib/e2e.js";

const BASE = serverUrl("CONCORD_JS_E2E_SHORT_TTL_URL");

test("a queue draining across token expiries: auth_expired per op, renew, resend", async () => {
  const faults = new Faults({ proactiveRefresh: false });
  const { a, b, space, close } = await twoDevices(BASE, {
    phone: { faults, config: { batchSize: 1, pushIntervalMs: 400, backoffBaseMs: 50 } },
  });
  const seen = recorder(a);
  try {
    a.goOffline();
    const ids = [];
    for (let i = 0; i < 14; i++) ids.push(await a.inc(space, "task", "t-exp", "pomodoros", 1));
    a.goOnline();
    await a.sync({ withinMs: 60_000 });
    assert.ok(a.stats.results.auth_expired >= 1, JSON.stringify(a.stats.results));
    assert.ok(a.stats.authOk >= 1);
    assert.equal(a.stats.mixedPushes, 0);
    assert.deepEqual(
      seen.ack.map((x) => x.op.op_id),
      ids,
    );
    assert.equal(seen.signed_out.length, 0);
    const counts = await storedCounts(a, space);
    assert.deepEqual(
      ids.map((id) => counts.get(id)),
      ids.map(() => 1),
    );
    await b.sync();
    assert.equal(b.state(space, "task", "t-exp").fields.pomodoros.value, 14);
  } finally {
    await close();
  }
});

test("auth_expiring renews the live link before expiry; delivery never stops", async () => {
  const { a, b, space, close } = await twoDevices(BASE);
  try {
    await a.sync();
    const expiresAt = a.session.expiresAt; // the token the link was opened with
    const renewedAt = [];
    a.on("auth_ok", () => renewedAt.push(Date.now()));
    await new Promise((resolve) => setTimeout(resolve, 4500)); // longer than a token lives
    assert.ok(renewedAt.length >= 1, "no renewal");
    assert.ok(renewedAt[0] < expiresAt, `renewed ${renewedAt[0] - expiresAt} ms after expiry`);
    await b.set(space, "task", "t-live", "title", "seen live");
    await b.sync();
    await a.sync();
    assert.equal(a.state(space, "task", "t-live").fields.title.value, "seen live");
  } finally {
    await close();
  }
});

test("a lost refresh answer: the same token presented again gets the same pair", async () => {
  const pair = await twoDevices(BASE);
  await pair.a.close();
  // Reopened from its store with no password: a refused refresh could not sign in again,
  // so only the server's grace keeps this device signed in.
  const faults = new Faults({ dropRefreshResults: 1 });
  const a = await Device.open({ baseUrl: BASE, store: pair.a.store, faults });
  const seen = recorder(a);
  try {
    const spent = a.session.refreshToken;
    await a.session.refresh();
    assert.equal(a.session.refreshRetries, 1);
    assert.equal(faults.dropRefreshResults, 0);
    assert.notEqual(a.session.refreshToken, spent);
    // The recovered pair is the live one: it refreshes again, and the device writes.
    await a.session.refresh();
    const id = await a.set(pair.space, "task", "t-grace", "title", "still signed in");
    await a.sync();
    assert.equal(seen.signed_out.length, 0);
    assert.equal(a.session.signIns, 0);
    assert.equal((await storedCounts(a, pair.space)).get(id), 1);
    // Presenting the spent token after the recovered pair was refreshed is a reuse.
    await assert.rejects(a.api.refresh(spent), { code: "refresh_reused" });
  } finally {
    await a.close();
    await pair.close();
  }
});
