// Guided scenarios: each scripts the two devices through one failure mode of docs/architecture.md,
// narrates each step, then says in two sentences what happened and which figure of the
// third column moved (its value before and after are kept on the story box, too).

import { $, $$, h, isoZ, sleep } from "./dom.js";

const SCENARIOS = [
  ["offline-replay", "Offline replay", "duplicates"],
  ["conflict", "Conflict", "conflicts"],
  ["expiry", "Expiry mid-queue", "auth-expired"],
  ["missed-reminder", "Missed reminder", "reminders-fired"],
];

export class Scenarios {
  constructor(root, views, figures) {
    this.root = root;
    this.views = views; // {a, b}: DeviceView
    this.figures = figures;
    this.space = views.a.space;
    this.build();
  }

  build() {
    const buttons = SCENARIOS.map(([key, label]) =>
      h("button", { type: "button", dataset: { scenario: key }, onclick: () => this.run(key) }, label),
    );
    this.story = h(
      "section",
      { id: "story", role: "status", "aria-live": "polite" },
      h("p", { class: "explain" }, "Pick a scenario, or use the switches of each device yourself."),
    );
    this.root.replaceChildren(h("div", { class: "scenario-buttons" }, h("strong", {}, "Guided scenarios: "), buttons), this.story);
  }

  step(text) {
    const steps = $("ol.steps", this.story) ?? this.story.appendChild(h("ol", { class: "steps" }));
    const item = h("li", {}, text);
    steps.append(item);
    return item;
  }

  async run(key) {
    const [, label, figure] = SCENARIOS.find(([k]) => k === key);
    for (const b of $$("button", this.root)) b.disabled = true;
    Object.assign(this.story.dataset, { scenario: key, state: "running", figureKey: figure });
    delete this.story.dataset.before;
    delete this.story.dataset.after;
    this.story.replaceChildren(h("h3", {}, label));
    try {
      await this.figures.poll();
      const before = this.figures.values();
      const explain = await this[camel(key)]();
      await this.figures.poll();
      const after = this.figures.values();
      Object.assign(this.story.dataset, { before: String(before[figure]), after: String(after[figure]) });
      this.story.append(h("p", { class: "explain" }, explain(before, after)));
      this.story.dataset.state = "done";
    } catch (err) {
      this.story.append(h("p", { class: "explain error" }, `The scenario stopped: ${err.message}`));
      this.story.dataset.state = "failed";
    } finally {
      for (const b of $$("button", this.root)) b.disabled = false;
    }
  }

  async syncAll() {
    const { a, b } = this.views;
    await Promise.all([a.device.sync(), b.device.sync()]);
    await a.device.sync(); // each now holds what the other stored meanwhile
    await b.device.sync();
  }

  async offlineReplay() {
    const { a, b } = this.views;
    this.step("The phone goes offline; both devices add tasks.");
    b.faults.setOffline(true);
    for (const t of ["Buy milk", "Book the train"]) await a.addTask(`${t} (laptop)`);
    for (const t of ["Call the plumber", "Water the plants", "Pay rent"]) await b.addTask(`${t} (phone)`);
    const queued = b.device.pending().length;
    this.step(`The laptop sends at once; the phone queues ${queued} ops.`);
    await sleep(1500);
    this.step("The phone's network is flaky: the next 2 answers are lost after the server stored the push.");
    b.faults.dropNextResults(2);
    b.faults.setOffline(false);
    await this.syncAll();
    this.step("The phone is back: its queue drained and both devices show every task.");
    return (x, y) =>
      `The phone queued ${queued} ops offline and sent them when it came back; two answers were lost ` +
      `after the server had stored the push, so it resent the same op_ids and the server answered ` +
      `"duplicate" with the original seqs, storing nothing twice ("ops stored" ${x["ops-stored"]} → ${y["ops-stored"]}, ` +
      `the laptop's ops included). ` +
      `Figure: "duplicates" went from ${x.duplicates} to ${y.duplicates}.`;
  }

  async conflict() {
    const { a, b } = this.views;
    const id = await a.addTask("Plan the offsite");
    await this.syncAll();
    this.step("Both devices go offline and edit the same task's title and assignee.");
    a.faults.setOffline(true);
    b.faults.setOffline(true);
    const s = this.space;
    await a.device.set(s, "task", id, "title", "Plan the offsite: Lisbon");
    await b.device.set(s, "task", id, "title", "Plan the offsite: Porto");
    await a.device.set(s, "task", id, "assignee", "ana");
    await b.device.set(s, "task", id, "assignee", "ben");
    for (const v of [a, b]) v.expanded.add(id);
    await sleep(1000);
    this.step("Both reconnect: the title has two heads (lww), the assignee two values (mv).");
    a.faults.setOffline(false);
    b.faults.setOffline(false);
    await this.syncAll();
    const mid = await this.figures.poll();
    const heads = a.device.state(s, "task", id).fields.title.heads.length;
    await sleep(2500);
    this.step("The laptop resolves both: it writes one value naming every head in pred.");
    await a.device.set(s, "task", id, "title", "Plan the offsite: Lisbon");
    await a.device.set(s, "task", id, "assignee", "ana");
    await this.syncAll();
    return (x, y) =>
      `Both devices changed the title (lww) and the assignee (mv) offline without seeing each other's edit, ` +
      `so each field got two heads: the title showed the greatest (lamport, op_id) with ${heads - 1} losing head ` +
      `beside it, the assignee both values side by side, until the laptop kept one of each. ` +
      `Figure: "conflicting sets" went from ${x.conflicts} to ${y.conflicts}, and "open conflicts" ` +
      `rose to ${mid.open_conflicts.length} and fell back to ${y["open-conflicts"]} on resolving.`;
  }

  async expiry() {
    const { a } = this.views;
    const d = a.device;
    this.step("The laptop goes offline and queues 5 tasks (20 ops).");
    a.faults.setOffline(true);
    for (let i = 1; i <= 5; i++) {
      const id = await a.addTask(`Expense report ${i}`);
      await d.set(this.space, "task", id, "notes", `receipt ${i}`);
      await d.add(this.space, "task", id, "tags", "work");
    }
    const ops = d.pending().map((op) => op.op_id);
    a.faults.setSlow(true); // 2 ops a push, 0.5 s apart: the queue outlives the token
    a.render();
    try {
      await a.faults.expireIn(3);
      this.step("Back online on a slow link, with a link token that expires in 3 s (no early renewal).");
      a.faults.setOffline(false);
      await d.sync({ withinMs: 60_000 });
    } finally {
      a.faults.setSlow(false);
      a.render();
    }
    const events = await d.authed((t) => d.api.pullAll(t, this.space));
    const stored = new Map(ops.map((id) => [id, 0]));
    for (const e of events) if (stored.has(e.op_id)) stored.set(e.op_id, stored.get(e.op_id) + 1);
    const once = [...stored.values()].filter((n) => n === 1).length;
    this.step(`The queue drained: the server log holds ${once} of ${ops.length} ops, each once.`);
    return (x, y) =>
      `The laptop drained ${ops.length} queued ops over a slow link while its link token expired after 3 s: ` +
      `the push in flight was answered auth_expired for every op and nothing of it was stored, so the ` +
      `laptop renewed its token and resent the same ops, ${once} of ${ops.length} now stored exactly once. ` +
      `Figure: "auth_expired" went from ${x["auth-expired"]} to ${y["auth-expired"]}, ` +
      `"renewals" from ${x.renewals} to ${y.renewals}.`;
  }

  async missedReminder() {
    const { b } = this.views;
    this.step("The phone goes offline and sets a reminder 4 s ahead on a new task.");
    b.faults.setOffline(true);
    const id = await b.addTask("Call the dentist");
    const due = Date.now() + 4000;
    await b.device.set(this.space, "task", id, "remind_at", isoZ(due));
    const wait = this.step("");
    while (Date.now() < due + 3000) {
      const s = Math.ceil((due - Date.now()) / 1000);
      wait.textContent = s > 0 ? `Due in ${s} s; no server knows of it.` : `Overdue by ${-s} s; the phone is still offline.`;
      await sleep(250);
    }
    const before = (await this.figures.poll()).server_events.reminder_fired ?? 0;
    this.step("The phone comes back online: the server learns of a reminder already due.");
    b.faults.setOffline(false);
    await b.device.sync();
    const deadline = Date.now() + 30_000;
    let figures = await this.figures.poll();
    while ((figures.server_events.reminder_fired ?? 0) <= before && Date.now() < deadline) {
      await sleep(1000);
      figures = await this.figures.poll();
    }
    const fired = figures.reminders.find((r) => r.entity_id === id && r.status === "fired");
    if (!fired) throw new Error("the reminder did not fire within 30 s (is the scheduler running?)");
    const late = (fired.lateness_ms / 1000).toFixed(1);
    this.step(`It fired at once, ${late} s late; both devices get the notification through sync.`);
    return (x, y) =>
      `The phone set a reminder while offline, so no server could know of it when it fell due; once the ` +
      `phone was back the scheduler found it already due, fired it at once and recorded its lateness ` +
      `(${late} s), as it does on recovery for a reminder missed while the scheduler itself was down. ` +
      `Figure: "reminders fired" went from ${x["reminders-fired"]} to ${y["reminders-fired"]}, and ` +
      `"last lateness" shows ${late} s.`;
  }
}

function camel(key) {
  return key.replace(/-(\w)/g, (_, c) => c.toUpperCase());
}
