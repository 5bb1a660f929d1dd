"""HumanEval results of ``recipes/humaneval.yaml``: the table and the accuracy-vs-tokens figure of
``docs/code.md``, from a sweep folder or its committed table (no model needed).

For every configuration: accuracy with a 95% interval (bootstrap over problems), its gain over
sampled pass@1 with a paired 95% interval (same problems, same draws), and generated and prompt
tokens per problem. Sampled pass@1 and unbiased pass@k come from the programs of the
``code_filter n=8`` run (temperature 0.8), each graded by the gold tests.

Engine: whatever the sweep ran (the committed table: embedded qwen2.5-coder-0.5b, llama.cpp on 2 CPU
cores). Wall times are not compared: with the generation cache, runs after the first reuse its
programs.

Usage: python bench/humaneval_report.py [TABLE_OR_SWEEP] [--figure docs/code.png] [--markdown]
Ends with: RESULT best=<config> best_acc=<a> sampled_pass1=<p> gain_pt=<g> gain_lo_pt=<lo> greedy=<x>
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ttscale.lab.metrics import pass_at_k  # noqa: E402
from ttscale.lab.sweep import read_table  # noqa: E402

BOOT = 2000


def load(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        path = path / "table.jsonl"
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return read_table(path)


def name_of(r: dict[str, Any]) -> tuple[str, int]:
    """(method, N) of a table row."""
    params = json.loads(r["params"]) if isinstance(r["params"], str) else dict(r["params"] or {})
    if r["derived_from"]:
        return f"{r['strategy']} (from samples)", int(r["budget_n"])
    if r["strategy"] == "code_filter" and float(params.get("temperature", 0.8)) == 0.0:
        return "greedy", 1
    return r["strategy"], int(params.get("n", r["budget_n"] or 1))


def boot_ci(values: list[float], rng: random.Random) -> tuple[float, float]:
    n = len(values)
    means = sorted(fmean(values[rng.randrange(n)] for _ in range(n)) for _ in range(BOOT))
    return means[int(0.025 * BOOT)], means[int(0.975 * BOOT) - 1]


def summarize(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float], dict[str, float]]:
    """Per-configuration figures, the per-problem sampled pass@1 and pass@k (k = 1, 2, 4, 8)."""
    by_cfg: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_cfg[name_of(r)][r["problem_id"]] = r
    samples = by_cfg.get(("code_filter", 8))
    if samples is None:
        raise SystemExit("the table has no code_filter n=8 run: it gives sampled pass@1 (see recipes/humaneval.yaml)")
    pass1 = {pid: fmean(bool(x) for x in r["cand_correct"]) for pid, r in samples.items() if r["cand_correct"]}
    passk = {f"pass@{k}": fmean(pass_at_k(len(r["cand_correct"]), sum(map(bool, r["cand_correct"])), k)
                                for r in samples.values() if r["cand_correct"]) for k in (1, 2, 4, 8)}
    rng = random.Random(0)
    out = []
    for (method, n), per in sorted(by_cfg.items(), key=lambda kv: (kv[0][0] != "greedy", kv[0][0], kv[0][1])):
        pids = [p for p in per if p in pass1]
        acc = [float(bool(per[p]["correct"])) for p in pids]
        gain = [acc[i] - pass1[p] for i, p in enumerate(pids)]
        out.append({
            "method": method, "n": n, "problems": len(pids), "complete": len(pids) == len(pass1), "accuracy": fmean(acc), "acc_ci": boot_ci(acc, rng),
            "gain": fmean(gain), "gain_ci": boot_ci(gain, rng),
            "gen_tokens": fmean(per[p]["generated_tokens"] for p in pids),
            "prompt_tokens": fmean(per[p]["prompt_tokens"] for p in pids),
        })
    return out, pass1, passk


def markdown(cfgs: list[dict[str, Any]], pass1: dict[str, float], passk: dict[str, float]) -> str:
    lines = ["| method | N | accuracy (95% CI) | vs sampled pass@1, points (paired 95% CI) | generated tok/problem "
             "| prompt tok/problem |", "|---|---|---|---|---|---|"]
    lines.append(f"| sampled pass@1 (T=0.8) | 1 | {fmean(pass1.values()):.1%} | 0 | "
                 f"{next(c['gen_tokens'] for c in cfgs if (c['method'], c['n']) == ('code_filter', 8)) / 8:.0f} | |")
    for c in cfgs:
        lo, hi = c["acc_ci"]
        glo, ghi = c["gain_ci"]
        method = c["method"] if c["complete"] else f"{c['method']} ({c['problems']} of {len(pass1)} problems)"
        lines.append(f"| {method} | {c['n']} | {c['accuracy']:.1%} ({lo:.1%} – {hi:.1%}) | "
                     f"{100 * c['gain']:+.1f} ({100 * glo:+.1f} – {100 * ghi:+.1f}) | {c['gen_tokens']:.0f} | "
                     f"{c['prompt_tokens']:.0f} |")
    lines.append("")
    lines.append("Oracle (any of the k programs correct, unbiased from the 8 draws): "
                 + ", ".join(f"{k} {v:.1%}" for k, v in passk.items()))
    return "\n".join(lines)


def figure(cfgs: list[dict[str, Any]], pass1: dict[str, float], passk: dict[str, float], path: Path,
           model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 5))
    per_sample = next(c["gen_tokens"] for c in cfgs if (c["method"], c["n"]) == ("code_filter", 8)) / 8
    ax.plot([per_sample * k for k in (1, 2, 4, 8)], [100 * v for v in passk.values()], "k:", marker=".",
            label="pass@k (oracle)")
    ax.axhline(100 * fmean(pass1.values()), color="grey", ls="--", lw=1, label="sampled pass@1")
    # a run graded on only some problems would sit on an easier subset: it stays in the table, not here
    cfgs = [c for c in cfgs if c["complete"]]
    methods = sorted({c["method"] for c in cfgs})
    for m in methods:
        pts = sorted((c["gen_tokens"], 100 * c["accuracy"], c) for c in cfgs if c["method"] == m)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[p[1] - 100 * p[2]["acc_ci"][0] for p in pts], [100 * p[2]["acc_ci"][1] - p[1] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m)
        for x, y, c in pts:
            ax.annotate(f"N={c['n']}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem (log)")
    ax.set_ylabel("HumanEval accuracy, % (gold tests)")
    ax.set_title(f"HumanEval ({len(pass1)} problems), {model}, gold tests")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", nargs="?", default=str(ROOT / "docs" / "code" / "humaneval-table.jsonl"))
    ap.add_argument("--figure", default=None, help="PNG to write (accuracy vs generated tokens)")
    args = ap.parse_args()
    rows = load(Path(args.table))
    cfgs, pass1, passk = summarize(rows)
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs; engine/model: "
          f"{rows[0]['engine']}:{rows[0]['model']}; table: {args.table} ({len(rows)} rows)")
    print(markdown(cfgs, pass1, passk))
    if args.figure:
        figure(cfgs, pass1, passk, Path(args.figure), f"{rows[0]['engine']}:{rows[0]['model']}")
        print(f"figure: {args.figure}")
    # only configurations graded on every problem compete for "best" (a partial run is not comparable)
    at8 = [c for c in cfgs if c["n"] == 8 and c["method"] != "greedy" and c["complete"]]
    best = max(at8, key=lambda c: c["accuracy"]) if at8 else max(cfgs, key=lambda c: c["accuracy"])
    greedy = next((c["accuracy"] for c in cfgs if c["method"] == "greedy"), float("nan"))
    print(f"RESULT best={best['method']}@{best['n']} best_acc={best['accuracy']:.3f} "
          f"sampled_pass1={fmean(pass1.values()):.3f} gain_pt={100 * best['gain']:.1f} "
          f"gain_lo_pt={100 * best['gain_ci'][0]:.1f} greedy={greedy:.3f}")


if __name__ == "__main__":
    main()
