"""Metrics with uncertainty over tidy sweep rows: accuracy intervals, pass@k, maj@k, cost per correct.

- Accuracy of a configuration = mean over problems of the problem's accuracy (its ``correct``
  averaged over seeds; ungraded rows are left out). Intervals are either the Beta posterior
  (uniform prior: Beta(s + 1, n − s + 1), equal-tailed, s = summed per-problem accuracy) or a
  percentile bootstrap over problems (seeded).
- pass@k is the unbiased estimator 1 − C(n−c, k)/C(n, k) in its stable product form
  1 − ∏_{i=n−c+1..n} (1 − k/i), exactly 1 when n − c < k.
- maj@k is the probability that a majority vote over k candidates drawn without replacement from the
  n recorded ones is right. Exact (all C(n, k) subsets) when there are at most ``exact_limit``
  subsets, else a seeded Monte-Carlo estimate over ``draws`` subsets. Votes: candidates with equal
  answer strings (after ``strip``) form a class; candidates without an answer do not vote; the
  largest class wins and **ties go to the class whose first member comes earliest in sample
  order** (the rule of the ``self_consistency`` strategy). A subset with no vote counts as wrong;
  the winning class is right when its earliest member in the subset is graded correct.
- Cost per correct answer = total tokens spent / number of correct answers (None when none is).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean
from typing import Any, Literal

import numpy as np

Interval = Literal["beta", "bootstrap"]
Key = tuple[str, str]
"""A problem: (dataset, problem_id)."""


def problem_key(row: Mapping[str, Any]) -> Key:
    return (str(row.get("dataset", "")), str(row["problem_id"]))


# --- accuracy with intervals ---------------------------------------------------------------------
def beta_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed interval of the Beta(s + 1, n − s + 1) posterior (uniform prior)."""
    from scipy.stats import beta

    if n <= 0:
        return (0.0, 1.0)
    a, b = successes + 1.0, n - successes + 1.0
    tail = (1.0 - level) / 2.0
    return float(beta.ppf(tail, a, b)), float(beta.ppf(1.0 - tail, a, b))


def bootstrap_interval(values: Sequence[float], level: float = 0.95, *, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (0.0, 1.0)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def accuracy_with_interval(values: Sequence[float], *, method: Interval = "beta", level: float = 0.95,
                           seed: int = 0) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of per-problem accuracies in [0, 1]; all None when there are none."""
    if not values:
        return None, None, None
    mean = fmean(values)
    if method == "beta":
        lo, hi = beta_interval(sum(values), len(values), level)
    elif method == "bootstrap":
        lo, hi = bootstrap_interval(values, level, seed=seed)
    else:
        raise ValueError(f"unknown interval method {method!r} (beta or bootstrap)")
    return mean, lo, hi


# --- pass@k and maj@k ----------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _majority_correct(subsets: np.ndarray, labels: np.ndarray, correct: np.ndarray, n_classes: int) -> np.ndarray:
    """For each row of ``subsets`` (sorted candidate indices) whether its majority vote is right."""
    n = labels.size
    lab = labels[subsets]  # (draws, k), -1 = no vote
    onehot = lab[..., None] == np.arange(n_classes)  # (draws, k, m)
    counts = onehot.sum(axis=1)  # (draws, m)
    first = np.where(onehot, subsets[..., None], n).min(axis=1)  # earliest member per class
    key = counts * (n + 1) - first  # most votes, then earliest first member
    win = key.argmax(axis=1)
    rows = np.arange(subsets.shape[0])
    has_vote = counts[rows, win] > 0
    first_win = np.minimum(first[rows, win], n - 1)
    return has_vote & correct[first_win]


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool | None], k: int, *, draws: int = 1000,
             seed: int = 0, exact_limit: int = 5000) -> float:
    """P(majority over k of the n candidates is right); see the module docstring for the rules."""
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"maj@k: {n} answers but {len(correct)} correctness values")
    if not 1 <= k <= n:
        raise ValueError(f"maj@k needs 1 <= k <= n, got n={n}, k={k}")
    ids: dict[str, int] = {}
    labels = np.array([-1 if a is None else ids.setdefault(str(a).strip(), len(ids)) for a in answers], dtype=int)
    corr = np.array([bool(c) for c in correct], dtype=bool)
    if not ids:
        return 0.0
    if math.comb(n, k) <= exact_limit:
        subsets = np.array(list(itertools.combinations(range(n), k)), dtype=int)
    else:
        rng = np.random.default_rng(seed)
        subsets = np.sort(rng.random((draws, n)).argsort(axis=1)[:, :k], axis=1)
    return float(_majority_correct(subsets, labels, corr, len(ids)).mean())


# --- cost ----------------------------------------------------------------------------------------
def cost_per_correct(costs: Iterable[float], corrects: Iterable[bool | float | None]) -> float | None:
    """Total cost divided by the number of correct answers (None when no answer is correct)."""
    total = float(sum(costs))
    right = float(sum(float(c) for c in corrects if c is not None))
    return total / right if right > 0 else None


# --- per-configuration summaries -----------------------------------------------------------------
def group_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], list[Mapping[str, Any]]]:
    """Rows grouped by (dataset, model, config), in first-appearance order."""
    out: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault((str(r["dataset"]), str(r["model"]), str(r["config"])), []).append(r)
    return out


def per_problem_accuracy(rows: Iterable[Mapping[str, Any]]) -> dict[Key, float]:
    """Each problem's accuracy averaged over its graded rows (seeds)."""
    acc: dict[Key, list[float]] = {}
    for r in rows:
        if r.get("correct") is not None:
            acc.setdefault(problem_key(r), []).append(float(bool(r["correct"])))
    return {k: fmean(v) for k, v in acc.items()}


def summarize_table(rows: Sequence[Mapping[str, Any]], *, interval: Interval = "beta", level: float = 0.95,
                    seed: int = 0) -> list[dict[str, Any]]:
    """One summary per (dataset, model, config), sorted by dataset, model, strategy, budget_n, config:
    accuracy with its interval, single-sample accuracy, mean costs and cost per correct answer
    (generated tokens and all tokens, per correct answer)."""
    out = []
    for (ds, model, config), rs in group_rows(rows).items():
        vals = list(per_problem_accuracy(rs).values())
        acc, lo, hi = accuracy_with_interval(vals, method=interval, level=level, seed=seed)
        graded = [r for r in rs if r.get("correct") is not None]
        samp = [float(r["sample_accuracy"]) for r in rs if r.get("sample_accuracy") is not None]
        gen = [int(r["generated_tokens"]) for r in graded]
        tot = [int(r["generated_tokens"]) + int(r["prompt_tokens"]) + int(r["verifier_tokens"]) for r in graded]
        corr = [bool(r["correct"]) for r in graded]
        out.append({
            "dataset": ds, "model": model, "config": config, "strategy": rs[0]["strategy"],
            "params": json.loads(rs[0]["params"]) if isinstance(rs[0]["params"], str) else dict(rs[0]["params"]),
            "budget_n": int(rs[0]["budget_n"]), "derived_from": rs[0].get("derived_from", ""),
            "problems": len(vals), "rows": len(rs), "graded": len(graded),
            "accuracy": acc, "acc_low": lo, "acc_high": hi, "interval": interval, "level": level,
            "sample_accuracy": fmean(samp) if samp else None,
            "mean_generated_tokens": fmean(r["generated_tokens"] for r in rs),
            "mean_prompt_tokens": fmean(r["prompt_tokens"] for r in rs),
            "mean_verifier_tokens": fmean(r["verifier_tokens"] for r in rs),
            "mean_generations": fmean(r["generations"] for r in rs),
            "mean_wall_time_s": fmean(r["wall_time_s"] for r in rs),
            "generated_tokens_per_correct": cost_per_correct(gen, corr),
            "tokens_per_correct": cost_per_correct(tot, corr),
        })
    out.sort(key=lambda s: (s["dataset"], s["model"], s["strategy"], s["budget_n"], s["config"]))
    return out


SAMPLE_STRATEGIES = frozenset({"self_consistency", "best_of_n", "weighted_best_of_n", "majority"})
"""Table strategies whose candidates are i.i.d. samples of the policy (runs and their subsamples)."""


def pool_rows(rows: Iterable[Mapping[str, Any]], *, column: str = "cand_correct") -> dict[Key, Mapping[str, Any]]:
    """Per problem, the row with the most known (non-null) values in ``column``, among rows of
    :data:`SAMPLE_STRATEGIES` when the problem has any (a beam's finished paths or a revision
    chain's attempts are not i.i.d. samples: their pass rate is not the policy's pass@1, and a
    step verifier's scores are on another scale than the samples' verifier); ties go to the
    smaller (config, seed) so the choice is deterministic. Problems with none are left out."""
    best: dict[Key, tuple[tuple[Any, ...], Mapping[str, Any]]] = {}
    for r in rows:
        known = sum(v is not None for v in r.get(column) or [])
        if not known:
            continue
        rank = (str(r.get("strategy")) not in SAMPLE_STRATEGIES, -known, str(r["config"]), int(r.get("seed", 0)))
        k = problem_key(r)
        if k not in best or rank < best[k][0]:
            best[k] = (rank, r)
    return {k: v[1] for k, v in best.items()}


def passk_table(rows: Sequence[Mapping[str, Any]], ks: Sequence[int] | None = None, *, draws: int = 1000,
                seed: int = 0) -> list[dict[str, Any]]:
    """pass@k and (when candidate answers are recorded) maj@k per (dataset, model), averaged over
    problems with at least k graded candidates, from each problem's largest candidate pool
    (:func:`pool_rows`). Default ks: powers of two up to the largest pool."""
    by_dm: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        by_dm.setdefault((str(r["dataset"]), str(r["model"])), []).append(r)
    out = []
    for (ds, model), rs in sorted(by_dm.items()):
        pools = pool_rows(rs)
        if not pools:
            continue
        sizes = {k: sum(c is not None for c in r["cand_correct"]) for k, r in pools.items()}
        top = max(sizes.values())
        want = list(ks) if ks is not None else [2**i for i in range(top.bit_length()) if 2**i <= top]
        for k in want:
            pk, mk = [], []
            for r in (pools[key] for key in sorted(pools)):
                known = [(a, c) for a, c in zip(r.get("cand_answers") or [None] * len(r["cand_correct"]),
                                                r["cand_correct"], strict=False) if c is not None]
                if len(known) < k:
                    continue
                pk.append(pass_at_k(len(known), sum(bool(c) for _, c in known), k))
                if r.get("cand_answers") is not None:
                    mk.append(maj_at_k([a for a, _ in known], [c for _, c in known], k, draws=draws, seed=seed))
            if not pk:
                continue
            out.append({"dataset": ds, "model": model, "k": k, "problems": len(pk), "pass_at_k": fmean(pk),
                        "maj_at_k": fmean(mk) if len(mk) == len(pk) else None})
    return out
