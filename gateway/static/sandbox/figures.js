// The third column: this sandbox user's figures per failure mode, and their last 15
// minutes as charts. Two sources, each figure marked with its own:
//   "device": what the two devices counted since the page loaded (`device.stats`);
//   "server": the user's own figures, read from PostgreSQL by `GET /v1/sandbox/figures`
//             (their spaces, devices and sessions only; no admin token needed).
// The page samples both every second into a 15-minute ring, which the charts draw.

import { drawChart, timeWindow as span } from "./charts.js";
import { $, clock, h } from "./dom.js";

const WINDOW_S = 900;
const POLL_MS = 2000;

const FIGURES = [
  // key, label, source, failure mode
  ["ops-stored", "ops stored", "server", "replay"],
  ["duplicates", "duplicates", "device", "replay"],
  ["results-dropped", "answers lost", "device", "replay"],
  ["queued", "queued", "device", "replay"],
  ["conflicts", "conflicting sets", "server", "conflict"],
  ["open-conflicts", "open conflicts", "server", "conflict"],
  ["auth-expired", "auth_expired", "device", "auth"],
  ["renewals", "renewals", "server", "auth"],
  ["reminders-fired", "reminders fired", "server", "background"],
  ["last-lateness", "last lateness", "server", "background"],
  ["projector-lag", "projector lag", "server", "background"],
  ["outbox-lag", "outbox lag", "server", "background"],
];

const sum = (devices, fn) => devices.reduce((total, d) => total + fn(d), 0);

export class FiguresView {
  constructor(root, devices) {
    this.root = root;
    this.devices = devices; // {a, b}
    this.server = null;
    this.samples = []; // {t (epoch s), values}
    this.status = "loading…";
    this.build();
    this.poll();
    setInterval(() => this.poll(), POLL_MS);
    setInterval(() => this.sample(), 1000);
  }

  build() {
    const rows = FIGURES.map(([key, label, source]) => [
      h("dt", {}, label, h("small", { class: `source ${source}` }, source)),
      h("dd", { dataset: { figure: key } }, "–"),
    ]);
    this.root.replaceChildren(
      h("header", {}, h("h2", {}, "Your figures"), h("span", { class: "status", dataset: { figure: "figures-status" } })),
      h(
        "p",
        { class: "hint" },
        "device: counted by the two devices since this page loaded; server: your user's own spaces, devices and sessions (PostgreSQL).",
      ),
      h("dl", { class: "figures" }, rows),
      h("div", { class: "charts" }),
    );
  }

  /** Fetch the server figures now (scenarios call it to see a figure move at once). */
  async poll() {
    const a = this.devices.a;
    try {
      this.server = await a.authed((token) => a.api.call("GET", "/v1/sandbox/figures", { token }));
      this.status = `server figures ${clock()}`;
    } catch (err) {
      this.status = `server figures unavailable: ${err.message}`;
    }
    this.render();
    return this.server;
  }

  /** Every figure now, by key (numbers; null where the server has not answered yet). */
  values() {
    const devices = Object.values(this.devices);
    const s = this.server;
    const fired = (s?.reminders ?? []).filter((r) => r.status === "fired" && r.lateness_ms !== null);
    const latest = fired.sort((x, y) => (x.fired_at < y.fired_at ? 1 : -1))[0];
    return {
      "ops-stored": s ? s.client_ops : null,
      duplicates: sum(devices, (d) => d.stats.results.duplicate ?? 0),
      "results-dropped": sum(devices, (d) => d.stats.resultsDropped),
      queued: sum(devices, (d) => d.pending().length),
      conflicts: s ? s.conflicts : null,
      "open-conflicts": s ? s.open_conflicts.length : null,
      "auth-expired": sum(devices, (d) => d.stats.results.auth_expired ?? 0),
      renewals: s ? s.refreshes : null,
      "reminders-fired": s ? (s.server_events.reminder_fired ?? 0) : null,
      "last-lateness": latest ? latest.lateness_ms / 1000 : null,
      "projector-lag": s ? s.projector_lag_events : null,
      "outbox-lag": s ? s.outbox_lag_events : null,
      pushes: Object.fromEntries(Object.entries(this.devices).map(([k, d]) => [k, d.stats.pushes])),
    };
  }

  sample() {
    const now = Date.now() / 1000;
    this.samples.push({ t: now, values: this.values() });
    while (this.samples.length && this.samples[0].t < now - WINDOW_S) this.samples.shift();
    this.render();
  }

  series(key) {
    return this.samples.map((s) => s.values[key]);
  }

  charts() {
    const times = this.samples.map((s) => s.t);
    const rate = (k) =>
      this.samples.map((s, i) => {
        if (i === 0) return null;
        const prev = this.samples[i - 1];
        return (s.values.pushes[k] - prev.values.pushes[k]) / Math.max(0.001, s.t - prev.t);
      });
    const fired = (this.server?.reminders ?? []).filter((r) => r.fired_at && r.lateness_ms !== null);
    return [
      { title: "pushes per second", unit: "/s", times, series: [
        { name: "laptop", values: rate("a") }, { name: "phone", values: rate("b") }] },
      { title: "replays: duplicates absorbed, answers lost", times, series: [
        { name: "duplicates", values: this.series("duplicates") },
        { name: "lost", values: this.series("results-dropped") }] },
      { title: "conflicts: sets that conflicted, fields open", times, series: [
        { name: "conflicting sets", values: this.series("conflicts") },
        { name: "open", values: this.series("open-conflicts") }] },
      { title: "auth: auth_expired answers, renewals", times, series: [
        { name: "auth_expired", values: this.series("auth-expired") },
        { name: "renewals", values: this.series("renewals") }] },
      { title: "reminder lateness (seconds, at firing)", unit: "s", kind: "points",
        times: fired.map((r) => Date.parse(r.fired_at) / 1000),
        series: [{ name: "lateness", values: fired.map((r) => r.lateness_ms / 1000) }] },
      { title: "queue and lag (events)", times, series: [
        { name: "queued", values: this.series("queued") },
        { name: "projector", values: this.series("projector-lag") },
        { name: "outbox", values: this.series("outbox-lag") }] },
    ];
  }

  render() {
    const values = this.values();
    for (const [key] of FIGURES) {
      const v = values[key];
      const shown = v === null ? "–" : key === "last-lateness" ? `${v.toFixed(1)} s` : String(v);
      const el = $(`[data-figure="${key}"]`, this.root);
      if (el.textContent !== shown) el.textContent = shown;
    }
    $('[data-figure="figures-status"]', this.root).textContent = this.status;
    const box = $(".charts", this.root);
    const specs = this.charts();
    while (box.children.length < specs.length) box.append(h("div", { class: "chart-box" }));
    const end = Date.now() / 1000;
    const shown = span(this.samples.map((x) => x.t), end, WINDOW_S);
    specs.forEach((spec, i) => drawChart(box.children[i], { ...shown, width: 200, height: 84, ...spec }));
  }
}
