// One device's column: its switches (offline, flaky network, token expiry), its queue and
// last sync result, and the task app (lists, tasks) as this device shows it. Everything
// shown is the device's own `state()`: its server events plus its queued ops.

import { $, batched, clock, h, hex } from "./dom.js";
import { LinkFaults } from "./faults.js";
import { taskRow } from "./task-view.js";

const position = () => Date.now().toString(36).padStart(10, "0");

function byPosition(a, b) {
  const pa = a.state.fields.position?.value ?? "";
  const pb = b.state.fields.position?.value ?? "";
  return pa < pb ? -1 : pa > pb ? 1 : a.id < b.id ? -1 : 1;
}

export class DeviceView {
  constructor(root, device, spec, shared) {
    this.root = root;
    this.device = device;
    this.spec = spec;
    this.shared = shared;
    this.space = device.personalSpaceId;
    this.faults = new LinkFaults(device);
    this.expanded = new Set();
    this.lastSync = "not synced yet";
    this.prevResults = {};
    this.notice = "";
    this.ctx = {
      space: this.space,
      write: (fn) => this.write(fn),
      toggle: (id) => this.toggle(id),
      deviceName: (id) => shared.deviceName(id),
      lists: () => this.lists(),
    };
    this.build();
    this.refresh = batched(() => this.render());
    for (const name of ["change", "status", "ack", "rejected", "caught_up", "auth_ok"]) {
      device.on(name, this.refresh);
    }
    device.on("rejected", (r) => this.note(`rejected ${r.op.field ?? r.op.kind}: ${r.code}`));
    device.on("notification", (n) => {
      const title = device.state(n.space_id, n.entity_type, n.entity_id)?.fields.title?.value;
      this.note(`reminder fired: ${title ? `“${title}”` : n.entity_id}`);
    });
    device.on("signed_out", () => this.note("signed out: the server no longer knows this user"));
    setInterval(() => this.tick(), 500);
    this.render();
  }

  /** Run a write; a failure is shown in the column, never thrown. */
  write(fn) {
    return fn(this.device).catch((err) => this.note(`write failed: ${err.message}`));
  }

  note(text) {
    this.notice = `${clock()} ${text}`;
    this.refresh();
  }

  toggle(id) {
    if (this.expanded.has(id)) this.expanded.delete(id);
    else this.expanded.add(id);
    this.render();
  }

  lists() {
    return this.device
      .entityIds(this.space, "list")
      .map((id) => [id, this.device.state(this.space, "list", id)])
      .filter(([, s]) => s && !s.deleted)
      .map(([id, s]) => [id, s.fields.name?.value ?? id])
      .sort((a, b) => (a[1] < b[1] ? -1 : 1));
  }

  tasks() {
    return this.device
      .entityIds(this.space, "task")
      .map((id) => ({ id, state: this.device.state(this.space, "task", id) }))
      .filter((t) => t.state && (!t.state.deleted || t.state.edited_while_deleted))
      .sort(byPosition);
  }

  /** Create a task (title, position, list): three ops, queued at once. */
  async addTask(title, listId = null, id = `t-${hex(5)}`) {
    const d = this.device;
    await d.set(this.space, "task", id, "title", title);
    await d.set(this.space, "task", id, "position", position());
    if (listId) await d.set(this.space, "task", id, "list_id", listId);
    return id;
  }

  async addList(name) {
    const id = `l-${hex(4)}`;
    await this.device.set(this.space, "list", id, "name", name);
    return id;
  }

  build() {
    const { spec } = this;
    this.root.replaceChildren(
      h(
        "header",
        {},
        h("h2", {}, `${spec.name} `, h("small", {}, `device ${spec.key.toUpperCase()}`)),
        h("span", { class: "status", dataset: { figure: "status" } }, "…"),
      ),
      this.buildControls(),
      h(
        "dl",
        { class: "sync" },
        h("dt", {}, "queue"),
        h("dd", { dataset: { figure: "pending" } }, "0"),
        h("dt", {}, "last sync"),
        h("dd", { dataset: { figure: "last-sync" } }, ""),
        h("dt", {}, "link token"),
        h("dd", { dataset: { figure: "token" } }, ""),
      ),
      h("p", { class: "notice", role: "status", dataset: { figure: "notice" } }),
      ...this.buildForms(),
      h("ul", { class: "tasks" }),
    );
  }

  /** The switches: offline, flaky network, slow link, token expiry. */
  buildControls() {
    const toggle = (name, set) => {
      const box = h("input", { type: "checkbox", dataset: { control: name } });
      box.addEventListener("change", () => set(box.checked));
      return box;
    };
    const ttl = h("input", { type: "number", min: "1", max: "300", value: "3", dataset: { control: "ttl" } });
    const expiry = h(
      "form",
      { class: "expiry", dataset: { control: "expiry" } },
      "token expires in ",
      ttl,
      " s ",
      h("button", { type: "submit" }, "apply"),
    );
    expiry.addEventListener("submit", (e) => {
      e.preventDefault();
      const seconds = Math.max(1, Math.min(300, Number(ttl.value) || 3));
      this.faults
        .expireIn(seconds)
        .then((how) => this.note(`token set to expire in ${seconds} s (${how})`))
        .catch((err) => this.note(`token not shortened: ${err.message}`));
    });
    const f = this.faults;
    return h(
      "div",
      { class: "controls" },
      h("label", {}, toggle("offline", (on) => f.setOffline(on)), " offline"),
      h(
        "label",
        { title: "drop 30% of push results after the server stored the push" },
        toggle("flaky", (on) => f.setFlaky(on)),
        " flaky network",
      ),
      h(
        "label",
        { title: "2 ops a push, 0.5 s apart: a long queue takes a while" },
        toggle("slow", (on) => f.setSlow(on)),
        " slow link",
      ),
      expiry,
    );
  }

  /** New task (title, list) and new list. */
  buildForms() {
    const form = (cls, fields, label, submit) => {
      const node = h("form", { class: cls }, ...fields, h("button", { type: "submit" }, label));
      node.addEventListener("submit", (e) => {
        e.preventDefault();
        const value = fields[0].value.trim();
        if (!value) return;
        fields[0].value = "";
        this.write(() => submit(value));
      });
      return node;
    };
    const title = h("input", { type: "text", name: "title", placeholder: "New task", required: true });
    const listPick = h("select", { name: "list", dataset: { control: "list" } });
    const listName = h("input", { type: "text", placeholder: "New list", name: "list-name" });
    return [
      form("new-task", [title, listPick], "Add", (value) => this.addTask(value, listPick.value || null)),
      form("new-list", [listName], "Add list", (value) => this.addList(value)),
    ];
  }

  /** Counters that move without an event: queue, last result, token countdown. */
  tick() {
    const results = this.device.stats.results;
    const moved = Object.entries(results)
      .map(([k, v]) => [k, v - (this.prevResults[k] ?? 0)])
      .filter(([, n]) => n > 0);
    if (moved.length) {
      this.lastSync = `${moved.map(([k, n]) => `${k} ${n}`).join(", ")} at ${clock()}`;
      this.prevResults = { ...results };
    }
    const set = (key, value) => {
      const el = $(`[data-figure="${key}"]`, this.root);
      if (el.textContent !== value) el.textContent = value;
    };
    set("pending", String(this.device.pending().length));
    set("last-sync", this.lastSync);
    const left = this.faults.linkExpiresIn();
    set(
      "token",
      left === null ? "no link" : left > 0 ? `expires in ${(left / 1000).toFixed(1)} s` : "expired: renewing",
    );
    set("status", this.device.status);
    $('[data-figure="status"]', this.root).dataset.state = this.device.status;
    set("notice", this.notice);
  }

  render() {
    const controls = (name) => $(`[data-control="${name}"]`, this.root);
    controls("offline").checked = this.faults.offline;
    controls("flaky").checked = this.faults.flaky;
    controls("slow").checked = this.faults.slow;
    const lists = this.lists();
    const pick = controls("list");
    const chosen = pick.value;
    pick.replaceChildren(h("option", { value: "" }, "(no list)"), ...lists.map(([id, n]) => h("option", { value: id }, n)));
    pick.value = lists.some(([id]) => id === chosen) ? chosen : "";
    this.renderTasks(lists);
    this.tick();
  }

  renderTasks(lists) {
    const ul = $("ul.tasks", this.root);
    const restore = focusOf(ul);
    const names = new Map(lists);
    const groups = new Map([["", []], ...lists.map(([id]) => [id, []])]);
    for (const task of this.tasks()) {
      const listId = task.state.fields.list_id?.value ?? "";
      (groups.get(names.has(listId) ? listId : "") ?? []).push(task);
    }
    const items = [];
    for (const [listId, tasks] of groups) {
      if (listId) items.push(h("li", { class: "list-name", dataset: { list: listId } }, names.get(listId)));
      for (const t of tasks) items.push(taskRow(this.ctx, t.id, t.state, this.expanded.has(t.id)));
    }
    if (!items.length) items.push(h("li", { class: "empty" }, "no tasks yet"));
    ul.replaceChildren(...items);
    restore();
  }
}

/** Remember the focused editor of a task row (and what was typed into it, not yet
 * written); the returned function puts both back into the re-rendered row. */
function focusOf(ul) {
  const active = document.activeElement;
  const row = active?.closest?.("li[data-task]");
  if (!row || !ul.contains(row) || !active.dataset.edit) return () => {};
  const { task } = row.dataset;
  const { edit, dirty } = active.dataset;
  const { value } = active;
  return () => {
    const again = [...ul.querySelectorAll(`li[data-task] [data-edit="${edit}"]`)].find(
      (el) => el.closest("li[data-task]").dataset.task === task,
    );
    if (!again) return;
    if (dirty) {
      again.value = value;
      again.dataset.dirty = "1";
    }
    again.focus();
  };
}
