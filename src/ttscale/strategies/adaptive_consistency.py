"""Adaptive-Consistency (Aggarwal et al. 2023, "Let's Sample Step by Step"): sample until the
leading answer is probably the true majority.

Rule (see :func:`ttscale.strategies.stopping.adaptive_consistency_stop`): after each wave of
samples, with v1 ≥ v2 the votes of the two leading answer classes, stop when
P(p1 > p2 | v1, v2) = 1 − I_{0.5}(v1 + 1, v2 + 1) > ``threshold`` (0.95), or at ``max_samples``
(40). The paper samples one at a time (``batch=1``); larger waves cut latency at the price of a few
extra samples. Answer = the largest class, ties to the class seen first. Works with the replay
engine (answers come as ``Completion.answer_hint``). ``Outcome.extra`` holds ``samples``,
``stop_reason`` (``confident``, ``max_samples`` or ``budget``), the rule's last statistic and the votes.

This module also holds :func:`sample_until`, the wave loop shared by the adaptive strategies, and
ttscale's own rule ``adaptive_margin`` (see :func:`ttscale.strategies.stopping.margin_stop`): after
at least ``min_samples`` (3) samples, stop when the leader leads the runner-up by ``margin`` (3)
votes, or by ``margin − short_bonus`` (2) when the leader's mean generated tokens are at most the
mean of the other answered samples; cap ``max_samples`` (32). It uses only what a run has (answers
so far and their token counts), never the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.stopping import Decision, adaptive_consistency_stop, margin_stop
from ttscale.strategies.turn import Temperature, resolve_temperature
from ttscale.strategies.voting import Tally, decide

Rule = Callable[[list[int], int, list[int]], Decision]
"""``rule(counts, n, token_sums)``: votes per answer class (first-seen order), samples drawn, and
generated tokens per answer class (aligned with ``counts``)."""


async def sample_until(
    ctx: Context, rule: Rule, *, batch: int, max_samples: int, temperature: Temperature, top_p: float,
    max_tokens: int,
) -> Outcome:
    """Sample in waves of ``batch`` until ``rule`` says stop, ``max_samples`` are drawn or the
    budget is spent; answer by majority over equivalent answers (ties → first seen)."""
    cands: list[Candidate] = []
    reason, stat = "max_samples", 0.0
    labels: list[int | None] = []
    try:
        temperature = await resolve_temperature(ctx, temperature)
    except BudgetExhausted:
        return Outcome(None, None, [], {"samples": 0, "stop_reason": "budget", "stat": 0.0, "votes": {}})
    while len(cands) < max_samples:
        k = min(max(1, batch), max_samples - len(cands))
        try:
            new = await ctx.sample(k, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        except BudgetExhausted:
            reason = "budget"
            break
        if not new:
            reason = "budget"
            break
        cands.extend(new)
        labels = await ctx.answers.group([c.answer for c in cands])
        counts: dict[int, int] = {}
        toks: dict[int, int] = {}
        for c, lab in zip(cands, labels, strict=True):
            if lab is not None:
                counts[lab] = counts.get(lab, 0) + 1
                toks[lab] = toks.get(lab, 0) + c.completion_tokens
        d = rule(list(counts.values()), len(cands), list(toks.values()))
        stat = d.stat
        if d.stop:
            reason = d.reason
            break
    v = decide(cands, Tally.of(labels))
    extra = {"samples": len(cands), "stop_reason": reason, "stat": stat, "votes": v.votes}
    return Outcome(v.answer, v.chosen, cands, extra)


@dataclass(frozen=True)
class AdaptiveConsistencyParams:
    threshold: float = param(0.95, "stop when P(leader is the true majority) exceeds this")
    max_samples: int = param(40, "cap on samples")
    min_samples: int = param(1, "never stop before this many samples")
    batch: int = param(1, "samples per wave (1 = one at a time, as in the paper)")
    temperature: Temperature = param(0.7, "sampling temperature, or turn (TURN: the entropy turning point)")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per solution")


@strategy("adaptive_consistency", AdaptiveConsistencyParams,
          "sample until a Beta test says the leading answer wins (Aggarwal et al. 2023)")
async def adaptive_consistency(problem: Problem, ctx: Context, p: AdaptiveConsistencyParams) -> Outcome:
    def rule(counts: list[int], n: int, _tokens: list[int]) -> Decision:
        return adaptive_consistency_stop(counts, n, threshold=p.threshold, max_samples=p.max_samples,
                                         min_samples=p.min_samples)

    return await sample_until(ctx, rule, batch=p.batch, max_samples=p.max_samples,
                              temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens)


@dataclass(frozen=True)
class AdaptiveMarginParams:
    margin: int = param(3, "stop when the leader leads the runner-up by this many votes")
    short_bonus: int = param(1, "margin reduction when the leader's traces are the shorter ones (0 = off)")
    min_samples: int = param(3, "never stop before this many samples")
    max_samples: int = param(32, "cap on samples")
    batch: int = param(1, "samples per wave")
    temperature: Temperature = param(0.7, "sampling temperature, or turn (TURN: the entropy turning point)")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per solution")


@strategy("adaptive_margin", AdaptiveMarginParams,
          "sample until the leading answer leads by a margin (length-aware; ttscale's rule)")
async def adaptive_margin(problem: Problem, ctx: Context, p: AdaptiveMarginParams) -> Outcome:
    def rule(counts: list[int], n: int, tokens: list[int]) -> Decision:
        return margin_stop(counts, n, tokens=tokens, margin=p.margin, min_samples=p.min_samples,
                           max_samples=p.max_samples, short_bonus=p.short_bonus)

    return await sample_until(ctx, rule, batch=p.batch, max_samples=p.max_samples,
                              temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens)
