// HTTP request shapes (invitations by code, docs/protocol.md section 6), error mapping, and the
// session's refresh rules, against a fake fetch.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, Device, Faults, HttpApi, MemoryStore, Session, SignedOut } from "../concord.js";
import { FakeServer, json, SPACE } from "../testlib/fake-server.js";

const CODE = "kq0cJm8Z5o2v4b3QwN6eHf1TjLr9sUxYaPdBgIiK7Mc";
const INVITATION = "9e7c0000-0000-4000-8000-000000000001";

function recordingFetch(answers) {
  const calls = [];
  const fetch = async (url, init) => {
    const u = new URL(url);
    calls.push({
      method: init.method,
      path: u.pathname,
      query: Object.fromEntries(u.searchParams),
      body: init.body ? JSON.parse(init.body) : undefined,
      headers: init.headers,
    });
    const answer = answers.shift();
    if (answer instanceof Error) throw answer;
    return json(answer.status, answer.body ?? null);
  };
  return { fetch, calls };
}

test("invite: POST members {email, role} -> 202 {invitation_id, code, expires_at}", async () => {
  const created = { invitation_id: INVITATION, code: CODE, expires_at: "2026-11-30T10:00:00Z" };
  const { fetch, calls } = recordingFetch([{ status: 202, body: created }]);
  const api = new HttpApi("http://concord.test/", { fetch });
  assert.deepEqual(await api.invite("tok", SPACE, "grace@example.com", "editor"), created);
  assert.deepEqual(calls[0].method, "POST");
  assert.equal(calls[0].path, `/v1/spaces/${SPACE}/members`);
  assert.deepEqual(calls[0].body, { email: "grace@example.com", role: "editor" });
  assert.equal(calls[0].headers.authorization, "Bearer tok");
  assert.equal(calls[0].headers["content-type"], "application/json");
});

test("accept, list (paged) and cancel invitations", async () => {
  const info = (n) => ({
    invitation_id: `${INVITATION.slice(0, -1)}${n}`,
    email: `u${n}@x.test`,
    role: "reader",
    invited_by: SPACE,
    created_at: "2026-11-23T10:00:00Z",
    expires_at: "2026-11-30T10:00:00Z",
  });
  const { fetch, calls } = recordingFetch([
    { status: 200, body: { space_id: SPACE, role: "editor" } },
    { status: 200, body: { invitations: [info(1)], next: "cursor-1" } },
    { status: 200, body: { invitations: [info(2)], next: null } },
    { status: 204 },
  ]);
  const api = new HttpApi("http://concord.test", { fetch });
  assert.deepEqual(await api.acceptInvitation("tok", CODE), { space_id: SPACE, role: "editor" });
  assert.deepEqual(
    [calls[0].method, calls[0].path, calls[0].body],
    ["POST", "/v1/invitations/accept", { code: CODE }],
  );
  assert.deepEqual(
    (await api.invitations("tok", SPACE)).map((i) => i.email),
    ["u1@x.test", "u2@x.test"],
  );
  assert.equal(calls[1].path, `/v1/spaces/${SPACE}/invitations`);
  assert.deepEqual(calls[1].query, { limit: "500" });
  assert.deepEqual(calls[2].query, { limit: "500", after: "cursor-1" });
  assert.equal(await api.cancelInvitation("tok", SPACE, INVITATION), null);
  assert.deepEqual(
    [calls[3].method, calls[3].path],
    ["DELETE", `/v1/spaces/${SPACE}/invitations/${INVITATION}`],
  );
});

test("an accepted invitation's space is subscribed at once", async () => {
  const server = new FakeServer();
  const joined = "22222222-2222-4222-8222-222222222222";
  server.routes = { "POST /v1/invitations/accept": () => json(200, { space_id: joined, role: "editor" }) };
  const d = await Device.open({
    baseUrl: "http://concord.test",
    email: "a@x.test",
    password: "pw",
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    online: false,
  });
  try {
    assert.deepEqual(await d.acceptInvitation(CODE), { space_id: joined, role: "editor" });
    assert.ok(d.engine.spaces.has(joined));
    const accept = server.fetches.find((f) => f.path === "/v1/invitations/accept");
    assert.deepEqual(accept.body, { code: CODE });
    assert.equal(accept.token, "access-1");
  } finally {
    await d.close();
  }
});

test("errors: the wire code, or unavailable (status 0) when nothing answered", async () => {
  const { fetch } = recordingFetch([
    { status: 404, body: { error: { code: "not_found", message: "no such code", retryable: false } } },
    {
      status: 429,
      body: { error: { code: "rate_limited", message: "slow", retryable: true, retry_after_ms: 250 } },
    },
    { status: 502, body: null },
    new TypeError("fetch failed"),
  ]);
  const api = new HttpApi("http://concord.test", { fetch });
  await assert.rejects(api.acceptInvitation("t", CODE), {
    name: "ApiError",
    status: 404,
    code: "not_found",
    retryable: false,
  });
  await assert.rejects(api.spaces("t"), { code: "rate_limited", retryable: true, retryAfterMs: 250 });
  await assert.rejects(api.spaces("t"), { status: 502, code: "unavailable", retryable: true });
  await assert.rejects(api.spaces("t"), { status: 0, code: "unavailable", retryable: true });
});

function session(answers, login = { email: "a@x.test", password: "pw" }) {
  const { fetch, calls } = recordingFetch(answers);
  const faults = new Faults();
  const store = new MemoryStore();
  const s = new Session(new HttpApi("http://concord.test", { fetch, faults }), store, login);
  s.sleep = async () => {};
  return { s, calls, store, faults };
}

const pair = (n) => ({
  user_id: "u",
  device_id: "d",
  access_token: `a${n}`,
  refresh_token: `r${n}`,
  access_expires_at: "2030-01-01T00:00:00Z",
  personal_space_id: SPACE,
});

test("a lost refresh answer is retried with the same token; the new pair is stored", async () => {
  const { s, calls, store, faults } = session([
    { status: 200, body: pair(1) },
    { status: 200, body: pair(2) }, // rotated, but the fault drops the answer
    { status: 200, body: pair(2) }, // the same token again: the same pair (grace)
  ]);
  await s.start({});
  faults.dropRefreshResults = 1;
  assert.equal(await s.refresh(), "a2");
  assert.deepEqual(
    calls.slice(1).map((c) => c.body),
    [{ refresh_token: "r1" }, { refresh_token: "r1" }],
  );
  assert.equal(s.refreshRetries, 1);
  assert.equal(store.meta.get("refresh_token"), "r2");
});

test("no answer for longer than the grace: the refresh fails, retryable, the token kept", async () => {
  const { s, calls } = session([
    { status: 200, body: pair(1) },
    ...Array(20).fill({ status: 503, body: null }),
  ]);
  await s.start({});
  let clock = 0;
  s.now = () => clock;
  s.sleep = async (ms) => {
    clock += ms;
  };
  await assert.rejects(s.refresh(), { code: "unavailable", retryable: true });
  const presented = new Set(calls.slice(1).map((c) => c.body.refresh_token));
  assert.deepEqual(presented, new Set(["r1"]));
  assert.ok(clock <= 25_000);
  assert.equal(s.refreshToken, "r1");
});

test("a refused refresh signs in again with the password, naming the device", async () => {
  const reused = {
    status: 401,
    body: { error: { code: "refresh_reused", message: "spent", retryable: false } },
  };
  const { s, calls } = session([{ status: 201, body: pair(1) }, reused, { status: 200, body: pair(2) }], {
    email: "a@x.test",
    password: "pw",
    register: true,
  });
  await s.start({});
  assert.equal(calls[0].path, "/v1/auth/register");
  assert.equal(await s.refresh(), "a2");
  assert.deepEqual([calls[2].path, calls[2].body.device_id], ["/v1/auth/login", "d"]);
  assert.equal(s.signIns, 1);
});

test("a refused refresh without a password: SignedOut", async () => {
  const reused = {
    status: 401,
    body: { error: { code: "unauthenticated", message: "revoked", retryable: false } },
  };
  const { s } = session([reused], {});
  await s.start({
    base_url: "http://concord.test",
    refresh_token: "r0",
    access_token: "a0",
    user_id: "u",
    device_id: "d",
  });
  await assert.rejects(s.refresh(), SignedOut);
});

test("concurrent refreshes share one request; a stale generation gets the newer token", async () => {
  const { s, calls } = session([
    { status: 200, body: pair(1) },
    { status: 200, body: pair(2) },
  ]);
  await s.start({});
  const generation = s.generation;
  const [x, y] = await Promise.all([s.refresh(generation), s.refresh(generation)]);
  assert.deepEqual([x, y], ["a2", "a2"]);
  assert.equal(await s.refresh(generation), "a2");
  assert.equal(calls.length, 2);
});

test("ApiError carries its facts", () => {
  const e = new ApiError(429, "rate_limited", "slow", { retryable: true, retryAfterMs: 5 });
  assert.deepEqual(
    [e.status, e.code, e.detail, e.retryable, e.retryAfterMs, e.name],
    [429, "rate_limited", "slow", true, 5, "ApiError"],
  );
});

test("fetch is called as a plain function: browsers refuse it as a method of HttpApi", async () => {
  // A browser's fetch throws "Illegal invocation" when `this` is anything but the window
  // (or undefined): `this._fetch(...)` made every request of a page fail that way.
  function browserFetch() {
    if (this !== undefined && this !== globalThis) {
      throw new TypeError("Failed to execute 'fetch' on 'Window': Illegal invocation");
    }
    return Promise.resolve(json(200, { version: 1 }));
  }
  const api = new HttpApi("http://concord.test", { fetch: browserFetch });
  assert.deepEqual(await api.schema(), { version: 1 });
});
