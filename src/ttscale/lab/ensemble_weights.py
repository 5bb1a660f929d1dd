"""Offline weight fitting for Best-of-∞'s weighted multi-model ensemble (Komiyama et al.): mixture
weights over several models that maximise large-N (N → ∞) majority-vote accuracy on recorded
samples, found by a mixed-integer program. A lab tool, not a strategy: the weights are then used by
:class:`ttscale.engines.ensemble.EnsembleEngine` under the ``best_of_infinity`` strategy.

As N → ∞, majority voting over samples drawn from model k with probability w_k answers
argmax_a Σ_k w_k f_k(a | problem), where f_k is model k's answer frequency. Problem i is solved
when the gold answer beats every other answer a by at least ``eps``. The MILP (scipy ``milp``,
HiGHS) is

    maximise Σ_i z_i
    s.t.     Σ_k w_k (f_k(gold_i) − f_k(a)) ≥ eps − (1 + eps)(1 − z_i)   for every i, a ≠ gold_i
             Σ_k w_k = 1,  w ≥ 0,  z_i ∈ {0, 1}

(``1 + eps`` is a big-M: the left side is ≥ −1). Among optimal weight vectors HiGHS returns one;
a tiny penalty ``tie_break`` on the largest weight prefers spread-out weights. Problems whose gold
answer no model ever gives are unsolvable and left out of the program (counted as wrong).

Fit on one split (e.g. odd problem ids) with :func:`fit_ensemble_weights` and measure on another
with :func:`ensemble_accuracy`; sample from the mixture with
:class:`ttscale.engines.ensemble.EnsembleEngine`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

SampleTable = Mapping[str, tuple[Mapping[str, float], str]]
"""problem id → (answer → count or frequency, gold answer), for one model."""


def _strip(a: str) -> str:
    return "".join(str(a).split())


def read_sample_table(path: str | Path, normalize: Callable[[str], str] = _strip) -> dict[str, tuple[dict[str, float], str]]:
    """A :data:`SampleTable` from a recorded-samples file (``all_answers`` or ``answer_counts``)."""
    out: dict[str, tuple[dict[str, float], str]] = {}
    for no, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        pid = str(row.get("problem_num", row.get("id", no)))
        counts: dict[str, float] = {}
        if "all_answers" in row:
            pairs = [(a, 1) for a, _ in row["all_answers"]]
        else:
            pairs = list(row["answer_counts"].items())
        for a, c in pairs:
            if a is None or not str(a).strip():
                continue
            key = normalize(str(a))
            counts[key] = counts.get(key, 0.0) + float(c)
        out[pid] = (counts, normalize(str(row["gold_answer"])))
    return out


def _tables(tables: Sequence[SampleTable | str | Path], normalize: Callable[[str], str]) -> list[SampleTable]:
    return [read_sample_table(t, normalize) if isinstance(t, str | Path) else t for t in tables]


def _freqs(counts: Mapping[str, float]) -> dict[str, float]:
    tot = float(sum(counts.values()))
    return {a: c / tot for a, c in counts.items()} if tot > 0 else {}


@dataclass(frozen=True)
class EnsembleFit:
    """Weights per model, large-N accuracy on the fitting split, and the problems used."""

    weights: tuple[float, ...]
    accuracy: float
    solved: int
    problems: int
    status: str


def _common_ids(tabs: Sequence[SampleTable], ids: Collection[str] | None) -> list[str]:
    common = set(tabs[0])
    for t in tabs[1:]:
        common &= set(t)
    if ids is not None:
        common &= {str(i) for i in ids}
    return sorted(common, key=lambda s: (len(s), s))


def ensemble_accuracy(tables: Sequence[SampleTable | str | Path], weights: Sequence[float], *,
                      ids: Collection[str] | None = None, normalize: Callable[[str], str] = _strip) -> float:
    """Large-N accuracy of the mixture ``weights``: the fraction of (common, selected) problems whose
    weighted answer frequency is highest for the gold answer (ties count as wrong)."""
    tabs = _tables(tables, normalize)
    pids = _common_ids(tabs, ids)
    if not pids:
        return 0.0
    ok = 0
    for pid in pids:
        mix: dict[str, float] = {}
        for w, t in zip(weights, tabs, strict=True):
            for a, f in _freqs(t[pid][0]).items():
                mix[a] = mix.get(a, 0.0) + w * f
        gold = tabs[0][pid][1]
        g = mix.get(gold, 0.0)
        ok += g > 0 and all(g > v + 1e-12 for a, v in mix.items() if a != gold)
    return ok / len(pids)


def fit_ensemble_weights(
    tables: Sequence[SampleTable | str | Path], *, ids: Collection[str] | None = None, eps: float = 1e-3,
    tie_break: float = 1e-4, time_limit: float = 60.0, normalize: Callable[[str], str] = _strip,
) -> EnsembleFit:
    """Mixture weights over the models of ``tables`` (files or :data:`SampleTable`) maximising
    large-N majority accuracy on the problems ``ids`` (default: all common problems), by the MILP in
    the module docstring, solved with scipy's HiGHS ``milp``."""
    tabs = _tables(tables, normalize)
    k = len(tabs)
    if k == 0:
        raise ValueError("fit_ensemble_weights needs at least one model")
    pids = _common_ids(tabs, ids)
    if not pids:
        raise ValueError("no problem is common to every model (and selected)")
    rows: list[tuple[int, np.ndarray]] = []  # (problem index, coefficient row over w)
    used: list[str] = []
    for pid in pids:
        fr = [_freqs(t[pid][0]) for t in tabs]
        gold = tabs[0][pid][1]
        if all(f.get(gold, 0.0) == 0.0 for f in fr):
            continue  # no model ever gives the gold answer
        zi = len(used)
        used.append(pid)
        others = sorted({a for f in fr for a in f} - {gold})
        for a in others:
            rows.append((zi, np.array([f.get(gold, 0.0) - f.get(a, 0.0) for f in fr])))
        if not others:  # gold is the only answer: need only that some model with it has weight
            rows.append((zi, np.array([f.get(gold, 0.0) for f in fr])))
    m = len(used)
    # variables: w_0..w_{k-1}, z_0..z_{m-1}, t (max weight, for the tie-break)
    nv = k + m + 1
    c = np.zeros(nv)
    c[k : k + m] = -1.0
    c[-1] = tie_break
    cons = []
    if rows:
        a = np.zeros((len(rows), nv))
        for r, (zi, coef) in enumerate(rows):
            a[r, :k] = coef
            a[r, k + zi] = -(1.0 + eps)
        cons.append(LinearConstraint(a, lb=eps - (1.0 + eps), ub=np.inf))
    s = np.zeros((1, nv))
    s[0, :k] = 1.0
    cons.append(LinearConstraint(s, lb=1.0, ub=1.0))
    tmax = np.zeros((k, nv))
    for j in range(k):
        tmax[j, j] = 1.0
        tmax[j, -1] = -1.0
    cons.append(LinearConstraint(tmax, lb=-np.inf, ub=0.0))
    integrality = np.zeros(nv)
    integrality[k : k + m] = 1
    lb = np.zeros(nv)
    ub = np.ones(nv)
    res = milp(c, constraints=cons, integrality=integrality, bounds=Bounds(lb, ub),
               options={"time_limit": time_limit, "disp": False})
    if res.x is None:
        raise RuntimeError(f"ensemble MILP failed: {res.message}")
    w = np.clip(res.x[:k], 0.0, None)
    w = w / w.sum()
    solved = round(float(np.sum(res.x[k : k + m]))) if m else 0
    return EnsembleFit(tuple(float(x) for x in w), solved / len(pids), solved, len(pids),
                       "optimal" if res.status == 0 else str(res.message))
