"""Weighted best-of-N (Snell et al. 2024; HF): sum verifier scores per equivalent answer and
answer with the heaviest class; the chosen candidate is that class's best-scored member.

Scores come from the verifier's outcome score or from its step scores aggregated by
``last``/``min``/``prod``/``mean`` (``aggregate``). Ties between classes go to the one seen first.
"""

from __future__ import annotations

from ttscale.core.context import Context
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.best_of_n import BestOfNParams, sample_and_score
from ttscale.strategies.voting import highest_score, vote


@strategy("weighted_best_of_n", BestOfNParams, "verifier scores summed per answer; heaviest answer wins")
async def weighted_best_of_n(problem: Problem, ctx: Context, p: BestOfNParams) -> Outcome:
    cands = await sample_and_score(ctx, p)
    v = await vote(ctx, cands, [c.score or 0.0 for c in cands], pick=highest_score)
    return Outcome(v.answer, v.chosen, cands, {"weights": v.votes})
