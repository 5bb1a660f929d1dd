/* ttscale view: small SVG charts (no libraries). window.TTCharts.lineChart(opts) -> <svg>. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }
  function text(parent, x, y, s, attrs) {
    const t = el("text", Object.assign({x: x, y: y, "font-size": 11, fill: "#444"}, attrs || {}), parent);
    t.textContent = s;
    return t;
  }
  function ticks(lo, hi, log) {
    if (log) {
      const out = [];
      for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
        for (const m of [1, 2, 5]) { const v = m * Math.pow(10, e); if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v); }
      }
      return out.length >= 2 ? out : [lo, hi];
    }
    const span = hi - lo || 1, raw = span / 5, p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(m => m * p).find(s => span / s <= 6);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }
  function fmt(v) { return Math.abs(v) >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k" : String(+v.toFixed(3)); }

  /* opts: {width, height, title, xlabel, ylabel, xlog, ymin, ymax, series: [{name, color, points: [{x, y, lo, hi,
     title, onclick, hollow}], dash, noline, width}], hlines: [{y, label}], vlines: [{x, label}]} */
  function lineChart(o) {
    const W = o.width || 460, H = o.height || 300, m = {l: 48, r: 14, t: o.title ? 26 : 10, b: 40};
    const svg = el("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart", style: "width:100%;max-width:" + W + "px;height:auto"});
    const pts = o.series.flatMap(s => s.points).filter(p => p.x != null && p.y != null && (!o.xlog || p.x > 0));
    let xs = pts.map(p => p.x).concat((o.vlines || []).map(v => v.x));
    if (!xs.length) xs = [1, 2];
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x0 === x1) { x0 = o.xlog ? x0 / 2 : x0 - 1; x1 = o.xlog ? x1 * 2 : x1 + 1; }
    if (o.xlog) { x0 /= 1.25; x1 *= 1.25; } else { const pad = (x1 - x0) * 0.04; x0 -= pad; x1 += pad; }
    const ysAll = pts.map(p => p.y).concat((o.hlines || []).map(h => h.y));
    const y0 = o.ymin != null ? o.ymin : Math.min(0, ...ysAll), y1 = o.ymax != null ? o.ymax : Math.max(1, ...ysAll) * 1.05;
    const X = v => m.l + (o.xlog ? (Math.log(v) - Math.log(x0)) / (Math.log(x1) - Math.log(x0)) : (v - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = v => H - m.b - (v - y0) / (y1 - y0 || 1) * (H - m.t - m.b);
    if (o.title) text(svg, m.l, 16, o.title, {"font-size": 12, "font-weight": 600, fill: "#222"});
    const g = el("g", {}, svg);
    for (const t of ticks(x0, x1, o.xlog)) {
      el("line", {x1: X(t), x2: X(t), y1: m.t, y2: H - m.b, stroke: "#eee"}, g);
      text(g, X(t), H - m.b + 14, fmt(t), {"text-anchor": "middle"});
    }
    for (const t of ticks(y0, y1, false)) {
      el("line", {x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), stroke: "#eee"}, g);
      text(g, m.l - 5, Y(t) + 4, fmt(t), {"text-anchor": "end"});
    }
    el("rect", {x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, fill: "none", stroke: "#ccc"}, g);
    if (o.xlabel) text(svg, (m.l + W - m.r) / 2, H - 6, o.xlabel, {"text-anchor": "middle"});
    if (o.ylabel) text(svg, 12, (m.t + H - m.b) / 2, o.ylabel, {"text-anchor": "middle", transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`});
    for (const h of o.hlines || []) {
      el("line", {x1: m.l, x2: W - m.r, y1: Y(h.y), y2: Y(h.y), stroke: h.color || "#c62828", "stroke-dasharray": "5 3"}, svg);
      if (h.label) text(svg, W - m.r - 4, Y(h.y) - 4, h.label, {"text-anchor": "end", fill: h.color || "#c62828"});
    }
    for (const v of o.vlines || []) {
      el("line", {x1: X(v.x), x2: X(v.x), y1: m.t, y2: H - m.b, stroke: v.color || "#c62828", "stroke-dasharray": "5 3", class: v.cls || ""}, svg);
      if (v.label) text(svg, X(v.x) - 4, m.t + 12, v.label, {"text-anchor": "end", fill: v.color || "#c62828"});
    }
    o.series.forEach((s, i) => {
      const c = s.color || PALETTE[i % PALETTE.length];
      const ps = s.points.filter(p => p.x != null && p.y != null && (!o.xlog || p.x > 0));
      const band = ps.filter(p => p.lo != null && p.hi != null);
      if (band.length > 1) {
        const d = band.map(p => `${X(p.x)},${Y(p.hi)}`).concat(band.slice().reverse().map(p => `${X(p.x)},${Y(p.lo)}`));
        el("polygon", {points: d.join(" "), fill: c, opacity: 0.12}, svg);
      }
      if (!s.noline && ps.length > 1) {
        el("polyline", {points: ps.map(p => `${X(p.x)},${Y(p.y)}`).join(" "), fill: "none", stroke: c,
          "stroke-width": s.width || 1.8, "stroke-dasharray": s.dash || ""}, svg);
      }
      for (const p of ps) {
        const dot = el("circle", {cx: X(p.x), cy: Y(p.y), r: s.r || 4, fill: p.hollow ? "#fff" : (p.color || c),
          stroke: p.color || c, "stroke-width": 1.5, class: p.onclick ? "pt" : ""}, svg);
        if (p.cls) dot.classList.add(p.cls);
        if (p.title) { const t = el("title", {}, dot); t.textContent = p.title; }
        if (p.onclick) dot.addEventListener("click", p.onclick);
      }
    });
    return svg;
  }

  /* red -> yellow -> green over [lo, hi] */
  function scoreColor(v, lo, hi) {
    if (v == null) return "#ddd";
    const t = hi > lo ? Math.max(0, Math.min(1, (v - lo) / (hi - lo))) : 1;
    const a = [215, 48, 39], b = [254, 224, 139], c = [26, 152, 80];
    const [p, q, u] = t < 0.5 ? [a, b, t * 2] : [b, c, (t - 0.5) * 2];
    return `rgb(${p.map((x, i) => Math.round(x + (q[i] - x) * u)).join(",")})`;
  }

  window.TTCharts = {lineChart, scoreColor, el, text, PALETTE};
})();
