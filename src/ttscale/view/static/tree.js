/* ttscale view: the search tree as SVG. window.TTTree.render(host, tree, detailHost). Nodes laid out left to right by
   depth, leaves stacked; colour = score; outline = status (kept / finished / pruned); the chosen path in orange.
   A node with children has a +/- toggle that folds its subtree; clicking a node shows its text. */
"use strict";
(function () {
  const C = window.TTCharts;
  const DX = 150, R = 8;
  const HALO = {stroke: "#fff", "stroke-width": 3, "paint-order": "stroke"};

  function esc(s) { return String(s == null ? "" : s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }

  function render(host, tree, detail) {
    const nodes = tree.nodes, byId = new Map(nodes.map(n => [n.id, n])), kids = new Map();
    const roots = [];
    for (const n of nodes) {
      if (n.parent != null && byId.has(n.parent)) { if (!kids.has(n.parent)) kids.set(n.parent, []); kids.get(n.parent).push(n); }
      else roots.push(n);
    }
    const folded = new Set();
    if (nodes.length > 60) for (const r of roots) if (kids.has(r.id)) folded.add(r.id);
    let selected = null;
    const [lo, hi] = tree.score_range || [0, 1];

    function draw() {
      host.innerHTML = "";
      const DY = nodes.length <= 80 ? 34 : 24;
      const pos = new Map();
      let row = 0, maxDepth = 0;
      function place(n, d) {
        maxDepth = Math.max(maxDepth, d);
        const ch = folded.has(n.id) ? [] : (kids.get(n.id) || []);
        if (!ch.length) { pos.set(n.id, [d, row++]); return; }
        ch.forEach(c => place(c, d + 1));
        const ys = ch.map(c => pos.get(c.id)[1]);
        pos.set(n.id, [d, (Math.min(...ys) + Math.max(...ys)) / 2]);
      }
      roots.forEach(r => place(r, 0));
      const W = (maxDepth + 1) * DX + 180, H = Math.max(row, 1) * DY + 24;
      const svg = C.el("svg", {width: W, height: H, class: "tree", "data-visible": pos.size});
      const X = d => 24 + d * DX, Y = r => 16 + r * DY;
      for (const [id, [d, r]] of pos) {
        const n = byId.get(id);
        if (n.parent == null || !pos.has(n.parent)) continue;
        const [pd, pr] = pos.get(n.parent);
        const mx = (X(pd) + X(d)) / 2;
        C.el("path", {d: `M${X(pd)},${Y(pr)} C${mx},${Y(pr)} ${mx},${Y(r)} ${X(d)},${Y(r)}`,
          class: "edge" + (n.on_chosen_path && byId.get(n.parent).on_chosen_path ? " path" : "")}, svg);
      }
      for (const [id, [d, r]] of pos) {
        const n = byId.get(id);
        const g = C.el("g", {class: `node ${n.status}` + (selected === id ? " sel" : ""), "data-id": id,
          "data-status": n.status, transform: `translate(${X(d)},${Y(r)})`}, svg);
        const dot = C.el("circle", {r: R, fill: C.scoreColor(n.score, lo, hi), class: "dot"}, g);
        const t = C.el("title", {}, dot);
        t.textContent = `#${id} ${n.status}` + (n.score != null ? ` score ${(+n.score).toFixed(3)}` : "") + (n.step ? "\n" + n.step.slice(0, 160) : "");
        if (n.on_chosen_path) C.el("circle", {r: R + 3.5, fill: "none", stroke: "#e36209", "stroke-width": 2}, g);
        if (n.candidate && n.answer != null) C.text(g, R + 5, 4, `→ ${n.answer}`, Object.assign({fill: n.correct ? "#1a7f37" : n.correct === false ? "#c62828" : "#444", "font-weight": 600}, HALO));
        else if (nodes.length <= 120 && n.step) C.text(g, R + 5, 4, n.step.length > 20 ? n.step.slice(0, 19) + "…" : n.step, Object.assign({fill: "#555", "font-size": 10}, HALO));
        g.addEventListener("click", () => { selected = id; show(n); draw(); });
        if (kids.has(id)) {
          const tg = C.el("g", {class: "fold", transform: `translate(0,${R + 9})`, "data-fold": id}, g);
          C.el("rect", {x: -5, y: -5, width: 10, height: 10, rx: 2, fill: "#fff", stroke: "#999"}, tg);
          C.text(tg, 0, 3.5, folded.has(id) ? "+" : "−", {"text-anchor": "middle", "font-size": 10, fill: "#333"});
          tg.addEventListener("click", ev => { ev.stopPropagation(); folded.has(id) ? folded.delete(id) : folded.add(id); draw(); });
        }
      }
      host.appendChild(svg);
    }

    function show(n) {
      const f = v => v == null ? "–" : (typeof v === "number" ? (+v.toFixed(4)) : esc(v));
      detail.innerHTML = `<h3 style="margin:.2em 0">node #${n.id} <span class="tag ${n.status}">${n.status}</span>` +
        (n.on_chosen_path ? '<span class="tag chosen">chosen path</span>' : "") + `</h3>
        <table class="small"><tr><th class="l">round</th><td>${f(n.round)}</td><th class="l">depth</th><td>${f(n.depth)}</td></tr>
        <tr><th class="l">score</th><td>${f(n.score)}</td><th class="l">step score</th><td>${f(n.step_score)}</td></tr>
        <tr><th class="l">parent</th><td>${f(n.parent)}</td><th class="l">end</th><td>${f(n.end)}</td></tr>
        ${n.visits != null ? `<tr><th class="l">visits</th><td>${n.visits}</td><th class="l">value</th><td>${f(n.value)}</td></tr>` : ""}
        ${n.candidate ? `<tr><th class="l">answer</th><td>${f(n.answer)}</td><th class="l">correct</th><td>${f(n.correct)}</td></tr>` : ""}</table>
        <div class="muted small">this step</div><pre class="node-step">${esc(n.step || "")}</pre>
        ${n.text ? `<div class="muted small">whole path</div><pre>${esc(n.text)}</pre>` : ""}`;
    }

    draw();
    return {
      expandAll() { folded.clear(); draw(); },
      collapseAll() { for (const r of roots) if (kids.has(r.id)) folded.add(r.id); draw(); },
    };
  }
  window.TTTree = {render};
})();
