"""Question difficulty from a tidy sweep table, and binning it (Snell et al.; Liu et al.).

Difficulty *values* are "ease" scores in [0, 1], higher = easier:

- **oracle**: a problem's pass@1, the ``sample_accuracy`` of its row with the most graded
  candidates (:func:`ttscale.lab.metrics.pool_rows`: rows of i.i.d. samples first, so a beam
  search's or a revision chain's candidates do not stand in for the policy's samples; the mean of
  ``cand_correct`` when ``sample_accuracy`` is missing). Needs labels.
- **predicted**: the mean verifier score of the first ``m`` scored candidates of its row with the
  most scored candidates (i.i.d. sample rows first, likewise: a step verifier's scores are on
  another scale; no labels; what :mod:`ttscale.strategies.compute_optimal` measures on a new
  problem with ``probe_n = m`` samples).

**Bin 0 is always the easiest bin** (highest values); higher bins are harder.

- ``quantile`` (Snell: 5 bins): problems sorted by value, highest first, ties broken by
  (dataset, problem_id), then cut into equal-size groups (the first groups take the remainder).
  Edges are the midpoints between neighbouring groups' boundary values; a new value ``v`` goes to
  bin ``#{edges e : v < e}``, so a value equal to an edge goes to the easier bin. Tied values that
  straddle a cut keep their rank-based bins in the fit (deterministic by problem id).
- ``absolute`` (Liu et al.): easy = v > 0.5 (bin 0), medium = 0.1 ≤ v ≤ 0.5 (bin 1),
  hard = v < 0.1 (bin 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean
from typing import Any, Literal

from ttscale.core.errors import ConfigError
from ttscale.core.policy import BinMethod, Binning
from ttscale.lab.metrics import Key, pool_rows

DifficultyKind = Literal["oracle", "predicted"]

ABSOLUTE_EDGES = (0.5, 0.1)
ABSOLUTE_LABELS = ("easy (>50%)", "medium (10-50%)", "hard (<10%)")


def oracle_difficulty(rows: Iterable[Mapping[str, Any]]) -> dict[Key, float]:
    """pass@1 per problem from its largest graded candidate pool."""
    out = {}
    for k, r in pool_rows(rows, column="cand_correct").items():
        sa = r.get("sample_accuracy")
        if sa is None:
            known = [bool(c) for c in r["cand_correct"] if c is not None]
            sa = fmean(known)
        out[k] = float(sa)
    return out


def predicted_difficulty(rows: Iterable[Mapping[str, Any]], m: int = 4) -> dict[Key, float]:
    """Mean of the first ``m`` known verifier scores per problem, from its largest scored pool."""
    if m < 1:
        raise ConfigError(f"predicted difficulty needs m >= 1 scored samples, got {m}")
    out = {}
    for k, r in pool_rows(rows, column="cand_scores").items():
        scores = [float(s) for s in r["cand_scores"] if s is not None][:m]
        out[k] = fmean(scores)
    return out


def difficulty_values(rows: Iterable[Mapping[str, Any]], kind: DifficultyKind, m: int = 4) -> dict[Key, float]:
    if kind == "oracle":
        return oracle_difficulty(rows)
    if kind == "predicted":
        return predicted_difficulty(rows, m)
    raise ConfigError(f"difficulty {kind!r} is not one of oracle, predicted")


def quantile_bins(values: Mapping[Key, float], n_bins: int = 5) -> tuple[Binning, dict[Key, int]]:
    """Equal-size rank bins, easiest first (see the module docstring)."""
    if n_bins < 1:
        raise ConfigError(f"quantile binning needs n_bins >= 1, got {n_bins}")
    if len(values) < n_bins:
        raise ConfigError(f"quantile binning into {n_bins} bins needs at least {n_bins} problems "
                          f"with a difficulty value, got {len(values)}")
    order = sorted(values, key=lambda k: (-values[k], k))
    n = len(order)
    base, extra = divmod(n, n_bins)
    sizes = [base + (1 if b < extra else 0) for b in range(n_bins)]
    assign: dict[Key, int] = {}
    edges = []
    start = 0
    for b, size in enumerate(sizes):
        for k in order[start:start + size]:
            assign[k] = b
        start += size
        if b < n_bins - 1:
            edges.append((values[order[start - 1]] + values[order[start]]) / 2.0)
    labels = tuple(
        f"Q{b + 1}" + (" (easiest)" if b == 0 else " (hardest)" if b == n_bins - 1 and n_bins > 1 else "")
        for b in range(n_bins)
    )
    return Binning("quantile", tuple(edges), labels), assign


def absolute_bins(values: Mapping[Key, float]) -> tuple[Binning, dict[Key, int]]:
    """Liu et al.'s three bins on absolute thresholds."""
    binning = Binning("absolute", ABSOLUTE_EDGES, ABSOLUTE_LABELS)
    return binning, {k: binning.bin_of(v) for k, v in values.items()}


def matched_bins(values: Mapping[Key, float], sizes: Sequence[int], labels: Sequence[str]) -> Binning:
    """Rank edges on ``values`` (higher = easier) that put ``sizes[b]`` problems in bin ``b``,
    easiest first: predicted-difficulty edges for a policy whose bins are on oracle pass@1. A
    verifier's scores are on their own scale (DeepConf confidence is ~5, not a pass rate), so
    the oracle's thresholds cannot be reused; the same proportions of problems can. Ties at a cut
    go to the easier bin (the rule of :meth:`Binning.bin_of` for quantile edges)."""
    order = sorted(values, key=lambda k: (-values[k], k))
    if not order:
        raise ConfigError("predicted-difficulty edges need at least one problem with a verifier score")
    hi, lo = values[order[0]], values[order[-1]]
    edges = []
    start = 0
    for size in list(sizes)[:-1]:
        start += size
        if start <= 0:
            edges.append(hi + 1.0)  # empty easiest bins: nothing is above
        elif start >= len(order):
            edges.append(lo - 1.0)  # empty hardest bins: nothing is below
        else:
            edges.append((values[order[start - 1]] + values[order[start]]) / 2.0)
    edges = [max(edges[i:]) for i in range(len(edges))]  # keep them non-increasing
    return Binning("quantile", tuple(edges), tuple(labels))


def make_bins(values: Mapping[Key, float], method: BinMethod, n_bins: int = 5) -> tuple[Binning, dict[Key, int]]:
    if method == "quantile":
        return quantile_bins(values, n_bins)
    if method == "absolute":
        return absolute_bins(values)
    raise ConfigError(f"bins {method!r} is not one of quantile, absolute")
