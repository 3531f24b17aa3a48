// What a read returns (crdt/views.py): the same JSON shapes as the server's entity reads.

import { compareOrder, compareStrings } from "./order.js";

/** Order set elements in reads: integers first, ascending, then strings by code point. */
export function compareElements(a, b) {
  const ga = elementGroup(a);
  const gb = elementGroup(b);
  if (ga !== gb) return ga - gb;
  if (ga === 0) return a < b ? -1 : a > b ? 1 : 0;
  if (ga === 1) return compareStrings(a, b);
  // Only ops that skipped validation carry anything else; keep one place for each.
  return compareStrings(JSON.stringify(a) ?? "", JSON.stringify(b) ?? "");
}

function elementGroup(e) {
  if (Number.isInteger(e)) return 0;
  return typeof e === "string" ? 1 : 2;
}

/** Head ops, greatest order key first. */
export function byOrderDesc(ops) {
  return [...ops].sort((a, b) => compareOrder(b, a));
}

/** View an lww or mv field from its head ops; null when it has none. */
export function registerView(heads, mv) {
  if (heads.size === 0) return null;
  const ordered = byOrderDesc(heads.values());
  const listed = ordered.map((h) => ({
    op_id: h.op_id,
    value: h.value ?? null,
    device_id: h.device_id ?? "",
    lamport: h.lamport,
  }));
  return {
    value: mv ? listed.map((h) => h.value) : listed[0].value,
    heads: listed,
    conflicted: listed.length > 1,
  };
}

/** View a set field: its present elements, in `compareElements` order. */
export function setView(counts) {
  return { value: [...counts.keys()].sort(compareElements) };
}
