"""Pessimistic verification (Heimdall, Shi & Jin 2025): verify every solution several times, then
pick the answer whose verification is best *after* a penalty for thin support.

1. Sample ``n`` solutions (one policy request, clipped to the budget: N = how many came back).
2. Verify each ``m`` times with the policy model (``verify_prompt``, one verifier request of
   ``n=m`` replies per solution; votes parsed by
   :func:`ttscale.strategies.self_verify.parse_verdict`, an unreadable reply counting 0.5).
3. Group the solutions by equivalent final answer (``ctx.answers.group``; solutions without an
   answer take no part). For answer ``a`` with ``N_a`` solutions, ``mean_a`` is the mean of its
   ``N_a·M`` votes and

       value_a = mean_a − alpha · ln(N·M) / (N_a·M + 1)

   The answer with the largest value wins (ties: the answer seen first); the chosen candidate is
   its member with the best mean vote (ties: the earlier sample).

UNVERIFIED: this exact penalty form, ``alpha·ln(N·M)/(N_a·M + 1)``, is our reading of Heimdall's
"uncertainty penalty shrinking with support" (the method notes mark it unverified too); the default
``alpha=0.5`` is our choice, not a value from the paper. ``alpha=0`` is plain mean-vote selection.

Verifier requests go through ``ctx.generate(..., role="verifier")`` and are charged as verifier
tokens; only step 1 spends policy generations. ``verify_prompt`` uses ``{problem}`` and
``{solution}`` (default :data:`ttscale.strategies.self_verify.VERIFY_PROMPT`).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import check_template, param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.self_verify import VERIFY_PROMPT, mean_vote, verify_votes


def penalty(alpha: float, n: int, m: int, support: int) -> float:
    """``alpha · ln(n·m) / (support·m + 1)`` (the unverified form; see the module docstring)."""
    return alpha * math.log(n * m) / (support * m + 1)


@dataclass(frozen=True)
class PessimisticParams:
    n: int = param(8, "number of sampled solutions (N)")
    m: int = param(4, "verifications per solution (M)")
    alpha: float = param(0.5, "weight of the uncertainty penalty alpha*ln(N*M)/(N_a*M+1) (0 = none)")
    temperature: float = param(0.7, "sampling temperature of the solutions")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per solution")
    verify_temperature: float = param(0.7, "temperature of the verification replies")
    verify_max_tokens: int = param(256, "max tokens per verification reply")
    verify_prompt: str = param(VERIFY_PROMPT, "verification prompt with {problem} and {solution}")

    def __post_init__(self) -> None:
        for name in ("n", "m", "max_tokens", "verify_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        check_template("verify_prompt", self.verify_prompt, ("problem", "solution"))


@strategy("pessimistic_verification", PessimisticParams,
          "Heimdall: N solutions x M verifications, best mean vote minus a low-support penalty")
async def pessimistic_verification(problem: Problem, ctx: Context, p: PessimisticParams) -> Outcome:
    try:
        cands = await ctx.sample(p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens)
    except BudgetExhausted:
        return Outcome(None, None, [], {"stopped_by_budget": True})
    votes = await asyncio.gather(*(
        verify_votes(ctx, c, p.m, prompt=p.verify_prompt, temperature=p.verify_temperature,
                     max_tokens=p.verify_max_tokens) for c in cands
    ))
    cands = [c.with_(score=mean_vote(v), extra={"votes": list(v)}) for c, v in zip(cands, votes, strict=True)]
    labels = await ctx.answers.group([c.answer for c in cands])
    n_total = len(cands)
    members: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab is not None:
            members.setdefault(lab, []).append(i)
    table: dict[str, dict[str, Any]] = {}
    best_lab: int | None = None
    best_val = -math.inf
    for lab, idx in members.items():  # in order of first appearance
        allv = [v for i in idx for v in votes[i]]
        mean = mean_vote(allv)
        pen = penalty(p.alpha, n_total, p.m, len(idx))
        value = mean - pen
        table[cands[idx[0]].answer or ""] = {
            "support": len(idx), "mean": mean, "penalty": pen, "value": value,
            "candidates": [cands[i].id for i in idx],
        }
        if value > best_val:
            best_lab, best_val = lab, value
    extra: dict[str, Any] = {"answers": table, "votes": [list(v) for v in votes], "n": n_total, "m": p.m}
    if best_lab is None:
        return Outcome(None, None, cands, extra)
    win = max(members[best_lab], key=lambda i: (cands[i].score or 0.0, -i))
    return Outcome(cands[win].answer, cands[win], cands, extra)
