"""Self-consistency (Wang et al. 2023): sample N chains, answer by majority over canonical answers.

Answers are grouped by equivalence (``ctx.answers.group``: normalised strings, then symbolic
equality); the largest group wins, ties going to the answer that appeared first. Candidates
without an extractable answer do not vote.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.turn import Temperature, resolve_temperature
from ttscale.strategies.voting import vote


@dataclass(frozen=True)
class SelfConsistencyParams:
    n: int = param(8, "number of sampled solutions")
    temperature: Temperature = param(0.7, "sampling temperature, or turn (TURN: the entropy turning point)")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per solution")


@strategy("self_consistency", SelfConsistencyParams, "majority vote over N sampled solutions")
async def self_consistency(problem: Problem, ctx: Context, p: SelfConsistencyParams) -> Outcome:
    try:
        t = await resolve_temperature(ctx, p.temperature)
        cands = await ctx.sample(p.n, temperature=t, top_p=p.top_p, max_tokens=p.max_tokens)
    except BudgetExhausted:
        return Outcome(None, None, [])
    v = await vote(ctx, cands)
    return Outcome(v.answer, v.chosen, cands, {"votes": v.votes})
