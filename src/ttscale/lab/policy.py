"""The compute-optimal policy (Snell et al.): per difficulty bin and budget, the best configuration.

Fitting (:func:`fit_policy`) on a tidy sweep table of one model:

- A configuration is a ``config`` label (strategy + params) with its nominal ``budget_n``; its
  accuracy on a set of problems is the mean, over the problems it has graded rows for, of the
  problem's accuracy (averaged over seeds).
- For a bin and a budget B the policy picks, among configurations with ``budget_n <= B``, the one
  with the highest accuracy on the bin's problems; ties go to the smaller ``budget_n``, then to
  fewer mean generated tokens, then to the smaller label. A bin without training problems falls
  back to the best configuration over all training problems at B (the ``overall`` choice, also
  used by ``compute_optimal`` when it cannot predict a difficulty).
- K-fold cross-validation over problems (``folds``, default 5): problems (sorted) are shuffled
  with ``random.Random(seed)`` and cut into K near-equal folds
  (:func:`ttscale.lab.policy_cv.split_folds`); for each fold the bins (edges included) and the
  choices are fitted on the other K-1 folds, and the held-out fold is binned with those edges and
  scored with those choices. The CV accuracy at B is the mean of the K folds' accuracies. Each
  problem so gets one held-out choice per budget, from which the per-bin CV curves are drawn.
  Works the same on oracle and on predicted difficulty (no labels needed at test time).
- Bootstrap intervals over problems (``bootstrap`` resamples, 0 = none) of the CV accuracy and of
  the best-of-N ratio: :func:`ttscale.lab.policy_cv.bootstrap_policy` (held-out choices kept
  fixed, no refit per resample).
- The final policy is fitted the same way on all problems. When fitted on oracle difficulty it
  also stores edges on *predicted* difficulty (the same binning method on the mean verifier score
  of the first ``probe_n`` candidates), which is what ``compute_optimal`` bins new problems with;
  bin i of one is used as bin i of the other.
- Fixed-strategy curves: per table strategy and budget, its best configuration at exactly that
  ``budget_n`` over all problems (an optimistic baseline: hyper-parameters picked in hindsight).

:func:`bon_match` (in :mod:`ttscale.lab.policy_cv`) answers "how many generations does best-of-N
need to match the policy".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.core.policy import POLICY_KIND
from ttscale.lab.difficulty import (
    BinMethod,
    Binning,
    DifficultyKind,
    difficulty_values,
    make_bins,
    matched_bins,
    predicted_difficulty,
)
from ttscale.lab.metrics import Key, beta_interval, problem_key
from ttscale.lab.policy_cv import (
    BON_STRATEGIES,
    DEFAULT_FOLDS,
    DEFAULT_RESAMPLES,
    bon_match,
    bootstrap_policy,
    check_folds,
    check_resamples,
    split_folds,
)

POLICY_VERSION = 1
STRATEGY_ALIASES = {"majority": "self_consistency"}
"""Table strategy names (selection rules of subsampled rows) that run as another registered strategy."""


@dataclass(frozen=True)
class ConfigStats:
    """One configuration's per-problem accuracy and cost."""

    config: str
    strategy: str
    params: Mapping[str, Any]
    budget_n: int
    acc: Mapping[Key, float]
    gen_tokens: Mapping[Key, float]
    generations: Mapping[Key, float]

    def accuracy(self, problems: Iterable[Key]) -> float | None:
        vals = [self.acc[p] for p in problems if p in self.acc]
        return fmean(vals) if vals else None

    def covered(self, problems: Iterable[Key]) -> list[Key]:
        return [p for p in problems if p in self.acc]

    def mean_tokens(self, problems: Iterable[Key]) -> float:
        vals = [self.gen_tokens[p] for p in problems if p in self.gen_tokens]
        return fmean(vals) if vals else 0.0

    def mean_generations(self, problems: Iterable[Key]) -> float:
        vals = [self.generations[p] for p in problems if p in self.generations]
        return fmean(vals) if vals else 0.0


def config_stats(rows: Iterable[Mapping[str, Any]]) -> dict[str, ConfigStats]:
    """Per config label: accuracy, generated tokens and generations per problem (means over seeds)."""
    acc: dict[str, dict[Key, list[float]]] = {}
    tok: dict[str, dict[Key, list[float]]] = {}
    gens: dict[str, dict[Key, list[float]]] = {}
    first: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        c = str(r["config"])
        first.setdefault(c, r)
        if int(first[c]["budget_n"]) != int(r["budget_n"]):
            raise ConfigError(f"config {c!r} has rows with budget_n {first[c]['budget_n']} and {r['budget_n']}")
        k = problem_key(r)
        tok.setdefault(c, {}).setdefault(k, []).append(float(r.get("generated_tokens") or 0))
        gens.setdefault(c, {}).setdefault(k, []).append(float(r.get("generations") or 0))
        if r.get("correct") is not None:
            acc.setdefault(c, {}).setdefault(k, []).append(float(bool(r["correct"])))
    out = {}
    for c, r in first.items():
        params = r.get("params") or "{}"
        out[c] = ConfigStats(
            config=c, strategy=str(r["strategy"]),
            params=json.loads(params) if isinstance(params, str) else dict(params),
            budget_n=int(r["budget_n"]),
            acc={k: fmean(v) for k, v in acc.get(c, {}).items()},
            gen_tokens={k: fmean(v) for k, v in tok[c].items()},
            generations={k: fmean(v) for k, v in gens[c].items()},
        )
    return out


def choose(stats: Mapping[str, ConfigStats], problems: Sequence[Key], budget: int) -> ConfigStats | None:
    """The best configuration with ``budget_n <= budget`` on ``problems`` (tie rule: module docstring)."""
    best: tuple[tuple[Any, ...], ConfigStats] | None = None
    for s in stats.values():
        if s.budget_n > budget:
            continue
        a = s.accuracy(problems)
        if a is None:
            continue
        rank = (-round(a, 12), s.budget_n, round(s.mean_tokens(problems), 9), s.config)
        if best is None or rank < best[0]:
            best = (rank, s)
    return best[1] if best else None


def _fit_choices(stats: Mapping[str, ConfigStats], bins: Mapping[Key, int], n_bins: int,
                 budgets: Sequence[int]) -> tuple[dict[tuple[int, int], ConfigStats | None], dict[int, ConfigStats | None]]:
    problems = sorted(bins)
    members = {b: [p for p in problems if bins[p] == b] for b in range(n_bins)}
    per_bin = {(b, B): choose(stats, members[b], B) for b in range(n_bins) for B in budgets}
    overall = {B: choose(stats, problems, B) for B in budgets}
    return per_bin, overall


def dispatch_for(s: ConfigStats) -> dict[str, Any]:
    """The registered strategy and parameters that run a configuration: table aliases resolved
    (``majority`` → ``self_consistency``), ``n`` set to ``budget_n`` when the strategy takes ``n``
    and the table's params lack it, parameters the strategy does not take left out (listed in
    ``dropped``)."""
    from ttscale.strategies.base import load_strategies

    name = STRATEGY_ALIASES.get(s.strategy, s.strategy)
    reg = load_strategies()
    params = dict(s.params)
    dropped: list[str] = []
    if name in reg:
        fields = {f.name for f in reg.get(name).fields()}
        if "n" in fields and "n" not in params:
            params["n"] = s.budget_n
        dropped = sorted(k for k in params if k not in fields)
        params = {k: v for k, v in params.items() if k in fields}
    return {"strategy": name, "params": params, "dropped": dropped}


def _choice_entry(s: ConfigStats | None, problems: Sequence[Key]) -> dict[str, Any]:
    if s is None:
        return {"strategy": None, "params": None, "config": None, "budget_n": None,
                "train_accuracy": None, "train_problems": len(problems)}
    d = dispatch_for(s)
    return {"strategy": d["strategy"], "params": d["params"], "config": s.config, "table_strategy": s.strategy,
            "budget_n": s.budget_n, "dropped_params": d["dropped"],
            "train_accuracy": s.accuracy(problems), "train_problems": len(s.covered(problems))}


def fixed_curves(stats: Mapping[str, ConfigStats], problems: Sequence[Key]) -> dict[str, list[dict[str, Any]]]:
    """Per table strategy: at each of its budgets, its best configuration with exactly that
    ``budget_n`` on ``problems`` (same tie rule), with accuracy, Beta interval and mean costs."""
    out: dict[str, list[dict[str, Any]]] = {}
    for strat in sorted({s.strategy for s in stats.values()}):
        mine = {c: s for c, s in stats.items() if s.strategy == strat}
        curve = []
        for B in sorted({s.budget_n for s in mine.values()}):
            s = choose({c: x for c, x in mine.items() if x.budget_n == B}, problems, B)
            if s is None:
                continue
            cov = s.covered(problems)
            acc = s.accuracy(cov)
            lo, hi = beta_interval(sum(s.acc[p] for p in cov), len(cov))
            curve.append({"budget": B, "config": s.config, "params": dict(s.params), "accuracy": acc,
                          "acc_low": lo, "acc_high": hi, "problems": len(cov),
                          "mean_generated_tokens": s.mean_tokens(cov), "mean_generations": s.mean_generations(cov)})
        if curve:
            out[strat] = curve
    return out


def curve_on(stats: Mapping[str, ConfigStats], curve: Sequence[Mapping[str, Any]],
             problems: Sequence[Key]) -> list[dict[str, Any]]:
    """A fixed-strategy curve's configurations re-evaluated on another problem set (a bin)."""
    out = []
    for pt in curve:
        s = stats[pt["config"]]
        cov = s.covered(problems)
        if not cov:
            continue
        lo, hi = beta_interval(sum(s.acc[p] for p in cov), len(cov))
        out.append({**pt, "accuracy": s.accuracy(cov), "acc_low": lo, "acc_high": hi, "problems": len(cov),
                    "mean_generated_tokens": s.mean_tokens(cov), "mean_generations": s.mean_generations(cov)})
    return out


def _held_out_curve(stats: Mapping[str, ConfigStats], choices: Mapping[Key, Mapping[int, str]],
                    problems: Sequence[Key], budgets: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for B in budgets:
        acc, tok, gen = [], [], []
        for p in problems:
            c = choices.get(p, {}).get(B)
            if c is None or p not in stats[c].acc:
                continue
            acc.append(stats[c].acc[p])
            tok.append(stats[c].gen_tokens[p])
            gen.append(stats[c].generations[p])
        if acc:
            lo, hi = beta_interval(sum(acc), len(acc))
            out.append({"budget": B, "accuracy": fmean(acc), "acc_low": lo, "acc_high": hi, "problems": len(acc),
                        "mean_generated_tokens": fmean(tok), "mean_generations": fmean(gen)})
    return out


def _rows_of_one_model(rows: Sequence[Mapping[str, Any]], model: str | None, where: str) -> Sequence[Mapping[str, Any]]:
    """The rows of ``model`` (default: the table's only model)."""
    models = sorted({str(r["model"]) for r in rows})
    if model is not None:
        rows = [r for r in rows if str(r["model"]) == model]
        if not rows:
            raise ConfigError(f"{where}: no rows for model {model!r}; models: {', '.join(models)}")
    elif len(models) > 1:
        raise ConfigError(f"{where} holds several models ({', '.join(models)}): "
                          "a policy is fitted for one; pick it with --model")
    if not rows:
        raise ConfigError(f"{where}: no rows to fit a policy on")
    return rows


def _difficulties(rows: Sequence[Mapping[str, Any]], difficulty: DifficultyKind, probe_n: int,
                  require_predicted: bool, where: str) -> tuple[dict[Key, float], dict[Key, float]]:
    """Per problem: the difficulty the policy is fitted on, and the predicted difficulty that
    ``compute_optimal`` bins new problems by (the same values when fitting on predicted)."""
    values = difficulty_values(rows, difficulty, probe_n)
    if not values:
        need = "graded candidates (cand_correct)" if difficulty == "oracle" else "verifier scores (cand_scores)"
        raise ConfigError(f"{where}: no problem has {need}, so {difficulty} difficulty is unknown")
    if difficulty != "oracle":
        return values, values
    pred_values = predicted_difficulty(rows, probe_n)
    if not pred_values and require_predicted:
        raise ConfigError(
            f"{where}: no candidate has a verifier score (cand_scores are all null), so the "
            "policy cannot hold predicted-difficulty edges, which the compute_optimal strategy needs to "
            "bin new problems. Sweep with a scoring strategy (best_of_n / weighted_best_of_n) first.")
    return values, pred_values


@dataclass(frozen=True)
class CrossValidation:
    """K-fold results: each problem's held-out configuration per budget, the fold that held it out,
    and per budget the accuracy of each fold (folds with a scored problem)."""

    choice: dict[Key, dict[int, str]]
    fold_of: dict[Key, int]
    fold_acc: dict[int, list[float]]


def _cross_validate(stats: Mapping[str, ConfigStats], values: Mapping[Key, float], budgets: Sequence[int],
                    bins: BinMethod, n_bins: int, folds: int, seed: int) -> CrossValidation:
    """K-fold CV (module docstring)."""
    parts = split_folds(values, folds, seed)
    cv = CrossValidation({}, {p: f for f, part in enumerate(parts) for p in part}, {B: [] for B in budgets})
    for f, test in enumerate(parts):
        train = [p for g, part in enumerate(parts) if g != f for p in part]
        binning, train_bins = make_bins({p: values[p] for p in train}, bins, n_bins)
        per_bin, overall = _fit_choices(stats, train_bins, binning.n_bins, budgets)
        for B in budgets:
            accs = []
            for p in test:
                s = per_bin.get((binning.bin_of(values[p]), B)) or overall[B]
                if s is None:
                    continue
                cv.choice.setdefault(p, {})[B] = s.config
                if p in s.acc:
                    accs.append(s.acc[p])
            if accs:
                cv.fold_acc[B].append(fmean(accs))
    return cv


def _predicted_binning(binning: Binning, all_bins: Mapping[Key, int], pred_values: Mapping[Key, float],
                       difficulty: DifficultyKind) -> Binning | None:
    """Edges on predicted difficulty: the policy's own when fitted on it, else the same share of
    problems per bin as the oracle bins, on the verifier's own scale."""
    if not pred_values:
        return None
    if difficulty == "predicted":
        return binning
    both = {p: v for p, v in pred_values.items() if p in all_bins}
    sizes = [sum(1 for p in both if all_bins[p] == b) for b in range(binning.n_bins)]
    return matched_bins(both or pred_values, sizes, binning.labels)


def _policy_table(binning: Binning, members: Mapping[int, Sequence[Key]], budgets: Sequence[int],
                  per_bin: Mapping[tuple[int, int], ConfigStats | None],
                  overall: Mapping[int, ConfigStats | None]) -> list[dict[str, Any]]:
    """One entry per (bin, budget); a bin without a choice falls back to the overall one."""
    table = []
    for b in range(binning.n_bins):
        for B in budgets:
            s = per_bin[(b, B)]
            entry = _choice_entry(s if s is not None else overall[B], members[b])
            table.append({"bin": b, "label": binning.labels[b], "budget": B,
                          "fallback": s is None, **entry})
    return table


def _fit_info(rows: Sequence[Mapping[str, Any]], source: str, difficulty: DifficultyKind, bins: BinMethod,
              n_bins: int, folds: int, seed: int, probe_n: int, bootstrap: int, n_problems: int,
              n_configs: int, budgets: Sequence[int]) -> dict[str, Any]:
    """The policy's ``fit`` block: what it was fitted on and by which rules."""
    return {
        "source": source, "model": rows[0]["model"], "datasets": sorted({str(r["dataset"]) for r in rows}),
        "difficulty": difficulty, "bins": bins, "n_bins": n_bins, "folds": folds, "seed": seed,
        "probe_n": probe_n, "problems": n_problems, "configs": n_configs, "budgets": list(budgets),
        "selection": ("per (bin, budget): max accuracy among configs with budget_n <= budget; ties -> "
                      "smaller budget_n, fewer generated tokens, smaller label; empty bin -> overall best"),
        "cv": (f"{folds}-fold over problems, seeded shuffle; bins and choices fitted on the other {folds - 1} "
               f"fold{'s' if folds > 2 else ''}, the "
               f"held-out fold binned by the fitted edges and scored; CV accuracy = mean of the {folds} folds"),
        "bootstrap": {"resamples": bootstrap, "seed": seed, "level": 0.95,
                      "method": ("problems resampled with replacement; held-out choices kept fixed (no refit), "
                                 "best-of-N curves re-picked per resample; percentiles 2.5/97.5 (inverted CDF); "
                                 "a resample where best-of-N never reaches the policy counts as an infinite ratio")},
        "note": ("predicted-difficulty probes (probe_n samples + verifier calls) are not in these "
                 "curves; the compute_optimal strategy spends them on top of the dispatched budget"),
    }


def _attach_intervals(cv_all: list[dict[str, Any]], matches: list[dict[str, Any]],
                      boot: Sequence[Mapping[str, Any]]) -> None:
    """Bootstrap ends onto the CV curve points (``boot_low``/``boot_high``) and the bon_match
    entries (``ratio_low``/``ratio_high``/``ratio_undefined``/``resamples``)."""
    by = {b["budget"]: b for b in boot}
    for pt in cv_all:
        if pt["budget"] in by:
            pt["boot_low"], pt["boot_high"] = by[pt["budget"]]["accuracy_low"], by[pt["budget"]]["accuracy_high"]
    for m in matches:
        b = by.get(m["budget"])
        if b is not None:
            m.update({k: b[k] for k in ("ratio_low", "ratio_high", "ratio_undefined", "resamples")})


def fit_policy(rows: Sequence[Mapping[str, Any]], *, difficulty: DifficultyKind = "oracle",
               bins: BinMethod = "quantile", n_bins: int = 5, seed: int = 0, probe_n: int = 4,
               model: str | None = None, require_predicted: bool = True, folds: int = DEFAULT_FOLDS,
               bootstrap: int = DEFAULT_RESAMPLES, source: str = "") -> dict[str, Any]:
    """Fit the compute-optimal policy (see the module docstring); returns the policy as a JSON-able
    dict. ``folds``: K of the cross-validation (2 <= K <= problems); ``bootstrap``: resamples of
    the intervals over problems (0: none). ``require_predicted``: refuse (ConfigError) when the
    table has no verifier scores to put predicted-difficulty edges in the policy
    (``compute_optimal`` needs them)."""
    check_folds(folds)
    check_resamples(bootstrap)
    where = source or "table"
    rows = _rows_of_one_model(rows, model, where)
    stats = config_stats(rows)
    values, pred_values = _difficulties(rows, difficulty, probe_n, require_predicted, where)
    budgets = sorted({s.budget_n for s in stats.values()})
    problems = sorted(values)
    cv = _cross_validate(stats, values, budgets, bins, n_bins, folds, seed)

    # --- final fit on all problems -----------------------------------------------------------------
    binning, all_bins = make_bins(values, bins, n_bins)
    per_bin, overall = _fit_choices(stats, all_bins, binning.n_bins, budgets)
    pred_binning = _predicted_binning(binning, all_bins, pred_values, difficulty)
    members = {b: [p for p in problems if all_bins[p] == b] for b in range(binning.n_bins)}
    cv_all = _held_out_curve(stats, cv.choice, problems, budgets)
    for pt in cv_all:
        pt["fold_accuracies"] = cv.fold_acc[pt["budget"]]
        pt["accuracy"] = fmean(cv.fold_acc[pt["budget"]]) if cv.fold_acc[pt["budget"]] else pt["accuracy"]
    fixed = fixed_curves(stats, problems)
    matches = bon_match(cv_all, fixed)
    boot = bootstrap_policy(stats, cv.choice, cv.fold_of, problems, budgets, resamples=bootstrap, seed=seed,
                            strategies=BON_STRATEGIES)
    _attach_intervals(cv_all, matches, boot)
    return {
        "kind": POLICY_KIND,
        "version": POLICY_VERSION,
        "fit": _fit_info(rows, source, difficulty, bins, binning.n_bins, folds, seed, probe_n, bootstrap,
                         len(problems), len(stats), budgets),
        "binning": binning.to_dict(),
        "predicted_binning": pred_binning.to_dict() if pred_binning else None,
        "budgets": budgets,
        "table": _policy_table(binning, members, budgets, per_bin, overall),
        "overall": [{"budget": B, **_choice_entry(overall[B], problems)} for B in budgets],
        "cv_curve": cv_all,
        "cv_by_bin": {str(b): _held_out_curve(stats, cv.choice, members[b], budgets) for b in range(binning.n_bins)},
        "fixed_curves": fixed,
        "bon_match": matches,
        "bootstrap": boot,
        "problem_bins": [[p[0], p[1], all_bins[p]] for p in problems],
    }


# --- files ---------------------------------------------------------------------------------------
def save_policy(policy: Mapping[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(policy, indent=1) + "\n", encoding="utf-8")
    return p
