"""Answer voting shared by the parallel strategies: plain, weighted, and step-score aggregation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ttscale.core.context import Context
from ttscale.core.types import Candidate

Aggregate = Literal["outcome", "last", "min", "prod", "mean"]


def aggregate_steps(step_scores: Sequence[float], how: Aggregate) -> float:
    """One score from per-step scores (Snell et al.: ``last`` works best for PRMs)."""
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    raise ValueError(f"cannot aggregate steps with {how!r}")


@dataclass(frozen=True)
class Tally:
    """Votes per answer class, in order of first appearance."""

    labels: list[int | None]
    weights: dict[int, float]
    first: dict[int, int]

    def winner(self) -> int | None:
        """The class with the largest total weight; ties go to the class seen first."""
        if not self.weights:
            return None
        return max(self.weights, key=lambda k: (self.weights[k], -self.first[k]))


async def tally(ctx: Context, candidates: Sequence[Candidate], weights: Sequence[float] | None = None) -> Tally:
    """Group candidates by equivalent answer and sum their weights (1 each by default).
    Candidates without an answer cast no vote."""
    labels = await ctx.answers.group([c.answer for c in candidates])
    w: dict[int, float] = {}
    first: dict[int, int] = {}
    for i, lab in enumerate(labels):
        if lab is None:
            continue
        w[lab] = w.get(lab, 0.0) + (1.0 if weights is None else float(weights[i]))
        first.setdefault(lab, i)
    return Tally(labels, w, first)


async def scored(ctx: Context, candidates: Sequence[Candidate], aggregate: Aggregate,
                 verifier: str | None) -> list[Candidate]:
    """Attach a score to each candidate: the verifier's outcome score, or its step scores
    aggregated by ``aggregate`` (the aggregated value is stored in ``score``)."""
    if aggregate == "outcome":
        return await ctx.score(candidates, verifier)
    with_steps = await ctx.score_steps(candidates, verifier)
    return [c.with_(score=aggregate_steps(c.step_scores or (), aggregate)) for c in with_steps]
