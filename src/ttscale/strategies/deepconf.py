"""DeepConf (Fu et al. 2025, "Deep Think with Confidence"): confidence-filtered, confidence-weighted
voting, offline or online with early termination of low-confidence traces.

Confidence (per trace, from the engine's top-k logprobs, ``top_k`` = 20):

- token confidence  C_i = −(1/k) Σ_{j ≤ k} log P_i(j), the negated mean of the top-k logprobs at
  position i (high = peaked distribution = confident). Where an engine returns no alternatives
  (``TokenLogprob.top`` empty) the sampled token's own logprob is used, so with one alternative
  C_i = −log p(token);
- group confidence  C_G = mean of C_i over a sliding window of ``window`` tokens (full windows
  ending at positions window−1 … L−1; a trace shorter than the window has one group, the whole trace);
- trace score (``measure``): ``mean`` (all tokens), ``tail`` (mean C_i of the last ``tail`` tokens),
  ``bottom10`` (mean of the lowest 10% of group confidences), ``lowest_window`` (the lowest group).

``window`` defaults to the paper's 2048, which suits long reasoning traces; for short GSM-style traces
of small models (100–400 tokens) use 64–256, else no trace ever fills a window and online mode can
never stop one.

Offline (``mode="offline"``): sample ``n`` traces with ``logprobs=top_k``; score each by ``measure``;
keep the top ``eta``% (at least one, ties by sample order); vote over the kept traces with weight =
their confidence; answer = the heaviest class (ties to the first seen).

Online (``mode="online"``): sample ``warmup`` traces; threshold s = the (100 − ``eta``)-th percentile
(numpy linear interpolation) of their lowest-group confidences (η = 10: only as confident as the top
10%; η = 90: cut only the bottom 10%). Then sample the remaining ``n − warmup`` traces in waves of
``batch``, each trace as its own request (``n=1``, so that each has its own monitor state) carrying a
:class:`WindowMonitor`, which keeps a running sum over the last ``window`` token confidences (O(1)
per token) and returns True as soon as a *full* window's mean falls below s; the engine then stops
that generation for real (``finish_reason="cancelled"``, only produced tokens are charged).

- The pool: every warm-up trace, and every later trace that has no full window below s (a trace cut
  early is never in it).
- Consensus: after the warm-up and after each wave, stop sampling once the modal answer's share of
  the pool's confidence-weighted vote reaches ``consensus`` (None = never).
- Answer: confidence-weighted vote (weight = confidence under ``measure``) over the pool's traces
  whose lowest-group confidence is ≥ s (the whole pool if none is); ties to the first seen.

``early_stop=False`` sends no monitor: every trace runs to its end, and a later trace with a full
window below s is left out of the pool all the same. So the same samples give exactly the same
pool, consensus stop and vote, and only the generated tokens differ: that is the flag to compare
against.

``Outcome.extra``: ``mode``, ``threshold`` (online), ``traces``, ``stopped_early`` (count),
``pool`` and ``voters`` (online sizes), ``kept_ids`` (offline), ``share``, ``stop_reason``
(``consensus``, ``n`` or ``budget``), ``votes`` (answer → summed weight). Each candidate's ``score``
is its confidence under ``measure`` (online: None for cut traces); online candidates' ``extra`` holds
``lowest_window``, ``warmup``, ``stopped_early`` and ``rejected`` (not in the pool).

The confidence functions are :mod:`ttscale.verifiers.confidence`'s (:func:`token_confidences`,
:func:`window_means`, :func:`trace_confidence`; ``bottom10`` there = mean of the lowest
max(1, ⌊10%⌋) window means); this module adds the per-token :func:`token_confidence` for the monitor.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ttscale.core.confidence import LOGPROB_FLOOR, token_confidences, trace_confidence, window_means
from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import param
from ttscale.core.types import Candidate, GenerationRequest, Problem, TokenLogprob
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.voting import vote

__all__ = [
    "DeepConfParams", "WindowMonitor", "confidence", "deepconf", "token_confidence", "token_confidences",
    "trace_confidence", "window_means",
]

Measure = Literal["bottom10", "tail", "lowest_window", "mean"]


# --- confidence -----------------------------------------------------------------------------------


def token_confidence(tok: TokenLogprob, top_k: int = 20) -> float:
    """C_i of one position, as :func:`ttscale.verifiers.confidence.token_confidences` computes it
    (−mean of the first ``top_k`` alternatives, the token's own logprob when there are none; −inf
    and NaN count as ``LOGPROB_FLOOR``), without building an array: the monitor calls it per token."""
    top = tok.top[:top_k]
    if not top:
        top = ((tok.token, tok.logprob),)
    s = 0.0
    for _, lp in top:
        s += lp if lp == lp and lp > LOGPROB_FLOOR else LOGPROB_FLOOR
    return -s / len(top)


def confidence(logprobs: Sequence[TokenLogprob] | None, measure: Measure = "lowest_window", *,
               window: int = 2048, tail: int = 2048, top_k: int = 20) -> float | None:
    """A trace's confidence under ``measure`` (:func:`ttscale.verifiers.confidence.trace_confidence`);
    None for a trace without logprobs or tokens."""
    if not logprobs:
        return None
    return float(trace_confidence(logprobs, measure, window, tail, top_k))


class WindowMonitor:
    """A :data:`~ttscale.core.types.StreamMonitor` for one sample: True as soon as the mean token
    confidence over the last ``window`` tokens (a full window) is below ``threshold``.

    Engines call it with the tokens so far; it only reads the new ones and keeps a running sum over a
    ``deque`` of the last ``window`` confidences, so each token costs O(1). A shorter token list than
    already seen (an engine retrying) resets it. ``stopped_at`` is the token count when it fired.
    """

    def __init__(self, threshold: float, window: int, top_k: int = 20) -> None:
        self.threshold = float(threshold)
        self.window = max(1, int(window))
        self.top_k = top_k
        self.reset()

    def reset(self) -> None:
        self.seen = 0
        self.sum = 0.0
        self.buf: deque[float] = deque()
        self.stopped_at: int | None = None
        self.lowest = math.inf
        """Lowest full-window mean seen so far (inf before the first full window)."""

    def __call__(self, tokens: Sequence[TokenLogprob], text: str = "") -> bool:
        if self.stopped_at is not None:
            return True
        if len(tokens) < self.seen:
            self.reset()
        for i in range(self.seen, len(tokens)):
            c = token_confidence(tokens[i], self.top_k)
            self.buf.append(c)
            self.sum += c
            if len(self.buf) > self.window:
                self.sum -= self.buf.popleft()
            if len(self.buf) == self.window:
                mean = self.sum / self.window
                self.lowest = min(self.lowest, mean)
                if mean < self.threshold:
                    self.seen = i + 1
                    self.stopped_at = i + 1
                    return True
        self.seen = len(tokens)
        return False


# --- strategy -------------------------------------------------------------------------------------


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


async def _vote(ctx: Context, voters: list[Candidate], weights: list[float]) -> tuple[Candidate | None, dict[str, float], float]:
    """Weighted vote: (a member of the winning class, votes per answer, the winner's share)."""
    v = await vote(ctx, voters, weights)
    return v.chosen, v.votes, v.share


def _score(c: Candidate, p: DeepConfParams) -> float | None:
    return confidence(c.logprobs, p.measure, window=p.window, tail=p.tail, top_k=p.top_k)


def _lowest(c: Candidate, p: DeepConfParams) -> float | None:
    return confidence(c.logprobs, "lowest_window", window=p.window, top_k=p.top_k)


async def _offline(ctx: Context, p: DeepConfParams) -> Outcome:
    try:
        cands = await ctx.sample(p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                                 logprobs=p.top_k)
    except BudgetExhausted:
        return Outcome(None, None, [], {"mode": "offline", "stop_reason": "budget"})
    scored = [c.with_(score=_score(c, p)) for c in cands]
    ranked = sorted((c for c in scored if c.score is not None), key=lambda c: -c.score)  # stable
    keep_n = max(1, math.ceil(len(ranked) * p.eta / 100.0)) if ranked else 0
    kept = ranked[:keep_n]
    kept_ids = {c.id for c in kept}
    kept = [c for c in scored if c.id in kept_ids]  # back to sample order (ties → first seen)
    chosen, votes, share = await _vote(ctx, kept, [float(c.score or 0.0) for c in kept])
    extra = {"mode": "offline", "traces": len(cands), "voters": len(kept), "kept_ids": sorted(kept_ids),
             "votes": votes, "share": share, "stopped_early": 0, "stop_reason": "n"}
    return Outcome(chosen.answer if chosen else None, chosen, scored, extra)


async def _online(ctx: Context, p: DeepConfParams) -> Outcome:
    warm_n = min(p.warmup, p.n)
    extra: dict[str, object] = {"mode": "online", "early_stop": p.early_stop}
    try:
        warm = await ctx.sample(warm_n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                                logprobs=p.top_k)
    except BudgetExhausted:
        return Outcome(None, None, [], {**extra, "stop_reason": "budget"})
    lows = [_lowest(c, p) for c in warm]
    known = [x for x in lows if x is not None]
    threshold = float(np.percentile(known, 100.0 - p.eta)) if known else -math.inf
    extra["threshold"] = threshold

    cands: list[Candidate] = []
    for c, low in zip(warm, lows, strict=True):
        cands.append(c.with_(score=_score(c, p), extra={"lowest_window": low, "warmup": True,
                                                         "stopped_early": False, "rejected": False}))

    def pool() -> list[Candidate]:
        return [c for c in cands if not c.extra["rejected"]]

    def voters(pl: list[Candidate]) -> list[Candidate]:
        good = [c for c in pl if c.extra["lowest_window"] is not None and c.extra["lowest_window"] >= threshold]
        return good or pl

    def weights(cs: list[Candidate]) -> list[float]:
        return [float(c.score if c.score is not None else 1.0) for c in cs]

    async def consensus_share() -> float:
        pl = pool()
        return (await _vote(ctx, pl, weights(pl)))[2]

    base = GenerationRequest(messages=ctx.messages(), temperature=p.temperature, top_p=p.top_p,
                             max_tokens=p.max_tokens, logprobs=p.top_k)
    reason = "n"
    stopped = 0
    while True:
        if p.consensus is not None and await consensus_share() >= p.consensus:
            reason = "consensus" if len(cands) < p.n else "n"
            break
        left = p.n - len(cands)
        if left <= 0:
            break
        k = min(p.batch, left)
        monitors = [WindowMonitor(threshold, p.window, p.top_k) if p.early_stop else None for _ in range(k)]
        outs = await asyncio.gather(*(ctx.generate(base.with_(monitor=m)) for m in monitors),
                                    return_exceptions=True)
        for out in outs:
            if isinstance(out, BudgetExhausted):
                reason = "budget"
                continue
            if isinstance(out, BaseException):
                raise out
            for comp in out:
                c = ctx.to_candidate(comp)
                cut = comp.finish_reason == "cancelled"
                stopped += cut
                low = _lowest(c, p)
                # a full window below s: cut when early_stop, else rejected all the same
                full_low = low is not None and len(c.logprobs or ()) >= p.window and low < threshold
                cands.append(c.with_(score=None if cut else _score(c, p),
                                     extra={"lowest_window": low, "warmup": False, "stopped_early": cut,
                                            "rejected": cut or full_low}))
        if reason == "budget":
            break
    pl = pool()
    vs = voters(pl)
    chosen, votes, share = await _vote(ctx, vs, weights(vs))
    extra.update({"traces": len(cands), "stopped_early": stopped, "pool": len(pl), "voters": len(vs),
                  "votes": votes, "share": share, "stop_reason": reason})
    return Outcome(chosen.answer if chosen else None, chosen, cands, extra)


@strategy("deepconf", DeepConfParams,
          "confidence-filtered weighted voting with online early stop of low-confidence traces (Fu et al. 2025)")
async def deepconf(problem: Problem, ctx: Context, p: DeepConfParams) -> Outcome:
    if p.mode == "offline":
        return await _offline(ctx, p)
    return await _online(ctx, p)
