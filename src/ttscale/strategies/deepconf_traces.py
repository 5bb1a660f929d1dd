"""DeepConf's trace bookkeeping: scores under the configured measure, the offline top-η% filter,
the online warm-up threshold, the online trace pool and its waves of monitored traces, and the
confidence-weighted vote (see :mod:`ttscale.strategies.deepconf` for the rules)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.types import Candidate, GenerationRequest
from ttscale.strategies.deepconf_confidence import WindowMonitor, confidence
from ttscale.strategies.voting import vote

if TYPE_CHECKING:
    from ttscale.strategies.deepconf import DeepConfParams


def trace_score(c: Candidate, p: DeepConfParams) -> float | None:
    """The trace's confidence under ``p.measure`` (None without logprobs)."""
    return confidence(c.logprobs, p.measure, window=p.window, tail=p.tail, top_k=p.top_k)


def lowest_group(c: Candidate, p: DeepConfParams) -> float | None:
    """The trace's lowest group confidence (None without logprobs)."""
    return confidence(c.logprobs, "lowest_window", window=p.window, top_k=p.top_k)


async def sample_traces(ctx: Context, p: DeepConfParams, n: int) -> list[Candidate]:
    """``n`` complete traces in one request, with ``top_k`` logprobs per token."""
    return await ctx.sample(n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                            logprobs=p.top_k)


def keep_most_confident(scored: Sequence[Candidate], eta: float) -> list[Candidate]:
    """The top ``eta``% of the traces by ``score`` (at least one; ties by sample order), returned in
    sample order. Traces without a score are never kept."""
    ranked = sorted((c for c in scored if c.score is not None), key=lambda c: -c.score)  # stable
    keep_n = max(1, math.ceil(len(ranked) * eta / 100.0)) if ranked else 0
    kept_ids = {c.id for c in ranked[:keep_n]}
    return [c for c in scored if c.id in kept_ids]


def warmup_threshold(lowest: Sequence[float | None], eta: float) -> float:
    """s = the (100 − η)-th percentile (numpy linear interpolation) of the warm-up traces' lowest
    group confidences; −inf when none has one."""
    known = [x for x in lowest if x is not None]
    return float(np.percentile(known, 100.0 - eta)) if known else -math.inf


def vote_weights(traces: Sequence[Candidate]) -> list[float]:
    """Each trace's vote weight: its confidence, 1 when it has none."""
    return [float(c.score if c.score is not None else 1.0) for c in traces]


async def weighted_vote(ctx: Context, voters: list[Candidate],
                        weights: list[float]) -> tuple[Candidate | None, dict[str, float], float]:
    """Weighted vote: (a member of the winning class, votes per answer, the winner's share)."""
    v = await vote(ctx, voters, weights)
    return v.chosen, v.votes, v.share


@dataclass
class OnlineTraces:
    """The online traces in sample order. Each candidate's ``extra`` holds ``lowest_window``,
    ``warmup``, ``stopped_early`` and ``rejected`` (not in the pool: cut early, or a full window
    below the threshold); its ``score`` is its confidence (None when cut)."""

    p: DeepConfParams
    threshold: float
    traces: list[Candidate] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.traces)

    def add_warmup(self, warm: Sequence[Candidate], lowest: Sequence[float | None]) -> None:
        for c, low in zip(warm, lowest, strict=True):
            self.traces.append(c.with_(score=trace_score(c, self.p), extra={
                "lowest_window": low, "warmup": True, "stopped_early": False, "rejected": False}))

    def add_later(self, c: Candidate, cut: bool) -> None:
        """A post-warm-up trace: rejected when cut, or (uncut, with early_stop off) when a full
        window fell below the threshold all the same."""
        low = lowest_group(c, self.p)
        full_low = low is not None and len(c.logprobs or ()) >= self.p.window and low < self.threshold
        self.traces.append(c.with_(score=None if cut else trace_score(c, self.p), extra={
            "lowest_window": low, "warmup": False, "stopped_early": cut, "rejected": cut or full_low}))

    def pool(self) -> list[Candidate]:
        return [c for c in self.traces if not c.extra["rejected"]]

    def voters(self, pool: list[Candidate]) -> list[Candidate]:
        """The pool's traces whose lowest group confidence is ≥ s (the whole pool if none is)."""
        good = [c for c in pool if c.extra["lowest_window"] is not None
                and c.extra["lowest_window"] >= self.threshold]
        return good or pool

    def stopped_early(self) -> int:
        return sum(1 for c in self.traces if c.extra["stopped_early"])

    async def consensus_share(self, ctx: Context) -> float:
        """The modal answer's share of the pool's confidence-weighted vote."""
        pool = self.pool()
        return (await weighted_vote(ctx, pool, vote_weights(pool)))[2]

    async def sample_wave(self, ctx: Context, k: int) -> bool:
        """``k`` more traces, each its own request (``n=1``) with its own :class:`WindowMonitor`
        (none when ``early_stop`` is off); the engine stops a monitored trace for real
        (``finish_reason="cancelled"``). False when the budget ran out on any of them."""
        p = self.p
        base = GenerationRequest(messages=ctx.messages(), temperature=p.temperature, top_p=p.top_p,
                                 max_tokens=p.max_tokens, logprobs=p.top_k)
        monitors = [WindowMonitor(self.threshold, p.window, p.top_k) if p.early_stop else None for _ in range(k)]
        outs = await asyncio.gather(*(ctx.generate(base.with_(monitor=m)) for m in monitors),
                                    return_exceptions=True)
        within_budget = True
        for out in outs:
            if isinstance(out, BudgetExhausted):
                within_budget = False
                continue
            if isinstance(out, BaseException):
                raise out
            for comp in out:
                self.add_later(ctx.to_candidate(comp), cut=comp.finish_reason == "cancelled")
        return within_budget
