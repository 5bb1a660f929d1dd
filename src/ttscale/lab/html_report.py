"""One self-contained HTML page summarising a sweep (or results files): no external assets, the plot
inlined as a base64 PNG.

Sections: per-configuration summary (accuracy ± 95% interval, tokens, generations, cost per
correct answer), pass@k / maj@k from the largest candidate pools (maj@k needs the candidates'
answers), difficulty bins, the compute-optimal policy (table, CV curve, fixed-strategy curves and
how many generations best-of-N needs to match it), the FLOPs-exchange note, and the plot.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.lab.flops import budget_multiple_to_match, flops_exchange_rate
from ttscale.lab.metrics import passk_table, pool_rows, summarize_table
from ttscale.lab.policy import fit_policy
from ttscale.lab.policy_cv import ratio_interval_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.note{color:#555;font-size:.9em}img{max-width:100%;border:1px solid #eee}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    h = "".join(f'<th class="l">{_e(x)}</th>' if i < left else f"<th>{_e(x)}</th>" for i, x in enumerate(headers))
    body = []
    for r in rows:
        body.append("<tr>" + "".join(f'<td class="l">{_e(x)}</td>' if i < left else f"<td>{_e(x)}</td>"
                                     for i, x in enumerate(r)) + "</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary_section(rows: Sequence[Mapping[str, Any]]) -> str:
    summ = summarize_table(rows)
    out = [_table(
        ["dataset", "model", "config", "budget_n", "problems", "accuracy [95% CI]", "1-sample acc",
         "gen tok", "verifier tok", "generations", "gen tok / correct", "all tok / correct"],
        [[s["dataset"], s["model"], s["config"] + (f" (from {s['derived_from']})" if s["derived_from"] else ""),
          s["budget_n"], s["problems"],
          f"{_pct(s['accuracy'])} [{_pct(s['acc_low'])}, {_pct(s['acc_high'])}]",
          _pct(s["sample_accuracy"]), _num(s["mean_generated_tokens"]), _num(s["mean_verifier_tokens"]),
          _num(s["mean_generations"], 1), _num(s["generated_tokens_per_correct"]), _num(s["tokens_per_correct"])]
         for s in summ], left=3)]
    out.append('<p class="note">Accuracy = mean over problems of the per-problem accuracy (averaged over seeds); '
               "interval: Beta(s+1, n−s+1) posterior, equal-tailed 95%. Tokens and generations are means per "
               "problem; cost per correct = total tokens / correct answers.</p>")
    return "".join(out)


def _passk_section(rows: Sequence[Mapping[str, Any]]) -> str:
    pk = passk_table(rows)
    if not pk:
        return '<p class="note">No row records per-candidate correctness, so pass@k cannot be computed.</p>'
    note = ('<p class="note">From each problem\'s largest candidate pool; pass@k unbiased (1 − C(n−c,k)/C(n,k)); '
            "maj@k: majority over k of n candidates drawn without replacement (exact over all subsets when "
            "C(n,k) ≤ 5000, else 1000 seeded draws), ties to the answer seen first"
            + ("; maj@k needs the candidates' answers (column cand_answers), which this table lacks."
               if any(p["maj_at_k"] is None for p in pk) else ".") + "</p>")
    return _table(["dataset", "model", "k", "problems", "pass@k", "maj@k"],
                  [[p["dataset"], p["model"], p["k"], p["problems"], _pct(p["pass_at_k"]), _pct(p["maj_at_k"])]
                   for p in pk], left=2) + note


def _policy_section(policy: Mapping[str, Any]) -> str:
    fit = policy["fit"]
    b = policy["binning"]
    out = [f'<p>Model <b>{_e(fit.get("model"))}</b>, {fit.get("problems")} problems, difficulty '
           f'<b>{_e(fit.get("difficulty"))}</b>, {_e(b["method"])} bins (bin 0 = easiest), edges '
           f'{_e([round(e, 4) for e in b["edges"]])}; {_e(fit.get("cv"))}.</p>']
    counts: dict[int, int] = {}
    for _, _, pb in policy.get("problem_bins") or []:
        counts[int(pb)] = counts.get(int(pb), 0) + 1
    out.append("<h3>Difficulty bins</h3>")
    out.append(_table(["bin", "label", "problems"],
                      [[i, lab, counts.get(i, 0)] for i, lab in enumerate(b["labels"])], left=2))
    if policy.get("predicted_binning"):
        pb = policy["predicted_binning"]
        out.append(f'<p class="note">Predicted-difficulty edges (mean verifier score of the first '
                   f'{fit.get("probe_n")} samples), used by the compute_optimal strategy: '
                   f'{_e([round(e, 4) for e in pb["edges"]])}.</p>')
    out.append("<h3>Chosen configuration per (bin, budget)</h3>")
    budgets = policy["budgets"]
    by = {(e["bin"], e["budget"]): e for e in policy["table"]}
    out.append(_table(["bin", *[f"N ≤ {B}" for B in budgets]],
                      [[f"{i}: {lab}", *[(by[(i, B)]["config"] or "–") + (" *" if by[(i, B)].get("fallback") else "")
                                         for B in budgets]]
                       for i, lab in enumerate(b["labels"])], left=len(budgets) + 1))
    out.append('<p class="note">* bin without training problems: the overall best configuration.</p>')
    out.append(f"<h3>Accuracy vs budget: compute-optimal ({_e(fit.get('folds', 2))}-fold CV) and fixed strategies</h3>")
    fixed = policy.get("fixed_curves") or {}
    names = sorted(fixed)
    fx = {n: {c["budget"]: c for c in fixed[n]} for n in names}
    cv = {c["budget"]: c for c in policy.get("cv_curve") or []}
    rows = []
    for B in budgets:
        c = cv.get(B)
        rows.append([B, f"{_pct(c['accuracy'])} [{_pct(c['acc_low'])}, {_pct(c['acc_high'])}]" if c else "–",
                     f"[{_pct(c['boot_low'])}, {_pct(c['boot_high'])}]" if c and "boot_low" in c else "–",
                     _num(c["mean_generated_tokens"]) if c else "–",
                     *[_pct(fx[n][B]["accuracy"]) if B in fx[n] else "–" for n in names]])
    out.append(_table(["budget N", "compute-optimal (CV) [95% Beta]", "CV 95% bootstrap", "its gen tok", *names],
                      rows, left=0))
    out.append('<p class="note">Fixed strategies: the best configuration of each strategy at exactly N '
               "generations, chosen in hindsight on all problems (an optimistic baseline).</p>")
    out.append(_bon_match_section(policy))
    return "".join(out)


def _ratio_interval(m: Mapping[str, Any]) -> str:
    text = ratio_interval_text(m, times="×", at_least="≥")
    return "–" if text == "-" else text


def _bon_match_section(policy: Mapping[str, Any]) -> str:
    """The "generations best-of-N needs" table, with the ratio's bootstrap interval per budget."""
    boot = policy.get("fit", {}).get("bootstrap") or {}
    table = _table(
        ["policy budget B", "policy CV accuracy", "best-of-N variant", "generations to match", "ratio to B",
         "ratio 95% bootstrap interval"],
        [[m["budget"], _pct(m["policy_accuracy"]), m["strategy"] or "–",
          "not reached" if m["match_budget"] is None else f"{m['match_budget']:.1f}",
          "not reached" if m["ratio"] is None else f"{m['ratio']:.2f}×",
          _ratio_interval(m)]
         for m in policy.get("bon_match") or []], left=0)
    note = ('<p class="note">Smallest budget at which the better of the fixed best_of_n / weighted_best_of_n '
            "curves reaches the policy's CV accuracy, interpolated linearly in log budget between measured "
            "budgets (Snell et al. report ≈ 4×: 16 vs 64).")
    if boot.get("resamples"):
        note += (f" Intervals: bootstrap over problems ({boot['resamples']} resamples, seed {_e(boot.get('seed'))}; "
                 f"{_e(boot.get('method', ''))}); open-ended (≥) when best-of-N never reaches the policy on "
                 "more than 2.5% of the resamples.")
    return "<h3>Generations best-of-N needs to match the policy</h3>" + table + note + "</p>"


def _flops_section(rows: Sequence[Mapping[str, Any]]) -> str:
    vals = [(r, flops_exchange_rate(14, r)) for r in (0.16, 0.79, 22.0)]
    out = ['<p>Snell et al.: a model M× larger, used at R = inference tokens / pretraining tokens, costs as many '
           "FLOPs as the small model with its inference budget multiplied by <b>M + 3(M−1)/R</b>. For M = 14: "
           + ", ".join(f"R = {r:g} → {v:.2f}" for r, v in vals)
           + ". Test-time compute on the small model pays off when it matches the big model at a smaller "
             "budget multiple than that.</p>"]
    models = sorted({str(r["model"]) for r in rows})
    if len(models) > 1:
        one: dict[str, float] = {}
        curves: dict[str, list[tuple[float, float]]] = {}
        for m in models:
            mr = [r for r in rows if str(r["model"]) == m]
            sa = [float(r["sample_accuracy"]) for r in pool_rows(mr).values() if r.get("sample_accuracy") is not None]
            if sa:
                one[m] = fmean(sa)
            best: dict[int, float] = {}
            for s in summarize_table(mr):
                if s["accuracy"] is not None:
                    best[s["budget_n"]] = max(best.get(s["budget_n"], 0.0), s["accuracy"])
            curves[m] = sorted(best.items())
        pairs = [[small, big, _pct(one[big]),
                  (lambda x: "not reached" if x is None else f"{x:.1f}×")(budget_multiple_to_match(curves[small], one[big]))]
                 for small in models for big in models if small != big and big in one and curves[small]]
        if pairs:
            out.append(_table(["model (with test-time compute)", "vs model (1 sample)", "its 1-sample acc",
                               "budget multiple to match"], pairs, left=2))
    return "".join(out)


def build_html(rows: Sequence[Mapping[str, Any]], *, policy: Mapping[str, Any] | None = None,
               title: str = "ttscale report", sources: Sequence[str] = ()) -> str:
    """The report page as a string (see the module docstring)."""
    from ttscale.lab.plots import png_bytes

    if not rows:
        raise ConfigError("nothing to report: no rows")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>"]
    if sources:
        parts.append(f'<p class="note">Sources: {_e(", ".join(sources))}</p>')
    parts.append("<h2>Summary per configuration</h2>" + _summary_section(rows))
    parts.append("<h2>pass@k and maj@k</h2>" + _passk_section(rows))
    models = sorted({str(r["model"]) for r in rows})
    pol_rows = rows
    if policy is None:
        model = max(models, key=lambda m: sum(str(r["model"]) == m for r in rows))
        pol_rows = [r for r in rows if str(r["model"]) == model]
        try:
            policy = fit_policy(pol_rows, require_predicted=False, source="report")
            fitted = (f"fitted here on model {model!r} (oracle difficulty, quantile bins; pass a policy JSON "
                      "to report another)")
        except ConfigError as e:
            policy, fitted = None, f"not fitted: {e}"
    else:
        fitted = "from the policy file given"
        pm = policy.get("fit", {}).get("model")
        pol_rows = [r for r in rows if pm is None or str(r["model"]) == str(pm)]
    parts.append(f'<h2>Compute-optimal policy</h2><p class="note">Policy {_e(fitted)}.</p>')
    if policy is not None:
        parts.append(_policy_section(policy))
    parts.append("<h2>FLOPs-matched comparison</h2>" + _flops_section(rows))
    if policy is not None and pol_rows:
        img = base64.b64encode(png_bytes(pol_rows, policy)).decode("ascii")
        by_n = base64.b64encode(png_bytes(pol_rows, policy, x="budget")).decode("ascii")
        parts.append("<h2>Accuracy vs compute</h2>"
                     f'<img alt="accuracy vs mean generated tokens per strategy and difficulty bin" '
                     f'src="data:image/png;base64,{img}">'
                     "<h2>Accuracy vs generation budget N (Snell et al.)</h2>"
                     f'<img alt="accuracy vs generation budget N per strategy and difficulty bin" '
                     f'src="data:image/png;base64,{by_n}">')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html_report(rows: Sequence[Mapping[str, Any]], out: str | Path, *, policy: Mapping[str, Any] | None = None,
                      title: str = "ttscale report", sources: Sequence[str] = ()) -> Path:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(build_html(rows, policy=policy, title=title, sources=sources), encoding="utf-8")
    return p
