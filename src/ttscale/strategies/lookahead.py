"""Lookahead search (Snell et al. 2024): beam search where each candidate step is judged by
rolling it out ``lookahead`` more steps greedily (T=0) and scoring the last step of the rollout.

The kept beam holds only its own step (the rollout is discarded, as in Snell/HF), so a round of N
candidates costs up to N·(k+1) generations. Rollout nodes appear in ``extra["tree"]`` with
``role: "lookahead"``, and each scored candidate's ``extra["lookahead_to"]`` names the rollout's
last node. Everything else is :mod:`ttscale.strategies.beam_search`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.registry import param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.beam_search import BeamSearchParams, beam_rounds


@dataclass(frozen=True)
class LookaheadParams(BeamSearchParams):
    lookahead: int = param(1, "k: greedy (T=0) steps rolled out before scoring a candidate step")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {self.lookahead}")


@strategy("lookahead", LookaheadParams, "beam search scoring each step after a k-step greedy rollout")
async def lookahead(problem: Problem, ctx: Context, p: LookaheadParams) -> Outcome:
    return await beam_rounds(ctx, p, lookahead=p.lookahead)
