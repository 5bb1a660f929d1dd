"""Best-of-N (Snell et al. 2024; HF search-and-learn): sample N solutions, score each with a
verifier, answer with the highest-scoring one (ties: the earliest sample).

With ``aggregate=outcome`` the verifier scores whole solutions; with ``last``/``min``/``prod``/``mean``
it scores every step (a PRM) and the step scores are aggregated.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.turn import Temperature, resolve_temperature
from ttscale.strategies.voting import Aggregate, scored


@dataclass(frozen=True)
class BestOfNParams:
    n: int = param(8, "number of sampled solutions")
    temperature: Temperature = param(0.7, "sampling temperature, or turn (TURN: the entropy turning point)")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per solution")
    verifier: str = param("llm_judge", "verifier that scores the solutions")
    aggregate: Aggregate = param("outcome", "outcome score, or step scores aggregated by last/min/prod/mean")
    logprobs: int = param(0, "top-k logprobs to request (needed by the confidence verifier)")


async def sample_and_score(ctx: Context, p: BestOfNParams) -> list[Candidate]:
    """N samples (clipped to the budget; none if it is spent), each with a verifier score."""
    try:
        t = await resolve_temperature(ctx, p.temperature)
        cands = await ctx.sample(p.n, temperature=t, top_p=p.top_p, max_tokens=p.max_tokens,
                                 logprobs=p.logprobs or None)
    except BudgetExhausted:
        return []
    return await scored(ctx, cands, p.aggregate, p.verifier)


@strategy("best_of_n", BestOfNParams, "the highest-scoring of N sampled solutions")
async def best_of_n(problem: Problem, ctx: Context, p: BestOfNParams) -> Outcome:
    cands = await sample_and_score(ctx, p)
    if not cands:
        return Outcome(None, None, [])
    best = max(range(len(cands)), key=lambda i: (cands[i].score or 0.0, -i))
    return Outcome(cands[best].answer, cands[best], cands)
