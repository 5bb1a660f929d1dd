"""K-fold splits, the best-of-N match of the compute-optimal policy, and bootstrap intervals over problems.

- :func:`split_folds`: the sorted problems shuffled with ``random.Random(seed)`` and cut into ``k``
  contiguous near-equal folds (the first ``n mod k`` folds take one extra problem); each fold sorted.
- :func:`bon_match`: how many generations fixed best-of-N needs to reach the policy's CV accuracy
  at budget B, and that number divided by B (the headline ratio).
- :func:`bootstrap_policy`: percentile intervals over problems. Each resample draws the problems
  with replacement (``numpy.random.default_rng(seed)``, ``resamples`` draws) and recomputes, with
  the **held-out choices kept fixed** (no refit per resample: the choices of each problem come from
  the folds that did not contain it, so refitting would only add the selection noise already in the
  point estimate; this is the cheap variant, stated so in the policy JSON):

  * the policy's CV accuracy at B: per fold, the weighted mean over the fold's resampled problems
    of its held-out choice's accuracy; then the mean over folds with at least one drawn problem
    (the point estimate's rule, with all weights 1);
  * each fixed best-of-N curve: per strategy and budget, the best configuration at exactly that
    ``budget_n`` *re-picked on the resample* (a max over a handful of columns, cheap);
  * the ratio, by :func:`bon_match`'s rule on those curves.

  Interval ends are the 2.5th and 97.5th percentiles, "inverted CDF" rule: the ``ceil(q R)``-th
  smallest of the R resample values. A resample on which best-of-N never reaches the policy has an
  undefined ratio (counted as +inf); when the 97.5th percentile falls among those, the interval is
  open-ended (``ratio_high`` None, printed as ``>= low``), and when the 2.5th does too, no bound
  is known (both None).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ttscale.core.errors import ConfigError
from ttscale.lab.flops import budget_to_reach
from ttscale.lab.metrics import Key

if TYPE_CHECKING:
    from ttscale.lab.policy import ConfigStats

BON_STRATEGIES = ("best_of_n", "weighted_best_of_n")
DEFAULT_FOLDS = 5
DEFAULT_RESAMPLES = 2000
MIN_RESAMPLES = 100
LEVEL = 0.95


def check_folds(folds: int, n_problems: int | None = None) -> None:
    """ConfigError unless ``2 <= folds`` (and ``folds <= n_problems`` when given)."""
    if folds < 2:
        raise ConfigError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if n_problems is not None and folds > n_problems:
        raise ConfigError(f"--folds {folds}: more folds than the {n_problems} problems with a difficulty "
                          "value (each fold needs at least one problem)")


def check_resamples(resamples: int) -> None:
    """ConfigError unless ``resamples`` is 0 (no intervals) or at least :data:`MIN_RESAMPLES`."""
    if resamples != 0 and resamples < MIN_RESAMPLES:
        raise ConfigError(f"--bootstrap {resamples}: give 0 (no intervals) or at least {MIN_RESAMPLES} "
                          "resamples (fewer cannot place the 2.5/97.5 percentiles)")


def split_folds(problems: Iterable[Key], folds: int = DEFAULT_FOLDS, seed: int = 0) -> list[list[Key]]:
    """``folds`` near-equal folds of the problems (module docstring); a partition, fixed by ``seed``."""
    ps = sorted(problems)
    check_folds(folds, len(ps))
    random.Random(seed).shuffle(ps)
    base, extra = divmod(len(ps), folds)
    out, start = [], 0
    for f in range(folds):
        size = base + (1 if f < extra else 0)
        out.append(sorted(ps[start:start + size]))
        start += size
    return out


def _match(curves: Mapping[str, Sequence[tuple[float, float]]], target: float,
           strategies: Sequence[str]) -> tuple[float, str] | None:
    best: tuple[float, str] | None = None
    for name in strategies:
        curve = curves.get(name)
        if not curve:
            continue
        m = budget_to_reach(curve, target)
        if m is not None and (best is None or m < best[0]):
            best = (m, name)
    return best


def bon_match(policy_curve: Sequence[Mapping[str, Any]], fixed: Mapping[str, Sequence[Mapping[str, Any]]],
              strategies: Sequence[str] = BON_STRATEGIES) -> list[dict[str, Any]]:
    """For each policy budget B: the fewest generations at which the best fixed best-of-N curve
    (``strategies``, each a list of {budget, accuracy}) reaches the policy's CV accuracy at B,
    interpolated log-linearly between budgets (:func:`ttscale.lab.flops.budget_to_reach`), and
    its ratio to B. ``match_budget``/``ratio`` are None ("not reached") when no curve gets there."""
    curves = {n: [(c["budget"], c["accuracy"]) for c in fixed[n]] for n in strategies if fixed.get(n)}
    out = []
    for pt in policy_curve:
        B, target = int(pt["budget"]), float(pt["accuracy"])
        best = _match(curves, target, strategies)
        out.append({"budget": B, "policy_accuracy": target,
                    "strategy": best[1] if best else None,
                    "match_budget": best[0] if best else None,
                    "ratio": best[0] / B if best else None})
    return out


def _percentile(sorted_vals: np.ndarray, q: float) -> float:
    """The ``ceil(q R)``-th smallest of R sorted values (inverted CDF); may be inf."""
    k = min(max(math.ceil(q * len(sorted_vals)) - 1, 0), len(sorted_vals) - 1)
    return float(sorted_vals[k])


def _weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) counts: how often each problem is drawn in each resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n)) + (np.arange(resamples) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def _weighted_mean(w: np.ndarray, vals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per resample row of ``w``: sum(w v) / sum(w mask) over the columns; NaN where nothing is drawn."""
    num, den = w @ (vals * mask), w @ mask
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _policy_resamples(stats: Mapping[str, ConfigStats], choices: Mapping[Key, Mapping[int, str]],
                      fold_of: Mapping[Key, int], problems: Sequence[Key], budgets: Sequence[int],
                      w: np.ndarray) -> dict[int, np.ndarray]:
    """Per budget: the policy's CV accuracy on each resample (mean over folds with a drawn problem)."""
    n_folds = max(fold_of.values()) + 1
    out = {}
    for B in budgets:
        vals, mask = np.zeros(len(problems)), np.zeros(len(problems))
        for j, p in enumerate(problems):
            c = choices.get(p, {}).get(B)
            if c is not None and p in stats[c].acc:
                vals[j], mask[j] = stats[c].acc[p], 1.0
        per_fold = []
        for f in range(n_folds):
            in_f = np.array([1.0 if fold_of.get(p) == f else 0.0 for p in problems])
            per_fold.append(_weighted_mean(w, vals * in_f, mask * in_f))
        with np.errstate(invalid="ignore"):
            stacked = np.vstack(per_fold)
            counted = np.sum(~np.isnan(stacked), axis=0)
            out[B] = np.where(counted > 0, np.nansum(stacked, axis=0) / np.maximum(counted, 1), np.nan)
    return out


def _bon_resamples(stats: Mapping[str, ConfigStats], problems: Sequence[Key], strategies: Sequence[str],
                   w: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
    """Per best-of-N strategy and budget: the accuracy of its best configuration on each resample."""
    out: dict[str, dict[int, np.ndarray]] = {}
    for name in strategies:
        mine = [s for s in stats.values() if s.strategy == name]
        for B in sorted({s.budget_n for s in mine}):
            cols = []
            for s in (x for x in mine if x.budget_n == B):
                vals = np.array([s.acc.get(p, 0.0) for p in problems])
                mask = np.array([1.0 if p in s.acc else 0.0 for p in problems])
                if mask.any():
                    cols.append(_weighted_mean(w, vals, mask))
            if cols:
                stacked = np.vstack(cols)
                best = np.where(np.all(np.isnan(stacked), axis=0), np.nan,
                                np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0))
                out.setdefault(name, {})[B] = best
    return out


def _interval(vals: np.ndarray) -> tuple[float | None, float | None]:
    """(2.5th, 97.5th) percentiles of the finite-or-inf values; None for an infinite end. NaN
    resamples (nothing drawn) are left out."""
    v = np.sort(vals[~np.isnan(vals)])
    if v.size == 0:
        return None, None
    tail = (1.0 - LEVEL) / 2.0
    lo, hi = _percentile(v, tail), _percentile(v, 1.0 - tail)
    return (None if math.isinf(lo) else lo), (None if math.isinf(hi) else hi)


def bootstrap_policy(stats: Mapping[str, ConfigStats], choices: Mapping[Key, Mapping[int, str]],
                     fold_of: Mapping[Key, int], problems: Sequence[Key], budgets: Sequence[int], *,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     strategies: Sequence[str] = BON_STRATEGIES) -> list[dict[str, Any]]:
    """Per budget B: bootstrap intervals of the policy's CV accuracy and of the best-of-N ratio
    (module docstring). ``choices``: each problem's held-out configuration per budget;
    ``fold_of``: the fold that held it out."""
    check_resamples(resamples)
    if resamples == 0 or not problems:
        return []
    w = _weights(len(problems), resamples, seed)
    pol = _policy_resamples(stats, choices, fold_of, problems, budgets, w)
    bon = _bon_resamples(stats, problems, strategies, w)
    out = []
    for B in budgets:
        ratios = np.full(resamples, np.nan)
        for r in range(resamples):
            target = pol[B][r]
            if math.isnan(target):
                continue
            curves = {n: [(b, round(float(a[r]), 12)) for b, a in bc.items() if not math.isnan(a[r])]
                      for n, bc in bon.items()}
            best = _match(curves, round(float(target), 12), strategies)
            ratios[r] = best[0] / B if best else math.inf
        acc_lo, acc_hi = _interval(pol[B])
        r_lo, r_hi = _interval(ratios)
        out.append({"budget": B, "resamples": resamples, "accuracy_low": acc_lo, "accuracy_high": acc_hi,
                    "ratio_low": r_lo, "ratio_high": r_hi, "ratio_undefined": int(np.sum(np.isinf(ratios)))})
    return out


def ratio_interval_text(m: Mapping[str, Any], times: str = "x", at_least: str = ">=") -> str:
    """A ``bon_match`` entry's bootstrap interval of the ratio, as printed: ``[0.40x, 0.90x]``,
    ``>= 0.40x (open-ended; ...)`` with the count of resamples where best-of-N never reaches the
    policy, or ``-`` without intervals."""
    if "ratio_low" not in m:
        return "-"
    und = m.get("ratio_undefined") or 0
    note = f"best-of-N never reaches it on {und} of {m['resamples']} resamples" if und else ""
    if m["ratio_low"] is None:
        return f"undefined ({note})" if note else "undefined"
    if m["ratio_high"] is None:
        return f"{at_least} {m['ratio_low']:.2f}{times} (open-ended; {note})"
    return f"[{m['ratio_low']:.2f}{times}, {m['ratio_high']:.2f}{times}]" + (f" ({note})" if und else "")
