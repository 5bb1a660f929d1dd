"""DeepConf (Fu et al. 2025, "Deep Think with Confidence"): confidence-filtered, confidence-weighted
voting, offline or online with early termination of low-confidence traces.

Confidence (:mod:`ttscale.strategies.deepconf_confidence`): token confidence C_i = −mean of the
top-k (``top_k`` = 20) logprobs at position i; group confidence = the mean C_i over a sliding window
of ``window`` tokens; a trace's score under ``measure``: ``mean``, ``tail`` (last ``tail`` tokens),
``bottom10`` (lowest 10% of groups) or ``lowest_window``. ``window`` defaults to the paper's 2048,
which suits long reasoning traces; for short GSM-style traces of small models (100–400 tokens) use
64–256, else no trace ever fills a window and online mode can never stop one.

Offline (``mode="offline"``)::

    sample n traces with top-k logprobs; score each by `measure`
    keep the top η% by score (at least one, ties by sample order)
    answer = confidence-weighted vote over the kept traces (ties to the first seen)

Online (``mode="online"``)::

    sample `warmup` traces; s = the (100 − η)-th percentile of their lowest-group confidences
        (η = 10: only as confident as the top 10%; η = 90: cut only the bottom 10%)
    pool = the warm-up traces
    until the modal answer's weighted share of the pool reaches `consensus`, or n traces:
        sample a wave of `batch` traces, each watched by a WindowMonitor that stops it for real
        as soon as a full window's mean confidence falls below s; add the uncut ones to the pool
    answer = confidence-weighted vote over the pool's traces whose lowest group is ≥ s
        (the whole pool if none is; ties to the first seen)

Each post-warm-up trace is its own request (``n=1``, with its own monitor state; a cut trace has
``finish_reason="cancelled"`` and only its produced tokens are charged). ``consensus=None`` never
stops early. ``early_stop=False`` sends no monitor: every trace runs to its end, and a later trace
with a full window below s is left out of the pool all the same, so the same samples give exactly
the same pool, consensus stop and vote and only the generated tokens differ: the flag to compare
against.

``Outcome.extra``: ``mode``, ``threshold`` (online), ``traces``, ``stopped_early`` (count),
``pool`` and ``voters`` (online sizes), ``kept_ids`` (offline), ``share``, ``stop_reason``
(``consensus``, ``n`` or ``budget``), ``votes`` (answer → summed weight). Each candidate's ``score``
is its confidence under ``measure`` (online: None for cut traces); online candidates' ``extra`` holds
``lowest_window``, ``warmup``, ``stopped_early`` and ``rejected`` (not in the pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.deepconf_confidence import (
    Measure,
    WindowMonitor,
    confidence,
    token_confidence,
    token_confidences,
    trace_confidence,
    window_means,
)
from ttscale.strategies.deepconf_traces import (
    OnlineTraces,
    keep_most_confident,
    lowest_group,
    sample_traces,
    trace_score,
    vote_weights,
    warmup_threshold,
    weighted_vote,
)

__all__ = [
    "DeepConfParams", "WindowMonitor", "confidence", "deepconf", "token_confidence", "token_confidences",
    "trace_confidence", "window_means",
]


@dataclass(frozen=True)
class DeepConfParams:
    mode: Literal["offline", "online"] = param("online", "offline: filter + weighted vote; online: warm-up + early stop")
    n: int = param(32, "budget of traces")
    warmup: int = param(16, "online: warm-up traces that set the threshold")
    eta: float = param(10.0, "keep the top eta% of traces by confidence (paper: 10 or 90)")
    measure: Measure = param("lowest_window", "trace confidence: bottom10, tail, lowest_window or mean")
    window: int = param(2048, "group-confidence window in tokens (64-256 suits short GSM-style traces)")
    tail: int = param(2048, "tokens of the 'tail' measure")
    top_k: int = param(20, "logprobs per position used for token confidence")
    consensus: float | None = param(0.95, "online: stop once the modal answer's weighted share reaches this (None = off)")
    early_stop: bool = param(True, "online: stop traces whose window confidence falls below the threshold")
    batch: int = param(8, "online: traces per post-warm-up wave")
    temperature: float = param(0.7, "sampling temperature")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per trace")

    def __post_init__(self) -> None:
        if not 0 < self.eta <= 100:
            raise ValueError(f"eta must be in (0, 100], got {self.eta}")
        if self.n < 1 or self.warmup < 1 or self.batch < 1 or self.window < 1:
            raise ValueError("n, warmup, batch and window must be >= 1")


async def offline(ctx: Context, p: DeepConfParams) -> Outcome:
    """Filter the n traces to the top η% by confidence, then a confidence-weighted vote."""
    try:
        traces = await sample_traces(ctx, p, p.n)
    except BudgetExhausted:
        return Outcome(None, None, [], {"mode": "offline", "stop_reason": "budget"})
    scored = [c.with_(score=trace_score(c, p)) for c in traces]
    kept = keep_most_confident(scored, p.eta)
    chosen, votes, share = await weighted_vote(ctx, kept, [float(c.score or 0.0) for c in kept])
    extra = {"mode": "offline", "traces": len(traces), "voters": len(kept), "kept_ids": sorted(c.id for c in kept),
             "votes": votes, "share": share, "stopped_early": 0, "stop_reason": "n"}
    return Outcome(chosen.answer if chosen else None, chosen, scored, extra)


async def online(ctx: Context, p: DeepConfParams) -> Outcome:
    """Warm-up sets the threshold s; later traces are cut at their first full window below s."""
    extra: dict[str, object] = {"mode": "online", "early_stop": p.early_stop}
    try:
        warm = await sample_traces(ctx, p, min(p.warmup, p.n))
    except BudgetExhausted:
        return Outcome(None, None, [], {**extra, "stop_reason": "budget"})
    lowest = [lowest_group(c, p) for c in warm]
    traces = OnlineTraces(p, threshold=warmup_threshold(lowest, p.eta))
    traces.add_warmup(warm, lowest)
    reason = "n"
    while True:
        if p.consensus is not None and await traces.consensus_share(ctx) >= p.consensus:
            reason = "consensus" if len(traces) < p.n else "n"
            break
        if len(traces) >= p.n:
            break
        if not await traces.sample_wave(ctx, min(p.batch, p.n - len(traces))):
            reason = "budget"
            break
    pool = traces.pool()
    voters = traces.voters(pool)
    chosen, votes, share = await weighted_vote(ctx, voters, vote_weights(voters))
    extra.update({"threshold": traces.threshold, "traces": len(traces), "stopped_early": traces.stopped_early(),
                  "pool": len(pool), "voters": len(voters), "votes": votes, "share": share,
                  "stop_reason": reason})
    return Outcome(chosen.answer if chosen else None, chosen, traces.traces, extra)


@strategy("deepconf", DeepConfParams,
          "confidence-filtered weighted voting with online early stop of low-confidence traces (Fu et al. 2025)")
async def deepconf(problem: Problem, ctx: Context, p: DeepConfParams) -> Outcome:
    if p.mode == "offline":
        return await offline(ctx, p)
    return await online(ctx, p)
