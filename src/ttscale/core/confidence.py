"""DeepConf token confidence (Fu et al. 2025): the maths, used by the ``confidence`` verifier and by
the DeepConf strategy.

Token confidence ``C_i = -mean(top-k logprobs at position i)`` (high when the model's distribution
is peaked); group confidence = sliding-window mean of ``C_i``; a trace's score is one of:

- ``mean``: mean of all ``C_i``;
- ``tail``: mean over the last ``tail`` tokens;
- ``bottom10``: mean of the lowest 10% of the window means;
- ``lowest_window``: the lowest window mean.

Traces shorter than ``window`` use one window of the whole trace. Scores are raw confidences
(higher = more confident, >= 0), not normalised to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ttscale.core.errors import ConfigError
from ttscale.core.types import TokenLogprob

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
