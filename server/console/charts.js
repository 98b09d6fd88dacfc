// Charts drawn as plain SVG, so the console needs nothing from the internet.
// Every function takes plain data and returns an element; app.js decides what to draw.
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#0b63ce", "#e8710a", "#1aa34a", "#c5221f", "#8430ce", "#12848f", "#b06000", "#d01884"];
  const W = 640, H = 280, M = { top: 12, right: 16, bottom: 46, left: 56 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, content, attrs) {
    const t = el("text", Object.assign({ x, y }, attrs || {}), parent);
    t.textContent = content;
    return t;
  }

  // Round tick steps (1, 2, 5 × 10^n) so axis labels read well.
  function niceTicks(min, max, count) {
    if (!(max > min)) { max = min + 1; }
    const raw = (max - min) / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
    return ticks;
  }

  function formatNumber(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const abs = Math.abs(v);
    if (abs >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (abs >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (abs >= 1e4) return (v / 1e3).toFixed(1) + "k";
    return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(abs < 1 ? 3 : 2)));
  }

  function formatTime(ms, span) {
    const d = new Date(ms);
    const pad = (n) => String(n).padStart(2, "0");
    const hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    if (span > 2 * 86400000) return (d.getMonth() + 1) + "/" + d.getDate() + " " + hm;
    return span < 600000 ? hm + ":" + pad(d.getSeconds()) : hm;
  }

  function empty(message) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = message;
    return p;
  }

  function legend(svg, names) {
    const g = el("g", { class: "legend" }, svg);
    let x = M.left;
    names.forEach((name, i) => {
      el("rect", { x, y: H - 14, width: 10, height: 10, fill: COLORS[i % COLORS.length] }, g);
      const label = String(name).slice(0, 24);
      text(g, x + 14, H - 5, label);
      x += 26 + label.length * 6.5;
    });
  }

  // series: [{name, points: [[x, y], ...]}] with numeric x; time says whether x is ms.
  function line(series, opts) {
    const all = series.flatMap((s) => s.points);
    if (all.length === 0) return empty("No rows yet.");
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    const yt = niceTicks(Math.min(0, ...ys), Math.max(...ys), 5);
    const y0 = yt[0], y1 = yt[yt.length - 1] > y0 ? yt[yt.length - 1] : y0 + 1;
    const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
    const sy = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || "line chart", class: "line-chart" });
    const grid = el("g", { class: "grid" }, svg);
    const axis = el("g", { class: "axis" }, svg);
    for (const t of yt) {
      el("line", { x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t) }, grid);
      text(axis, M.left - 6, sy(t) + 4, formatNumber(t), { "text-anchor": "end" });
    }
    el("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }, axis);
    const span = x1 - x0;
    const xt = opts.time ? niceTicks(x0, x1, 5) : niceTicks(x0, x1, 6);
    for (const t of xt) {
      if (t < x0 || t > x1) continue;
      el("line", { x1: sx(t), x2: sx(t), y1: H - M.bottom, y2: H - M.bottom + 4 }, axis);
      // Labels at the edges hang inward so none is cut off.
      const anchor = sx(t) > W - M.right - 30 ? "end" : sx(t) < M.left + 30 ? "start" : "middle";
      text(axis, sx(t), H - M.bottom + 16, opts.time ? formatTime(t, span) : formatNumber(t), { "text-anchor": anchor });
    }
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = s.points.slice().sort((a, b) => a[0] - b[0]);
      el("polyline", {
        points: pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
        fill: "none", stroke: color, "stroke-width": 2, class: "series", "data-series": s.name,
      }, svg);
      for (const p of pts) {
        const c = el("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 3, fill: color, class: "point", "data-series": s.name, "data-x": p[0], "data-y": p[1] }, svg);
        el("title", {}, c).textContent = `${s.name}: ${formatNumber(p[1])} at ${opts.time ? new Date(p[0]).toLocaleString() : p[0]}`;
      }
    });
    legend(svg, series.map((s) => s.name));
    return svg;
  }

  // bars: [{name, value}]
  function bar(bars, opts) {
    if (bars.length === 0) return empty("No rows yet.");
    const yt = niceTicks(Math.min(0, ...bars.map((b) => b.value)), Math.max(...bars.map((b) => b.value)), 5);
    const y0 = yt[0], y1 = yt[yt.length - 1] > y0 ? yt[yt.length - 1] : y0 + 1;
    const sy = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || "bar chart", class: "bar-chart" });
    const grid = el("g", { class: "grid" }, svg);
    const axis = el("g", { class: "axis" }, svg);
    for (const t of yt) {
      el("line", { x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t) }, grid);
      text(axis, M.left - 6, sy(t) + 4, formatNumber(t), { "text-anchor": "end" });
    }
    const band = (W - M.left - M.right) / bars.length;
    bars.forEach((b, i) => {
      const x = M.left + i * band + band * 0.15;
      const top = sy(Math.max(0, b.value)), bottom = sy(Math.min(0, b.value));
      const r = el("rect", { x: x.toFixed(1), y: top.toFixed(1), width: (band * 0.7).toFixed(1), height: Math.max(1, bottom - top).toFixed(1), fill: COLORS[i % COLORS.length], class: "bar", "data-name": b.name, "data-value": b.value }, svg);
      el("title", {}, r).textContent = `${b.name}: ${formatNumber(b.value)}`;
      text(axis, x + band * 0.35, H - M.bottom + 16, String(b.name).slice(0, 14), { "text-anchor": "middle" });
    });
    return svg;
  }

  function number(value, caption) {
    const div = document.createElement("div");
    div.className = "number";
    div.textContent = typeof value === "number" ? formatNumber(value) : (value ?? "–");
    if (caption) {
      const c = document.createElement("div");
      c.className = "muted";
      c.style.fontSize = "0.9rem";
      c.textContent = caption;
      div.appendChild(c);
    }
    return div;
  }

  return { line, bar, number, formatNumber };
})();
