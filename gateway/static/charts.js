// Small time-series charts in hand-written SVG: no library, no CDN, no build step.
// Shared by /diagnostics and /sandbox. Text goes in through textContent only.
//
//   drawChart(element, {
//     title: "ops per second", unit: "/s", start, end,          // the window, epoch seconds
//     times: [t0, t1, ...],                                     // epoch seconds
//     series: [{ name: "applied", values: [1, 0, null, ...] }], // null: no value (a gap)
//     kind: "line" | "points",                                  // points: one dot per value
//     width: 320, height: 92,                                   // the viewBox (CSS scales it)
//   });

const NS = "http://www.w3.org/2000/svg";
const PAD = { left: 30, right: 6, top: 8, bottom: 16 };
export const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

function svg(name, attrs = {}, text = null) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/** A round number at or above `v` (1, 2, 2.5, 5 times a power of ten). */
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= v * 0.999999) return m * power;
  return 10 * power;
}

/** A short number: 1.2k, 35, 3.5, 0.25. */
export function short(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 10_000) return `${Math.round(v / 1000)}k`;
  if (a >= 1000) return `${(v / 1000).toFixed(1)}k`;
  if (a >= 10 || Number.isInteger(v)) return String(Math.round(v));
  return a >= 1 ? v.toFixed(1) : v.toFixed(2);
}

function ago(seconds) {
  if (seconds <= 0) return "now";
  return seconds < 120 ? `-${Math.round(seconds)}s` : `-${Math.round(seconds / 60)}m`;
}

/** Seconds between time ticks: the smallest round step giving at most 3 ticks back. */
function tickStep(span) {
  return [10, 20, 30, 60, 120, 300, 600].find((step) => span / step <= 3) ?? 900;
}

/** The window to draw: the last `windowS` seconds, or less while the data is younger
 * (at least `minS`), so a fresh page does not squeeze its first minute into a sliver. */
export function timeWindow(times, end, windowS = 900, minS = 60) {
  const first = times.find((t) => Number.isFinite(t)) ?? end;
  return { start: Math.max(end - windowS, Math.min(first, end - minS)), end };
}

function axes(root, start, end, max, unit, W, H) {
  const x0 = PAD.left;
  const x1 = W - PAD.right;
  const y0 = H - PAD.bottom;
  root.append(
    svg("line", { x1: x0, x2: x1, y1: y0, y2: y0, class: "axis" }),
    svg("line", { x1: x0, x2: x1, y1: PAD.top, y2: PAD.top, class: "grid" }),
    svg("text", { x: x0 - 3, y: PAD.top + 4, "text-anchor": "end", class: "tick" }, `${short(max)}${unit}`),
    svg("text", { x: x0 - 3, y: y0, "text-anchor": "end", class: "tick" }, "0"),
  );
  const span = end - start;
  const step = tickStep(span);
  for (let back = 0; back <= span; back += step) {
    const x = x1 - (back / span) * (x1 - x0);
    if (x < x0 + 12 && back > 0) break; // no label over the value axis
    const anchor = back === 0 ? "end" : "middle";
    root.append(svg("text", { x, y: H - 3, "text-anchor": anchor, class: "tick" }, ago(back)));
  }
}

function pathOf(times, values, x, y) {
  let d = "";
  let pen = false;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined || !Number.isFinite(v)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${x(times[i]).toFixed(1)} ${y(v).toFixed(1)}`;
    pen = true;
  }
  return d;
}

/** Draw (or redraw) a chart into `target`; returns the number of values drawn. */
export function drawChart(target, spec) {
  const { title, unit = "", times = [], series = [], kind = "line", width: W = 320, height: H = 92 } = spec;
  const end = spec.end ?? times.at(-1) ?? Date.now() / 1000;
  const start = spec.start ?? end - 900;
  const inWindow = (t) => t >= start && t <= end;
  let max = 0;
  let drawn = 0;
  for (const s of series) {
    s.values.forEach((v, i) => {
      if (Number.isFinite(v) && inWindow(times[i])) {
        max = Math.max(max, v);
        drawn += 1;
      }
    });
  }
  max = niceMax(max);
  const x = (t) => PAD.left + ((t - start) / (end - start)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  root.append(svg("title", {}, title));
  axes(root, start, end, max, unit, W, H);
  series.forEach((s, k) => {
    const color = s.color ?? COLORS[k % COLORS.length];
    const shown = times.map((t, i) => (inWindow(t) ? s.values[i] : null));
    if (kind === "points") {
      shown.forEach((v, i) => {
        if (Number.isFinite(v)) root.append(svg("circle", { cx: x(times[i]), cy: y(v), r: 2.6, fill: color }));
      });
    } else {
      const d = pathOf(times, shown, x, y);
      if (d) root.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 1.6, class: "line" }));
    }
  });
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  const name = document.createElement("span");
  name.className = "chart-title";
  name.textContent = title;
  caption.append(name);
  series.forEach((s, k) => {
    const last = [...s.values].reverse().find((v) => Number.isFinite(v));
    const key = document.createElement("span");
    key.className = "chart-key";
    key.style.color = s.color ?? COLORS[k % COLORS.length];
    key.textContent = `${s.name} ${short(last ?? null)}`;
    caption.append(key);
  });
  figure.append(caption, root);
  target.replaceChildren(figure);
  target.dataset.points = String(drawn);
  return drawn;
}
