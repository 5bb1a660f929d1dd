"""FLOPs-matched comparison of a small model with test-time compute against a bigger model.

Snell et al.: with pretraining cost ≈ 6·N·D_pretrain and inference ≈ 2·N·D_inference, a model
``M`` times larger, used at ratio ``R = D_inference / D_pretrain``, costs as much as the small model
with its inference budget multiplied by ``M + 3(M − 1)/R`` (:func:`flops_exchange_rate`). For M = 14:
R = 0.16 → 257.75, R = 0.79 → 63.37, R = 22 → 15.77.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def flops_exchange_rate(m: float, r: float) -> float:
    """Inference-budget multiple of the small model that matches an ``m``× larger model's FLOPs."""
    if m < 1:
        raise ValueError(f"the model size ratio M must be >= 1, got {m}")
    if r <= 0:
        raise ValueError(f"the inference/pretraining token ratio R must be > 0, got {r}")
    return m + 3.0 * (m - 1.0) / r


def budget_to_reach(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """The smallest budget at which an accuracy-vs-budget curve reaches ``target``.

    ``curve`` is (budget, accuracy) points; they are sorted by budget. The first point at or above
    ``target`` is found; if it is the first point, its budget is returned, otherwise the budget is
    interpolated log-linearly (linear in log budget) between it and the point before. None when
    the curve never reaches ``target``.
    """
    pts = sorted((float(b), float(a)) for b, a in curve)
    for i, (b, a) in enumerate(pts):
        if b <= 0:
            raise ValueError(f"budgets must be > 0 for log interpolation, got {b}")
        if a >= target:
            if i == 0:
                return b
            b0, a0 = pts[i - 1]
            frac = (target - a0) / (a - a0)
            return math.exp(math.log(b0) + frac * (math.log(b) - math.log(b0)))
    return None


def budget_multiple_to_match(small_curve: Sequence[tuple[float, float]], big_one_sample_accuracy: float) -> float | None:
    """At which budget multiple (generations per problem, relative to one) the small model's
    accuracy-vs-budget curve matches the big model's single-sample accuracy; None if never.
    Compare the result with :func:`flops_exchange_rate`: below it, test-time compute on the small
    model is the cheaper way to that accuracy."""
    return budget_to_reach(small_curve, big_one_sample_accuracy)
