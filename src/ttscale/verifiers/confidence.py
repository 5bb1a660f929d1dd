"""DeepConf token confidence (Fu et al. 2025) as a verifier and as pure functions.

Token confidence ``C_i = -mean(top-k logprobs at position i)`` (high when the model's distribution
is peaked); group confidence = sliding-window mean of ``C_i``; a trace's score is one of:

- ``mean``: mean of all ``C_i``;
- ``tail``: mean over the last ``tail`` tokens;
- ``bottom10``: mean of the lowest 10% of the window means;
- ``lowest_window``: the lowest window mean.

Windows shorter traces than ``window`` use one window of the whole trace. Scores are raw
confidences (higher = more confident, >= 0), not normalised to [0, 1]. The DeepConf strategies
reuse :func:`token_confidences`, :func:`window_means` and :func:`trace_confidence`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem, TokenLogprob
from ttscale.verifiers.base import verifier

if TYPE_CHECKING:
    from ttscale.core.context import Context

Mode = Literal["mean", "tail", "bottom10", "lowest_window"]
MODES: tuple[str, ...] = ("mean", "tail", "bottom10", "lowest_window")

LOGPROB_FLOOR = -9999.0
"""-inf / NaN logprobs (zero-probability top-k entries) count as this (vLLM's own convention)."""


def token_confidences(logprobs: Sequence[TokenLogprob], top_k: int = 20) -> np.ndarray:
    """``C_i = -mean`` of the first ``top_k`` entries of ``logprobs[i].top`` (the token's own
    logprob when ``top`` is empty). Returns a float array of length ``len(logprobs)``."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    out = np.empty(len(logprobs), dtype=np.float64)
    for i, t in enumerate(logprobs):
        top = t.top[:top_k]
        if top:
            s = 0.0
            for _, lp in top:
                s += lp if lp == lp and lp > LOGPROB_FLOOR else LOGPROB_FLOOR
            out[i] = -s / len(top)
        else:
            lp = t.logprob
            out[i] = -(lp if lp == lp and lp > LOGPROB_FLOOR else LOGPROB_FLOOR)
    return out


def window_means(conf: Sequence[float] | np.ndarray, window: int = 2048) -> np.ndarray:
    """Means of every full sliding window of ``min(window, len(conf))`` values (cumulative sums, so
    O(n)); ``len(conf) - w + 1`` values, empty for an empty input."""
    c = np.asarray(conf, dtype=np.float64)
    n = len(c)
    if n == 0:
        return np.empty(0, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    w = min(window, n)
    cs = np.concatenate(([0.0], np.cumsum(c)))
    return (cs[w:] - cs[:-w]) / w


def score_confidences(conf: Sequence[float] | np.ndarray, mode: str = "bottom10", window: int = 2048,
                      tail: int = 2048) -> float:
    """A trace score from its token confidences (see the module docstring); 0.0 for no tokens."""
    c = np.asarray(conf, dtype=np.float64)
    if mode not in MODES:
        raise ConfigError(f"confidence mode {mode!r} is not one of {', '.join(MODES)}")
    if len(c) == 0:
        return 0.0
    if mode == "mean":
        return float(c.mean())
    if mode == "tail":
        if tail < 1:
            raise ValueError(f"tail must be >= 1, got {tail}")
        return float(c[-tail:].mean())
    means = window_means(c, window)
    if mode == "lowest_window":
        return float(means.min())
    k = max(1, int(len(means) * 0.1))  # bottom10
    return float(np.partition(means, k - 1)[:k].mean())


def trace_confidence(logprobs: Sequence[TokenLogprob], mode: str = "bottom10", window: int = 2048,
                     tail: int = 2048, top_k: int = 20) -> float:
    """The DeepConf score of one trace from its per-token logprobs."""
    return score_confidences(token_confidences(logprobs, top_k), mode, window, tail)


@dataclass(frozen=True)
class ConfidenceParams:
    mode: Mode = param("bottom10", "trace score: mean, tail, bottom10 (lowest 10% of window means) or lowest_window")
    window: int = param(2048, "sliding-window length in tokens (shorter traces use one whole-trace window)")
    tail: int = param(2048, "tokens at the end averaged by mode=tail")
    top_k: int = param(20, "top-k logprobs averaged per token")

    def __post_init__(self) -> None:
        for name in ("window", "tail", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class ConfidenceVerifier(Verifier):
    """DeepConf trace confidence from the candidate's own sampling logprobs: no model call, no
    verifier tokens. Candidates must be sampled with logprobs."""

    name = "confidence"

    def __init__(self, params: ConfidenceParams | None = None) -> None:
        self.params = params or ConfidenceParams()

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        p = self.params
        out = []
        for c in candidates:
            if c.logprobs is None:
                raise ConfigError(
                    f"verifier 'confidence' needs per-token logprobs but candidate {c.id} of problem "
                    f"{problem.id!r} has none: sample with logprobs, e.g. --param logprobs=20"
                )
            out.append(trace_confidence(c.logprobs, p.mode, p.window, p.tail, p.top_k))
        return out


@verifier("confidence", ConfidenceParams, "DeepConf trace confidence from the sample's own top-k logprobs")
def make_confidence(engine: Engine, params: ConfidenceParams) -> ConfidenceVerifier:
    return ConfidenceVerifier(params)
