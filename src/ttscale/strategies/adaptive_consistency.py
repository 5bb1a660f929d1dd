"""Adaptive-Consistency (Aggarwal et al. 2023, "Let's Sample Step by Step"): sample until the
leading answer is probably the true majority.

Rule (see :func:`ttscale.strategies.stopping.adaptive_consistency_stop`): after each wave of
samples, with v1 ≥ v2 the votes of the two leading answer classes, stop when
P(p1 > p2 | v1, v2) = 1 − I_{0.5}(v1 + 1, v2 + 1) > ``threshold`` (0.95), or at ``max_samples``
(40). The paper samples one at a time (``batch=1``); larger waves cut latency at the price of a few
extra samples. Answer = the largest class, ties to the class seen first. Works with the replay
engine (answers come as ``Completion.answer_hint``). ``Outcome.extra`` holds ``samples``,
``stop_reason`` (``confident``, ``decided``, ``max_samples`` or ``budget``), the rule's last statistic and the votes.

This module also holds :func:`sample_until`, the wave loop shared by the adaptive strategies, and
ttscale's own rule ``adaptive_margin`` (see :func:`ttscale.strategies.stopping.margin_stop`): every
answered sample votes with weight min(2, (mean generated tokens of the answered samples / its own)^w)
(``length_weight`` w = 1; 0 = plain votes); after at least ``min_samples`` (3) samples, stop when the
leader leads the runner-up by ``margin`` (2.5) weighted votes; cap ``max_samples`` (24); answer = the
heaviest class. When the answer space declares ``options`` (e.g. 4 for multiple choice; or the
``options`` parameter), it never stops before :func:`~ttscale.strategies.stopping.options_min_samples`
samples, since a few guesses among few options agree by chance. It uses only what a run has (answers
so far and their token counts), never the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.protocols import answer_options
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.stopping import (
    Decision,
    adaptive_consistency_stop,
    length_weights,
    margin_stop,
    options_min_samples,
    weighted_votes,
)
from ttscale.strategies.turn import Temperature, resolve_temperature
from ttscale.strategies.voting import Tally, decide

Rule = Callable[[list[float], int, list[int]], Decision]
"""``rule(votes, n, token_sums)``: votes per answer class (first-seen order; plain counts, or
length-weighted when :func:`sample_until` has a ``length_weight``), samples drawn, and generated
tokens per answer class (aligned with ``votes``)."""


async def sample_until(
    ctx: Context, rule: Rule, *, batch: int, max_samples: int, temperature: Temperature, top_p: float,
    max_tokens: int, length_weight: float = 0.0,
) -> Outcome:
    """Sample in waves of ``batch`` until ``rule`` says stop, ``max_samples`` are drawn or the
    budget is spent; answer by majority over equivalent answers (ties → first seen), each vote
    weighted by :func:`~ttscale.strategies.stopping.length_weights` when ``length_weight`` > 0."""
    cands: list[Candidate] = []
    reason, stat = "max_samples", 0.0
    labels: list[int | None] = []
    weights: list[float] = []
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
        weights = length_weights(labels, [c.completion_tokens for c in cands], length_weight)
        toks: dict[int, int] = {}
        for c, lab in zip(cands, labels, strict=True):
            if lab is not None:
                toks[lab] = toks.get(lab, 0) + c.completion_tokens
        d = rule(weighted_votes(labels, weights), len(cands), list(toks.values()))
        stat = d.stat
        if d.stop:
            reason = d.reason
            break
    v = decide(cands, Tally.of(labels, weights if length_weight else None))
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
    margin: float = param(2.5, "stop when the leader leads the runner-up by this many (weighted) votes")
    length_weight: float = param(1.0, "votes weigh (mean tokens / own tokens)^w: short traces count more (0 = plain votes)")
    short_bonus: int = param(0, "plain votes only: margin reduction when the leader's traces are the shorter ones")
    options: int = param(0, "answer options (e.g. 4 for multiple choice); 0 = as the answer space declares (open)")
    min_samples: int = param(3, "never stop before this many samples")
    max_samples: int = param(24, "cap on samples")
    batch: int = param(1, "samples per wave")
    temperature: Temperature = param(0.7, "sampling temperature, or turn (TURN: the entropy turning point)")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per solution")


@strategy("adaptive_margin", AdaptiveMarginParams,
          "sample until the leading answer leads by a margin (length-aware; ttscale's rule)")
async def adaptive_margin(problem: Problem, ctx: Context, p: AdaptiveMarginParams) -> Outcome:
    options = p.options or answer_options(ctx.answers)
    lo = max(p.min_samples, options_min_samples(options))

    def rule(counts: list[float], n: int, tokens: list[int]) -> Decision:
        return margin_stop(counts, n, tokens=tokens, margin=p.margin, min_samples=lo,
                           max_samples=p.max_samples, short_bonus=p.short_bonus)

    return await sample_until(ctx, rule, batch=p.batch, max_samples=p.max_samples,
                              temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                              length_weight=p.length_weight)
