"""``ttscale fit-policy``, ``ttscale plot`` and the table/HTML side of ``ttscale report``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ttscale.core.errors import ConfigError

console = Console()


def fit_policy_command(
    table: Annotated[Path, typer.Argument(help="sweep folder, table.jsonl or table.parquet")],
    out: Annotated[Path, typer.Option(help="policy JSON to write")] = Path("policy.json"),
    difficulty: Annotated[str, typer.Option(help="oracle (pass@1 from many samples) or predicted (mean verifier score)")] = "oracle",
    bins: Annotated[str, typer.Option(help="quantile (5 equal bins) or absolute (>50% / 10-50% / <10%)")] = "quantile",
    n_bins: Annotated[int, typer.Option(help="number of quantile bins")] = 5,
    probe_n: Annotated[int, typer.Option(help="samples whose mean score predicts difficulty")] = 4,
    seed: Annotated[int, typer.Option(help="seed of the fold split and of the bootstrap")] = 0,
    model: Annotated[str | None, typer.Option(help="model to fit for, when the table holds several")] = None,
    folds: Annotated[int, typer.Option(help="K of the K-fold cross-validation over problems (2 <= K <= problems)")] = 5,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples over problems for the 95% intervals (0: none)")] = 2000,
) -> None:
    """Fit the compute-optimal policy (best configuration per difficulty bin and budget, K-fold CV,
    bootstrap intervals over problems)."""
    from ttscale.lab.policy import fit_policy, save_policy
    from ttscale.lab.policy_cv import check_folds, check_resamples
    from ttscale.lab.table_io import load_table

    check_folds(folds)
    check_resamples(bootstrap)
    if difficulty not in ("oracle", "predicted"):
        raise ConfigError(f"--difficulty {difficulty!r} is not one of oracle, predicted")
    if bins not in ("quantile", "absolute"):
        raise ConfigError(f"--bins {bins!r} is not one of quantile, absolute")
    rows = load_table(table)
    policy = fit_policy(rows, difficulty=difficulty, bins=bins, n_bins=n_bins, probe_n=probe_n,  # type: ignore[arg-type]
                        seed=seed, model=model, folds=folds, bootstrap=bootstrap, source=str(table))
    save_policy(policy, out)
    _print_policy(policy, difficulty, bins)
    console.print(f"policy: {out}")


def _print_policy(policy: dict, difficulty: str, bins: str) -> None:
    """fit-policy's printout: the choice per (bin, budget), the CV accuracy with its bootstrap
    interval, and the generations best-of-N needs to match the policy with the ratio's interval."""
    from ttscale.lab.policy_cv import ratio_interval_text

    folds = policy["fit"]["folds"]
    t = Table(title=f"compute-optimal policy ({difficulty} difficulty, {bins} bins; bin 0 = easiest; {folds}-fold CV)")
    t.add_column("bin", overflow="fold")
    for B in policy["budgets"]:
        t.add_column(f"N<={B}", overflow="fold")
    by = {(e["bin"], e["budget"]): e for e in policy["table"]}
    for i, lab in enumerate(policy["binning"]["labels"]):
        t.add_row(f"{i}: {lab}", *[_short_config(by[(i, B)]) for B in policy["budgets"]])
    cv = {c["budget"]: c for c in policy["cv_curve"]}
    t.add_row("CV accuracy", *[f"{cv[B]['accuracy']:.1%}" if B in cv else "-" for B in policy["budgets"]])
    if any("boot_low" in c for c in cv.values()):
        t.add_row("95% bootstrap", *[f"[{cv[B]['boot_low']:.1%}, {cv[B]['boot_high']:.1%}]"
                                     if B in cv and cv[B].get("boot_low") is not None else "-"
                                     for B in policy["budgets"]])
    console.print(t)
    _print_bins_per_dataset(policy)
    boot = policy["fit"].get("bootstrap") or {}
    if boot.get("resamples"):
        console.print(f"95% intervals: bootstrap over problems, {boot['resamples']} resamples, seed {boot['seed']}")
    for m in policy["bon_match"]:
        ratio = "not reached" if m["ratio"] is None else f"{m['match_budget']:.1f} generations ({m['ratio']:.2f}x)"
        interval = ratio_interval_text(m)
        console.print(f"best-of-N to match the policy at N={m['budget']}: {ratio}"
                      + ("" if interval == "-" else f"; ratio 95% interval {interval}"), highlight=False)


def _print_bins_per_dataset(policy: dict) -> None:
    """With several datasets: how many of each dataset's problems fall in each bin (does every task
    span the difficulty range, or is one all easy or all hard?)."""
    counts: dict[str, list[int]] = {}
    n_bins = len(policy["binning"]["labels"])
    for dataset, _, b in policy.get("problem_bins") or []:
        counts.setdefault(str(dataset), [0] * n_bins)[int(b)] += 1
    if len(counts) < 2:
        return
    console.print("problems per bin (bin 0 = easiest) and dataset: " + "; ".join(
        f"{d} {'/'.join(map(str, c))}" for d, c in sorted(counts.items())), highlight=False)


def _short_config(entry: dict) -> str:
    """A policy cell: the selection rule and its n (the source run is the same for every cell)."""
    cfg = str(entry.get("config", ""))
    cfg = cfg.split(" from ", 1)[0] if " from " in cfg else cfg
    if entry.get("budget_n") is not None and not any(w.startswith("n=") for w in cfg.split()):
        cfg += f" [N={entry['budget_n']}]"  # n at its default is not in the label
    return cfg


def plot_command(
    table: Annotated[Path, typer.Argument(help="sweep folder, table.jsonl or table.parquet")],
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("fig.png"),
    policy: Annotated[Path | None, typer.Option(help="policy JSON (default: fit one on the table, oracle/quantile)")] = None,
    title: Annotated[str | None, typer.Option(help="figure title")] = None,
    x: Annotated[str, typer.Option("--x", help="x axis: tokens (mean generated tokens) or budget "
                                   "(generation budget N, log2: Snell et al.'s figures)")] = "tokens",
) -> None:
    """Accuracy vs compute per strategy, per difficulty bin, with the compute-optimal frontier."""
    from ttscale.core.policy import load_policy
    from ttscale.lab.plots import plot_table
    from ttscale.lab.table_io import load_table

    if x not in ("tokens", "budget"):
        raise ConfigError(f"--x {x!r} is not one of tokens, budget")
    rows = load_table(table)
    pol = load_policy(policy) if policy is not None else None
    plot_table(rows, out, pol, title=title, x=x)  # type: ignore[arg-type]
    console.print(f"figure: {out}")


def split_report_inputs(paths: Sequence[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """(tidy tables, results files, policy files) among ``ttscale report``'s arguments."""
    from ttscale.core.policy import is_policy_file
    from ttscale.lab.table_io import is_table_input

    tables, results, policies = [], [], []
    for p in paths:
        if is_policy_file(p):
            policies.append(p)
        elif is_table_input(p):
            tables.append(p)
        else:
            results.append(p)
    if len(policies) > 1:
        raise ConfigError(f"ttscale report takes at most one policy file, got {', '.join(map(str, policies))}")
    return tables, results, policies


def report_tables(tables: Sequence[Path], results: Sequence[Path], policies: Sequence[Path], *,
                  html: Path | None, as_json: bool, out: Console | None = None,
                  print_tables: bool = True) -> None:
    """The table side of ``ttscale report``: print per-config summaries of tidy tables, and with
    ``html`` write the self-contained HTML page from every input (tables and results files)."""
    from ttscale.core.policy import load_policy
    from ttscale.lab.html_report import write_html_report
    from ttscale.lab.metrics import summarize_table
    from ttscale.lab.table_io import load_any

    con = out or console
    if tables and print_tables:
        rows = load_any(tables)
        summ = summarize_table(rows)
        if as_json:
            print(json.dumps(summ, indent=2))
        else:
            t = Table(title="ttscale report: sweep table (means per problem, 95% Beta interval)")
            for col in ("dataset", "model", "config", "N", "problems", "accuracy", "interval", "1-sample acc",
                        "gen tok", "gens", "gen tok/correct"):
                t.add_column(col, overflow="fold")
            for s in summ:
                t.add_row(s["dataset"], s["model"], s["config"], str(s["budget_n"]), str(s["problems"]),
                          _pct(s["accuracy"]), f"[{_pct(s['acc_low'])}, {_pct(s['acc_high'])}]",
                          _pct(s["sample_accuracy"]), f"{s['mean_generated_tokens']:.0f}",
                          f"{s['mean_generations']:.1f}",
                          "-" if s["generated_tokens_per_correct"] is None else f"{s['generated_tokens_per_correct']:.0f}")
            con.print(t)
    if html is not None:
        inputs = [*tables, *results]
        if not inputs:
            raise ConfigError("ttscale report --html needs at least one table or results file")
        rows = load_any(inputs)
        pol = load_policy(policies[0]) if policies else None
        write_html_report(rows, html, policy=pol, sources=[str(p) for p in [*inputs, *policies]])
        con.print(f"html report: {html}")


def _pct(v: float | None) -> str:
    return f"{v:.1%}" if v is not None else "-"

