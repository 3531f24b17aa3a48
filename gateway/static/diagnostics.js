// Concord diagnostics page: polls the admin-only JSON routes and renders one panel per
// failure mode, each with its figures and its last 15 minutes as small charts. An ES
// module; no framework, no build step. Text only goes in through textContent.
import { drawChart, timeWindow as span } from "./charts.js";

(() => {
  const KEY = "concord-admin-token";
  const POLL_MS = 2000;
  let token = null;
  let timer = null;

  class AuthError extends Error {}

  const $ = (sel, root = document) => root.querySelector(sel);
  const panel = (name) => $(`[data-panel="${name}"]`);
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  const sum = (obj) => Object.values(obj || {}).reduce((a, b) => a + num(b), 0);
  const short = (id) => (id ? String(id).slice(0, 8) : "");
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");

  function setStatus(text, bad = false) {
    const el = $("#status");
    el.textContent = text;
    el.classList.toggle("error", bad);
  }

  function takeToken() {
    const url = new URL(location.href);
    const given = url.searchParams.get("token");
    if (given) {
      sessionStorage.setItem(KEY, given);
      url.searchParams.delete("token");  // keep it out of the address bar and history
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    return sessionStorage.getItem(KEY);
  }

  async function getJSON(path) {
    const r = await fetch(path, {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    });
    if (r.status === 401) throw new AuthError("the admin token was refused");
    if (!r.ok) throw new Error(`${path} answered ${r.status}`);
    return r.json();
  }

  function figures(name, items) {
    const dl = $(".figures", panel(name));
    dl.replaceChildren();
    for (const [key, label, value] of items) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.dataset.figure = key;
      dd.textContent = String(value);
      dl.append(dt, dd);
    }
  }

  function rows(tbody, data, empty) {
    tbody.replaceChildren();
    const none = !data.length;
    if (none) data = [[empty]];
    for (const cells of data) {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        if (none) td.colSpan = 99;
        td.textContent = cell === null || cell === undefined ? "" : String(cell);
        if (typeof cell === "number") td.className = "n";
        tr.append(td);
      }
      tbody.append(tr);
    }
  }

  const pairs = (obj, prefix = "") =>
    Object.entries(obj || {}).sort().map(([k, v]) => [prefix + (k || "-"), num(v)]);

  function renderReplay(d) {
    const ops = d.ops_by_status || {};
    const pushes = d.pushes || { count: 0, seconds_total: 0 };
    const mean = pushes.count ? (1000 * pushes.seconds_total) / pushes.count : 0;
    figures("offline-replay", [
      ["ops-applied", "ops applied", num(ops.applied)],
      ["ops-duplicate", "duplicates (replays)", num(ops.duplicate)],
      ["ops-rejected", "ops rejected", num(ops.rejected)],
      ["idempotency-hits", "idempotency hits", sum(d.idempotency_hits_by_route)],
      ["pushes", "pushes answered", num(pushes.count)],
      ["push-mean-ms", "mean push ms", mean.toFixed(1)],
      ["ws-connections", "open WebSockets", num(d.ws_connections)],
    ]);
    rows($("tbody", panel("offline-replay")),
      [...pairs(ops, "ops "), ...pairs(d.idempotency_hits_by_route, "idempotency hits ")],
      "no ops yet");
  }

  function renderConflicts(d) {
    const by = d.conflicts_by_field || {};
    figures("conflicts", [
      ["conflicts-total", "conflicting sets", sum(by)],
      ["conflicted-fields", "fields with conflicts", Object.keys(by).length],
    ]);
    rows($("tbody", panel("conflicts")), pairs(by), "no conflicts yet");
  }

  function renderAuth(d) {
    const by = d.auth_failures_by_reason || {};
    const items = [
      ["auth-expired", "expired tokens", num(by.expired)],
      ["auth-failures", "auth failures", sum(by)],
      ["refresh-reused", "refresh tokens reused", num(by.refresh_reused)],
    ];
    if ("auth_expired_ops" in d) items.push(["auth-expired-ops", "ops refused auth_expired", num(d.auth_expired_ops)]);
    figures("auth", items);
    rows($("tbody", panel("auth")), pairs(by), "no auth failures yet");
  }

  function renderBackground(d, a) {
    const out = d.reminders_by_outcome || {};
    const status = a.reminders_by_status || {};
    const due = a.due_backlog || { count: 0, oldest_age_seconds: 0 };
    figures("background", [
      ["reminders-fired", "reminders fired", num(out.fired)],
      ["reminders-skipped", "reminders skipped", num(out.skipped)],
      ["reminders-dead", "dead reminders", num(status.dead)],
      ["backlog-age", "backlog age s", num(d.reminder_backlog_age_seconds).toFixed(1)],
      ["due-now", "due, not fired", num(due.count)],
      ["job-runs", "job runs", sum(d.scheduler_job_runs)],
      ["projector-lag", "projector lag events", num(d.projector_lag_events)],
      ["projector-quarantined", "quarantined events", num(d.projector_quarantined_events)],
      ["outbox-lag", "outbox lag events", num(d.outbox_lag_events)],
    ]);
    rows($("tbody", panel("background")),
      [...pairs(status, "reminders "), ...pairs(out, "firings "), ...pairs(d.scheduler_job_runs, "job ")],
      "no background work yet");
  }

  function renderLists(d, a) {
    rows($("table.quarantine tbody", panel("events")),
      (d.quarantined_events || []).map((q) => [time(q.quarantined_at), short(q.space_id), q.seq,
        `${q.entity_type}/${q.entity_id}`, short(q.op_id), q.error_type]),
      "no quarantined events");
    rows($("table.latest tbody", panel("events")),
      (a.latest_events || []).map((e) => [time(e.recorded_at), short(e.space_id), e.seq, e.kind,
        `${e.entity_type}/${e.entity_id}`, e.field || "", short(e.device_id)]),
      "no events in the last hour");
    rows($("table.list:not(.dead) tbody", panel("jobs")),
      (a.latest_job_runs || []).map((r) => [time(r.started_at), r.job, r.outcome,
        r.duration_ms === null ? "running" : r.duration_ms, r.items, r.instance]),
      "no job runs yet");
    rows($("table.dead tbody", panel("jobs")),
      (a.dead_reminders || []).map((r) => [time(r.since), short(r.reminder_id),
        short(r.space_id), `${r.entity_type}/${r.entity_id}`, r.attempts]),
      "no dead reminders");
  }

  /** Each failure mode's last 15 minutes (gateway/series.py: this process's samples). */
  function renderCharts(s) {
    const end = s.times.at(-1) ?? Date.now() / 1000;
    const base = { times: s.times, ...span(s.times, end, s.window_seconds) };
    const r = s.rates;
    const g = s.gauges;
    const charts = {
      "offline-replay": [
        { title: "ops per second", unit: "/s", series: [
          { name: "applied", values: r.ops_applied },
          { name: "duplicate", values: r.ops_duplicate },
          { name: "rejected", values: r.ops_rejected }] },
        { title: "pushes and idempotency hits per second", unit: "/s", series: [
          { name: "pushes", values: r.pushes },
          { name: "idempotency hits", values: r.idempotency_hits }] },
      ],
      conflicts: [
        { title: "conflicting sets per second", unit: "/s", series: [
          { name: "conflicts", values: r.conflicts }] },
      ],
      auth: [
        { title: "auth renewals and failures per second", unit: "/s", series: [
          { name: "renewals", values: r.auth_renewals },
          { name: "expired", values: r.auth_expired },
          { name: "other failures", values: r.auth_failures_other }] },
      ],
      background: [
        { title: "reminder lateness (mean per 2 s, seconds)", unit: "s", kind: "points", series: [
          { name: "lateness", values: s.reminder_lateness_seconds }] },
        { title: "projector and outbox lag (events)", series: [
          { name: "projector", values: g.projector_lag_events },
          { name: "outbox", values: g.outbox_lag_events }] },
      ],
    };
    for (const [name, specs] of Object.entries(charts)) {
      const box = $(`[data-charts="${name}"]`);
      while (box.children.length < specs.length) box.append(document.createElement("div"));
      specs.forEach((spec, i) => drawChart(box.children[i], { ...base, ...spec }));
    }
    $("#series-process").textContent =
      `pid ${s.pid}, up since ${time(s.process_started_at)}; with several gateways each shows its own share`;
  }

  function render(d, a) {
    renderReplay(d);
    renderConflicts(d);
    renderAuth(d);
    renderBackground(d, a);
    renderLists(d, a);
    for (const p of document.querySelectorAll("[data-panel]")) p.dataset.state = "ok";
  }

  async function poll() {
    try {
      const [d, a, s] = await Promise.all([
        getJSON("/v1/diagnostics"),
        getJSON("/v1/diagnostics/activity"),
        getJSON("/v1/diagnostics/series"),
      ]);
      render(d, a);
      renderCharts(s);
      setStatus(`live, updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      if (err instanceof AuthError) return signIn(err.message);
      for (const p of document.querySelectorAll("[data-panel]")) p.dataset.state = "error";
      setStatus(`error: ${err.message}`, true);
    }
  }

  function start() {
    $("#signin").hidden = true;
    $("#panels").hidden = false;
    setStatus("loading…");
    clearInterval(timer);
    poll();
    timer = setInterval(poll, POLL_MS);
  }

  function signIn(message) {
    clearInterval(timer);
    sessionStorage.removeItem(KEY);
    token = null;
    $("#panels").hidden = true;
    $("#signin").hidden = false;
    const error = $("#signin-error");
    error.hidden = !message;
    error.textContent = message || "";
    setStatus("sign in with the admin token", Boolean(message));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#signin").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("#token").value.trim();
      if (!token) return;
      sessionStorage.setItem(KEY, token);
      $("#token").value = "";
      start();
    });
    token = takeToken();
    if (token) start();
    else signIn("");
  });
})();
