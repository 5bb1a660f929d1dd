/* ttscale view: the page. Hash routes: #/ (everything given), #/run/ID?query (problems table), #/run/ID/p/INDEX
   (one problem), #/sweep/ID (curves and policy). Data from the api/ endpoints, or, in an exported page, from the
   embedded JSON (the same shapes; paging done here). The live view polls api/state and redraws on change. */
"use strict";
(function () {
  const $app = document.getElementById("app"), $crumbs = document.getElementById("crumbs"), $live = document.getElementById("live");
  const EMBED = document.getElementById("ttscale-data");
  const LOCAL = EMBED ? JSON.parse(EMBED.textContent) : null;
  const SORT_KEYS = ["index", "problem_id", "correct", "answer", "reference", "generated_tokens", "generations", "wall_time_s", "candidates", "sample_accuracy"];
  let version = null, busy = false;

  const esc = s => String(s == null ? "" : s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const pct = v => v == null ? "–" : (100 * v).toFixed(1) + "%";
  const num = (v, d) => v == null ? "–" : (+v).toLocaleString("en-US", {maximumFractionDigits: d || 0, minimumFractionDigits: d || 0});
  const yes = v => v == null ? '<span class="muted">–</span>' : v ? '<span class="ok">✓</span>' : '<span class="bad">✗</span>';
  const params = p => Object.entries(p || {}).map(([k, v]) => `${k}=${typeof v === "object" || (typeof v === "string" && /\s|^$/.test(v)) ? JSON.stringify(v) : v}`).join(" ");

  /* --- data ------------------------------------------------------------------------------------------------ */
  function sortVal(r, k) {
    const v = r[k];
    if (typeof v === "boolean") return [0, +v, ""];
    if (typeof v === "number") return [0, v, ""];
    const f = Number(v);
    return String(v).trim() !== "" && !isNaN(f) ? [0, f, ""] : [0, Infinity, String(v)];
  }
  function localPage(rows, q) {
    const want = {correct: true, wrong: false, ungraded: null}[q.status || "all"];
    const ql = (q.q || "").trim().toLowerCase(), key = q.sort || "index", desc = q.desc === "true";
    const sel = rows.filter(r => (want === undefined || r.correct === want) &&
      (!ql || ["problem_id", "answer", "reference"].some(k => String(r[k] == null ? "" : r[k]).toLowerCase().includes(ql))));
    const has = sel.filter(r => r[key] != null), nulls = sel.filter(r => r[key] == null);
    has.sort((a, b) => { const x = sortVal(a, key), y = sortVal(b, key); const c = x[1] - y[1] || (x[2] < y[2] ? -1 : x[2] > y[2] ? 1 : 0); return desc ? -c : c; });
    const off = +(q.offset || 0), lim = +(q.limit || 50);
    return {total: rows.length, matched: sel.length, offset: off, limit: lim, rows: has.concat(nulls).slice(off, off + lim)};
  }
  function localApi(path, q) {
    const p = path.split("/");
    if (p[0] === "index") return LOCAL.index;
    if (p[0] === "state") return {version: LOCAL.index.version, runs: {}};
    if (p[0] === "sweeps") { const s = LOCAL.sweeps[p[1]]; if (!s) throw new Error(`no sweep ${p[1]}`); return s; }
    const run = LOCAL.runs[p[1]];
    if (!run) throw new Error(`no run '${p[1]}'`);
    if (p.length === 2) return run.summary;
    if (p.length === 3) return localPage(run.rows, q || {});
    const d = run.details[+p[3]];
    if (!d) throw new Error(`no problem ${p[3]}`);
    return d;
  }
  async function api(path, q) {
    if (LOCAL) return localApi(path, q);
    const url = "api/" + path + (q ? "?" + new URLSearchParams(q) : "");
    const r = await fetch(url, {cache: "no-store"});
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.detail || r.statusText);
    return body;
  }

  /* --- routing --------------------------------------------------------------------------------------------- */
  function route() {
    const h = location.hash.replace(/^#\/?/, "");
    const [path, qs] = h.split("?");
    return {parts: path ? path.split("/") : [], q: Object.fromEntries(new URLSearchParams(qs || ""))};
  }
  function go(hash) { location.hash = hash; }
  function crumbs(items) {
    $crumbs.innerHTML = items.map(([label, href]) => href ? `<a href="${href}">${esc(label)}</a>` : `<span>${esc(label)}</span>`).join("› ");
  }
  async function render(keepScroll) {
    if (busy) return;
    busy = true;
    const y = window.scrollY, {parts, q} = route();
    try {
      if (parts[0] === "run" && parts[2] === "p") await problemPage(parts[1], +parts[3], q);
      else if (parts[0] === "run") await runPage(parts[1], q);
      else if (parts[0] === "sweep") await sweepPage(parts[1]);
      else await homePage();
      if (keepScroll) window.scrollTo(0, y);
    } catch (e) {
      $app.innerHTML = `<div class="err">${esc(e.message)}</div><p><a href="#/">back to everything</a></p>`;
    } finally { busy = false; }
  }

  /* --- pages ----------------------------------------------------------------------------------------------- */
  function summaryCards(s) {
    const cards = [["accuracy", pct(s.accuracy) + (s.graded ? ` <small>(${s.correct}/${s.graded})</small>` : "")],
      ["single-sample accuracy", pct(s.sample_accuracy)], ["problems", num(s.problems)],
      ["generated tokens / problem", num(s.mean_generated_tokens)], ["generations / problem", num(s.mean_generations, 1)],
      ["verifier tokens / problem", num(s.mean_verifier_tokens)], ["wall time / problem", num(s.mean_wall_time_s, 2) + " s"],
      ["total generated tokens", num(s.total_generated_tokens)]];
    if (s.total_flops != null) cards.push(["total FLOPs", (+s.total_flops).toExponential(2)]);
    if (s.stopped_by_budget) cards.push(["stopped by budget", num(s.stopped_by_budget)]);
    return `<div class="cards" id="summary">${cards.map(([k, v]) => `<div class="card"><b>${v}</b><span>${k}</span></div>`).join("")}</div>`;
  }

  async function homePage() {
    const ix = await api("index");
    version = ix.version;
    if (ix.runs.length === 1 && !ix.sweeps.length) { go(`#/run/${ix.runs[0].id}`); return; }
    crumbs([]);
    const sweeps = ix.sweeps.length ? `<h2>Sweeps</h2><table><tr><th class="l">sweep</th><th>rows</th><th>configurations</th><th class="l">policy</th></tr>` +
      ix.sweeps.map(s => `<tr class="click" data-href="#/sweep/${s.id}"><td class="l"><a href="#/sweep/${s.id}">${esc(s.label)}</a></td><td>${s.rows}</td><td>${s.configs}</td><td class="l">${s.policy_given ? "given" : "fitted here"}</td></tr>`).join("") + "</table>" : "";
    $app.innerHTML = `<h1>Runs and sweeps</h1><p class="muted small">${ix.inputs.map(i => esc(i.path) + " (" + i.kind + ")").join(", ")}</p>${sweeps}
      <h2>Runs</h2><table id="runs"><tr><th class="l">run</th><th class="l">strategy</th><th class="l">model</th><th>problems</th><th>accuracy</th><th>1-sample acc</th><th>gen tok / problem</th><th>generations</th></tr>
      ${ix.runs.map(r => `<tr class="click" data-href="#/run/${r.id}"><td class="l"><a href="#/run/${r.id}">${esc(r.label)}</a></td><td class="l">${esc(r.strategy)}</td><td class="l">${esc(r.model)}</td>
        <td>${r.problems}</td><td>${pct(r.accuracy)}</td><td>${pct(r.sample_accuracy)}</td><td>${num(r.mean_generated_tokens)}</td><td>${num(r.mean_generations, 1)}</td></tr>`).join("")}</table>`;
    clickRows();
  }
  function clickRows() {
    for (const tr of $app.querySelectorAll("tr[data-href]")) tr.addEventListener("click", ev => { if (ev.target.tagName !== "A") go(tr.dataset.href); });
  }

  const COLS = [["index", "#"], ["problem_id", "problem"], ["correct", "correct"], ["answer", "answer"], ["reference", "reference"],
    ["generated_tokens", "gen tokens"], ["generations", "generations"], ["wall_time_s", "wall s"], ["candidates", "candidates"], ["sample_accuracy", "1-sample acc"]];

  async function runPage(rid, q) {
    q = Object.assign({offset: "0", limit: "50", sort: "index", desc: "false", q: "", status: "all"}, q);
    const [s, pg] = await Promise.all([api(`runs/${rid}`), api(`runs/${rid}/problems`, q)]);
    crumbs([["everything", "#/"], [s.label, null]]);
    const qs = o => `#/run/${rid}?` + new URLSearchParams(Object.assign({}, q, o));
    const off = +q.offset, lim = +q.limit, pages = Math.max(1, Math.ceil(pg.matched / lim));
    const head = COLS.map(([k, label]) => {
      const on = q.sort === k, desc = on && q.desc === "true";
      return `<th class="sort${["problem_id", "answer", "reference"].includes(k) ? " l" : ""}${on ? " sorted" : ""}${desc ? " desc" : ""}" data-sort="${k}">${label}</th>`;
    }).join("");
    const body = pg.rows.map(r => `<tr class="click" data-href="#/run/${rid}/p/${r.index}"><td>${r.index}</td><td class="l"><a href="#/run/${rid}/p/${r.index}">${esc(r.problem_id)}</a></td>
      <td>${yes(r.correct)}</td><td class="l">${esc(r.answer)}</td><td class="l">${esc(r.reference)}</td><td>${num(r.generated_tokens)}</td><td>${num(r.generations)}</td>
      <td>${num(r.wall_time_s, 2)}</td><td>${r.candidates}</td><td>${pct(r.sample_accuracy)}</td></tr>`).join("");
    $app.innerHTML = `<h1>${esc(s.label)}</h1>
      <p class="muted"><b>${esc(s.strategy)}</b> ${esc(params(s.params))} · ${esc(s.engine)}:${esc(s.model)} · seed ${esc(s.seed)} · <span class="small">${esc(s.path)}</span></p>
      ${summaryCards(s)}
      <div class="toolbar"><input id="filter" placeholder="filter: problem id, answer or reference" size="36" value="${esc(q.q)}">
      <select id="status">${["all", "correct", "wrong", "ungraded"].map(v => `<option${v === q.status ? " selected" : ""}>${v}</option>`).join("")}</select>
      <span class="pager"><button id="prev"${off <= 0 ? " disabled" : ""}>‹ prev</button><span id="pageinfo">page ${Math.floor(off / lim) + 1} of ${pages} · ${pg.matched} of ${pg.total} problems</span>
      <button id="next"${off + lim >= pg.matched ? " disabled" : ""}>next ›</button></span></div>
      <table id="problems"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>
      ${pg.total === 0 ? '<p class="muted">No finished problem yet: this page updates as the run writes results.</p>' : ""}`;
    for (const th of $app.querySelectorAll("th[data-sort]")) th.addEventListener("click", () => {
      const k = th.dataset.sort;
      go(qs({sort: k, desc: q.sort === k && q.desc !== "true" ? "true" : "false", offset: 0}));
    });
    const f = document.getElementById("filter");
    let timer = null;
    f.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => go(qs({q: f.value, offset: 0})), 250); });
    if (q.q) { f.focus(); f.setSelectionRange(f.value.length, f.value.length); }
    document.getElementById("status").addEventListener("change", e => go(qs({status: e.target.value, offset: 0})));
    document.getElementById("prev").addEventListener("click", () => go(qs({offset: Math.max(0, off - lim)})));
    document.getElementById("next").addEventListener("click", () => go(qs({offset: off + lim})));
    clickRows();
  }

  function votesHtml(d) {
    const max = Math.max(1, ...d.votes.map(v => v.weight != null ? v.weight : v.count));
    return `<table id="votes"><tr><th class="l">answer</th><th>samples</th><th>recorded vote</th><th>sum of scores</th><th class="l"></th><th>correct</th><th class="l">members</th></tr>` +
      d.votes.map(v => { const w = v.weight != null ? v.weight : v.count;
        return `<tr${v.chosen ? ' class="chosen"' : ""}><td class="l"><b>${v.answer == null ? '<span class="muted">(no answer)</span>' : esc(v.answer)}</b>${v.chosen ? '<span class="tag chosen">chosen</span>' : ""}</td>
        <td>${v.count}</td><td>${v.weight == null ? "–" : num(v.weight, 3)}</td><td>${v.score_sum == null ? "–" : num(v.score_sum, 3)}</td>
        <td class="l"><span class="bar${v.chosen ? " win" : ""}" style="width:${Math.round(160 * w / max)}px"></span></td><td>${yes(v.correct)}</td>
        <td class="l small">${v.members.join(", ")}</td></tr>`; }).join("") + "</table>";
  }
  function candHtml(d) {
    const rows = d.candidates.map(c => `<tr class="click cand" data-id="${c.id}"><td>${c.id}</td><td>${c.parent == null ? "–" : c.parent}</td>
      <td class="l">${esc(c.answer)}</td><td>${yes(c.correct)}</td><td>${c.score == null ? "–" : num(c.score, 4)}</td>
      <td class="l small">${c.step_scores ? c.step_scores.map(x => (+x).toFixed(2)).join(" ") : "–"}</td><td>${c.tokens == null ? "–" : c.tokens}</td>
      <td class="l">${esc(c.finish_reason || "–")}</td><td class="l">${c.status ? `<span class="tag ${c.status}">${c.status}</span>` : ""}${c.chosen ? '<span class="tag chosen">chosen</span>' : ""}</td></tr>
      <tr class="text" data-for="${c.id}" hidden><td colspan="9" class="l"><pre>${esc(c.text || "(text not recorded in a sweep table)")}</pre>
      ${Object.keys(c.extra || {}).length ? `<div class="small muted">extra: ${esc(JSON.stringify(c.extra))}</div>` : ""}</td></tr>`).join("");
    return `<table id="candidates"><tr><th>id</th><th>parent</th><th class="l">answer</th><th>correct</th><th>score</th><th class="l">step scores</th><th>tokens</th><th class="l">finish</th><th class="l">status</th></tr>${rows}</table>`;
  }

  async function problemPage(rid, index, q) {
    const [s, d] = await Promise.all([api(`runs/${rid}`), api(`runs/${rid}/problems/${index}`)]);
    crumbs([["everything", "#/"], [s.label, `#/run/${rid}`], [d.problem_id, null]]);
    const c = d.cost || {};
    $app.innerHTML = `<div class="toolbar"><button id="prevp"${index <= 0 ? " disabled" : ""}>‹ previous problem</button>
      <button id="nextp"${index + 1 >= s.problems ? " disabled" : ""}>next problem ›</button><span class="muted">${index + 1} of ${s.problems}</span></div>
      <h1>${esc(d.problem_id)} ${yes(d.correct)}</h1>
      <p>answer <b id="answer">${esc(d.answer)}</b> · reference <b>${esc(d.reference)}</b> · ${esc(d.strategy)} <span class="muted small">${esc(params(d.params))}</span></p>
      <div class="cards"><div class="card"><b>${num(c.generated_tokens)}</b><span>generated tokens</span></div><div class="card"><b>${num(c.prompt_tokens)}</b><span>prompt tokens</span></div>
      <div class="card"><b>${num(c.generations)}</b><span>generations</span></div><div class="card"><b>${num((c.verifier_prompt_tokens || 0) + (c.verifier_generated_tokens || 0) + (c.verifier_tokens || 0))}</b><span>verifier tokens</span></div>
      <div class="card"><b>${num(c.wall_time_s, 2)} s</b><span>wall time</span></div>${d.stopped_by_budget ? '<div class="card"><b>yes</b><span>stopped by budget</span></div>' : ""}</div>
      <h2>Prompt</h2>${d.prompt ? `<pre id="prompt">${esc(d.prompt)}</pre>` : '<p class="muted" id="prompt">The results file does not record the prompt (only the problem id).</p>'}
      <h2>Votes by answer</h2>${votesHtml(d)}
      <div id="tree-sec"></div><div id="trace-sec"></div>
      <h2>Candidates (${d.candidates.length})</h2><p class="muted small">Click a candidate to read it.</p>${candHtml(d)}
      ${Object.keys(d.extra || {}).length ? `<h2>Strategy extras</h2><pre class="small">${esc(JSON.stringify(d.extra, null, 1))}</pre>` : ""}`;
    document.getElementById("prevp").addEventListener("click", () => go(`#/run/${rid}/p/${index - 1}`));
    document.getElementById("nextp").addEventListener("click", () => go(`#/run/${rid}/p/${index + 1}`));
    for (const tr of $app.querySelectorAll("tr.cand")) tr.addEventListener("click", () => {
      const t = $app.querySelector(`tr.text[data-for="${tr.dataset.id}"]`); t.hidden = !t.hidden; });
    if (d.tree) treeSection(d.tree);
    if (d.trace) traceSection(d.trace);
  }

  function treeSection(t) {
    const sec = document.getElementById("tree-sec");
    const rounds = t.rounds.map(r => `<tr data-round="${r.round}"><td>${r.round}</td><td class="generated">${r.generated}</td><td class="kept">${r.kept}</td><td class="finished">${r.finished}</td><td class="pruned">${r.pruned}</td><td>${r.other}</td></tr>`).join("");
    const [lo, hi] = t.score_range || [0, 1];
    sec.innerHTML = `<h2>Search tree (${t.nodes.length} nodes)</h2>${t.note ? `<p class="muted small">${esc(t.note)}</p>` : ""}
      <table id="rounds"><tr><th>${t.recorded_rounds ? "round" : "depth"}</th><th>generated</th><th>kept</th><th>finished</th><th>pruned</th><th>other</th></tr>${rounds}</table>
      <div class="legend"><span><i style="background:${TTCharts.scoreColor(lo, lo, hi)}"></i>score ${num(lo, 2)}</span><span><i style="background:${TTCharts.scoreColor((lo + hi) / 2, lo, hi)}"></i>${num((lo + hi) / 2, 2)}</span>
      <span><i style="background:${TTCharts.scoreColor(hi, lo, hi)}"></i>${num(hi, 2)}</span><span>outline: <b style="color:#1a7f37">kept</b>, <b style="color:#0b5cad">finished</b>, <span class="muted">dashed = pruned</span></span>
      <span><i style="background:#e36209"></i>chosen path</span><span class="muted">click a node to read it; ± folds a subtree</span></div>
      <div class="toolbar"><button id="tree-expand">Expand all</button><button id="tree-collapse">Collapse all</button></div>
      <div class="grid2"><div class="scroll" id="tree-host"></div><div class="panel" id="node-detail"><span class="muted">Click a node.</span></div></div>`;
    const tv = TTTree.render(document.getElementById("tree-host"), t, document.getElementById("node-detail"));
    document.getElementById("tree-expand").addEventListener("click", () => tv.expandAll());
    document.getElementById("tree-collapse").addEventListener("click", () => tv.collapseAll());
  }

  function traceSection(tr) {
    const sec = document.getElementById("trace-sec");
    let chart;
    if (tr.kind === "confidence") {
      const pts = tr.points.filter(p => p.confidence != null).map(p => ({x: p.sample, y: p.confidence, hollow: p.cut || p.rejected,
        color: p.correct ? "#1a7f37" : p.correct === false ? "#c62828" : "#555", title: `sample ${p.sample}: ${p.answer} (${p.cut ? "cut early" : p.rejected ? "rejected" : "kept"})`}));
      chart = TTCharts.lineChart({width: 640, height: 280, xlabel: "sample", ylabel: "confidence", series: [{name: "confidence", points: pts, noline: true}],
        hlines: tr.threshold != null ? [{y: tr.threshold, label: "threshold"}] : [], vlines: [{x: tr.stop_at, label: `stop (${tr.stop_reason || "end"})`, cls: "stop"}], ymin: null});
    } else {
      const names = Object.keys(tr.series);
      chart = TTCharts.lineChart({width: 640, height: 280, xlabel: "samples drawn", ylabel: "votes", ymin: 0,
        series: names.map(a => ({name: a, points: tr.series[a].map((v, i) => ({x: i + 1, y: v, title: `${a}: ${v} votes after ${i + 1}`}))})),
        vlines: [{x: tr.stop_at, label: `stop (${tr.stop_reason || "end"})`, cls: "stop"}]});
    }
    const names = tr.kind === "confidence" ? ["filled: in the vote, hollow: cut early or rejected; green = correct"] : Object.keys(tr.series);
    sec.innerHTML = `<h2>${tr.kind === "confidence" ? "Confidence" : "Votes"} over samples</h2>
      <p class="muted small">stopped after <b id="stop-at">${tr.stop_at}</b> samples${tr.max_samples ? ` of at most ${tr.max_samples}` : ""} · reason <b>${esc(tr.stop_reason || "–")}</b>${tr.stat != null ? ` · statistic ${num(tr.stat, 4)}` : ""}</p>
      <div class="legend">${names.map((n, i) => tr.kind === "confidence" ? `<span>${esc(n)}</span>` : `<span><i style="background:${TTCharts.PALETTE[i % 10]}"></i>${esc(n)}</span>`).join("")}</div>`;
    sec.appendChild(chart);
  }

  async function sweepPage(sid) {
    const s = await api(`sweeps/${sid}`);
    crumbs([["everything", "#/"], [s.label, null]]);
    const names = [...new Set(s.panels.flatMap(p => p.series.map(x => x.name)))];
    const color = n => TTCharts.PALETTE[names.indexOf(n) % 10];
    let pol = "";
    if (s.policy) {
      const B = s.policy.budgets;
      pol = `<h2>Compute-optimal policy</h2><p class="muted small">difficulty ${esc(s.policy.fit.difficulty)}, ${esc(s.policy.binning.method)} bins (bin 0 = easiest); click a cell to open its run</p>
        <table id="policy"><tr><th class="l">bin</th>${B.map(b => `<th class="l">N ≤ ${b}</th>`).join("")}</tr>` +
        s.policy.table.map(r => `<tr><td class="l">${r.bin}: ${esc(r.label)}</td>${r.cells.map(c => { const short = String(c.config || "–").split(" from ")[0];
          return `<td class="l small" title="${esc(c.config)}">${c.run ? `<a href="#/run/${c.run}">${esc(short)}</a>` : esc(short)}${c.fallback ? " *" : ""}</td>`; }).join("")}</tr>`).join("") +
        `<tr><td class="l"><b>CV accuracy</b></td>${B.map(b => { const c = s.policy.cv_curve.find(x => x.budget === b); return `<td class="l">${c ? pct(c.accuracy) : "–"}</td>`; }).join("")}</tr></table>`;
    }
    $app.innerHTML = `<h1>${esc(s.label)}</h1><p class="muted small">${esc(s.source)} · policy ${esc(s.policy_note)}${LOCAL ? "" : ` · <a href="api/sweeps/${sid}/plot.png" target="_blank">matplotlib figure</a>`}</p>
      <h2>Accuracy vs generated tokens, by difficulty bin</h2><div class="legend">${names.map(n => `<span><i style="background:${color(n)}"></i>${esc(n)}</span>`).join("")}<span><i style="background:#000"></i>compute-optimal (CV)</span><span class="muted">bands: 95% interval · click a point to open its run</span></div>
      <div class="panels" id="panels"></div>${pol}
      <h2>Configurations</h2><table id="configs"><tr><th class="l">config</th><th>budget N</th><th>problems</th><th>accuracy</th><th>1-sample acc</th><th>gen tok</th><th>generations</th></tr>
      ${s.summary.map(c => `<tr${c.run ? ` class="click" data-href="#/run/${c.run}"` : ""}><td class="l">${c.run ? `<a href="#/run/${c.run}">${esc(c.config)}</a>` : esc(c.config)}</td><td>${c.budget_n}</td><td>${c.problems}</td>
        <td>${pct(c.accuracy)}</td><td>${pct(c.sample_accuracy)}</td><td>${num(c.mean_generated_tokens)}</td><td>${num(c.mean_generations, 1)}</td></tr>`).join("")}</table>`;
    const host = document.getElementById("panels");
    for (const p of s.panels) {
      const series = p.series.map(x => ({name: x.name, color: color(x.name), points: x.points.map(pt => ({x: pt.x, y: pt.y, lo: pt.lo, hi: pt.hi,
        title: `${pt.config}\nN=${pt.budget}: ${pct(pt.y)} at ${num(pt.x)} tokens`, onclick: pt.run ? () => go(`#/run/${pt.run}`) : null}))}));
      series.push({name: "compute-optimal", color: "#000", width: 3, points: p.frontier.map(f => ({x: f.x, y: f.y, title: `compute-optimal N=${f.budget}: ${pct(f.y)}`}))});
      const div = document.createElement("div");
      div.className = "panel";
      div.appendChild(TTCharts.lineChart({title: p.title, xlog: true, ymin: -0.03, ymax: 1.03, xlabel: "mean generated tokens per problem (log)", ylabel: "accuracy", series}));
      host.appendChild(div);
    }
    clickRows();
  }

  /* --- live ------------------------------------------------------------------------------------------------ */
  async function poll() {
    if (busy) return;
    try {
      const st = await api("state");
      if (version !== null && st.version !== version) { version = st.version; await render(true); $live.textContent = "updated " + new Date().toLocaleTimeString(); }
      version = st.version;
      if (!$live.textContent) $live.textContent = "live";
    } catch (e) { $live.textContent = "server gone"; }
  }

  window.addEventListener("hashchange", () => render(false));
  render(false).then(async () => { if (version === null) version = (await api("state")).version; });
  if (!LOCAL) setInterval(poll, 1500);
  window.TTView = {render, api, sortKeys: SORT_KEYS};
})();
