// One task as a device shows it: a row (done, title, badges) and, expanded, every field
// of the default schema with its editor. Conflicts show on the field: an lww field lists
// its heads (the value shown wins; the others lose), an mv field shows its values side by
// side; each head has a "keep" button that writes it with every head in `pred`, which
// resolves the conflict.

import { fromLocalInput, h, toLocalInput } from "./dom.js";

const LWW = new Set(["title", "notes", "done", "due_at", "remind_at", "list_id", "position"]);

const text = (v) => (v === null || v === undefined || v === "" ? "(empty)" : String(v));

/** Heads of a conflicted lww/mv field, with a keep button each. */
function conflictBox(ctx, id, field, view) {
  if (!view?.conflicted) return null;
  const mv = !LWW.has(field);
  return h(
    "div",
    { class: "conflict", dataset: { conflict: field } },
    h("span", { class: "conflict-label" }, mv ? "mv: values side by side" : "lww conflict: heads"),
    view.heads.map((head, i) =>
      h(
        "span",
        { class: `head${!mv && i === 0 ? " winner" : ""}`, dataset: { head: head.op_id } },
        h("q", {}, text(head.value)),
        h("small", {}, ` ${ctx.deviceName(head.device_id)}${mv ? "" : i === 0 ? ", wins" : ", loses"} `),
        h(
          "button",
          {
            type: "button",
            class: "keep",
            title: "write this value over every head: resolves the conflict",
            onclick: () => ctx.write((d) => d.set(ctx.space, "task", id, field, head.value)),
          },
          "keep",
        ),
      ),
    ),
  );
}

/** Mark an editor "dirty" while it holds typed text not yet written (a re-render keeps
 * it); writing (the change event) clears the mark. */
function typing(input) {
  input.addEventListener("input", () => {
    input.dataset.dirty = "1";
  });
  input.addEventListener("change", () => delete input.dataset.dirty);
  return input;
}

function editor(label, input, extra = null) {
  return h("label", { class: "edit" }, h("span", {}, label), input, extra);
}

function lwwInput(ctx, id, field, view, type = "text") {
  const value = view?.value ?? "";
  const input =
    type === "textarea"
      ? h("textarea", { rows: 2, dataset: { edit: field } })
      : h("input", { type, dataset: { edit: field } });
  input.value = type === "datetime-local" ? toLocalInput(value) : String(value);
  typing(input);
  input.addEventListener("change", () => {
    const raw = input.value;
    const next = type === "datetime-local" ? fromLocalInput(raw) : raw;
    ctx.write((d) => d.set(ctx.space, "task", id, field, next));
  });
  return input;
}

function tagsEditor(ctx, id, tags) {
  const add = typing(h("input", { type: "text", placeholder: "add tag", dataset: { edit: "tags" } }));
  add.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !add.value.trim()) return;
    e.preventDefault();
    const tag = add.value.trim();
    add.value = "";
    delete add.dataset.dirty;
    ctx.write((d) => d.add(ctx.space, "task", id, "tags", tag));
  });
  return h(
    "span",
    { class: "tags" },
    tags.map((t) =>
      h(
        "span",
        { class: "tag" },
        t,
        h(
          "button",
          { type: "button", title: `remove ${t}`, onclick: () => ctx.write((d) => d.remove(ctx.space, "task", id, "tags", t)) },
          "×",
        ),
      ),
    ),
    add,
  );
}

function listSelect(ctx, id, view) {
  const select = h("select", { dataset: { edit: "list_id" } }, h("option", { value: "" }, "(no list)"));
  for (const [listId, name] of ctx.lists()) select.append(h("option", { value: listId }, name));
  select.value = view?.value ?? "";
  select.addEventListener("change", () =>
    ctx.write((d) => d.set(ctx.space, "task", id, "list_id", select.value || null)),
  );
  return select;
}

function details(ctx, id, state) {
  const f = state.fields;
  const assignee = typing(h("input", { type: "text", placeholder: "assignee", dataset: { edit: "assignee" } }));
  const values = f.assignee?.value ?? [];
  assignee.value = values.length === 1 ? (values[0] ?? "") : "";
  assignee.addEventListener("change", () =>
    ctx.write((d) => d.set(ctx.space, "task", id, "assignee", assignee.value.trim() || null)),
  );
  const lifecycle = state.deleted
    ? h("button", { type: "button", onclick: () => ctx.write((d) => d.restore(ctx.space, "task", id)) }, "restore")
    : h("button", { type: "button", onclick: () => ctx.write((d) => d.delete(ctx.space, "task", id)) }, "delete");
  return h(
    "div",
    { class: "details" },
    editor("title", lwwInput(ctx, id, "title", f.title), conflictBox(ctx, id, "title", f.title)),
    editor("notes", lwwInput(ctx, id, "notes", f.notes, "textarea"), conflictBox(ctx, id, "notes", f.notes)),
    editor("due", lwwInput(ctx, id, "due_at", f.due_at, "datetime-local")),
    editor("reminder", lwwInput(ctx, id, "remind_at", f.remind_at, "datetime-local")),
    editor("assignee", assignee, conflictBox(ctx, id, "assignee", f.assignee)),
    editor("tags", tagsEditor(ctx, id, f.tags?.value ?? [])),
    editor("list", listSelect(ctx, id, f.list_id)),
    h(
      "div",
      { class: "row-actions" },
      h(
        "button",
        { type: "button", dataset: { action: "pomodoro" }, onclick: () => ctx.write((d) => d.inc(ctx.space, "task", id, "pomodoros", 1)) },
        "+1 pomodoro",
      ),
      lifecycle,
    ),
  );
}

/** The `<li>` of task `id` in `state` (the device's merged view). */
export function taskRow(ctx, id, state, expanded) {
  const f = state.fields;
  const conflicted = Object.values(f).some((v) => v.conflicted);
  const done = h("input", { type: "checkbox", title: "done", dataset: { edit: "done" } });
  done.checked = f.done?.value === true;
  done.addEventListener("change", () => ctx.write((d) => d.set(ctx.space, "task", id, "done", done.checked)));
  const assignees = (f.assignee?.value ?? []).filter((v) => v !== null);
  const summary = h(
    "div",
    { class: "summary" },
    done,
    h("span", { class: "title", dataset: { field: "title" } }, f.title?.value ?? "(untitled)"),
    conflicted ? h("span", { class: "badge conflicted", title: "a field has more than one head" }, "conflict") : null,
    f.remind_at?.value ? h("span", { class: "badge", title: `reminder ${f.remind_at.value}` }, "⏰") : null,
    f.pomodoros?.value ? h("span", { class: "badge", dataset: { field: "pomodoros" } }, `🍅${f.pomodoros.value}`) : null,
    (f.tags?.value ?? []).map((t) => h("span", { class: "tag small" }, t)),
    assignees.length ? h("span", { class: "assignee", dataset: { field: "assignee" } }, `@${assignees.join(" | @")}`) : null,
    h(
      "button",
      { type: "button", class: "expand", title: "show every field", onclick: () => ctx.toggle(id) },
      expanded ? "▾" : "▸",
    ),
  );
  return h(
    "li",
    { class: `task${f.done?.value ? " done" : ""}${state.deleted ? " deleted" : ""}`, dataset: { task: id } },
    summary,
    expanded ? details(ctx, id, state) : null,
  );
}
