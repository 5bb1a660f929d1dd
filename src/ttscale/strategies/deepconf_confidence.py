"""DeepConf's confidence mechanics: a trace's score, the per-token confidence, the window monitor
that stops a low-confidence trace while it is generated.

- token confidence  C_i = −(1/k) Σ_{j ≤ k} log P_i(j), the negated mean of the top-k logprobs at
  position i (high = peaked distribution = confident). Where an engine returns no alternatives
  (``TokenLogprob.top`` empty) the sampled token's own logprob is used, so with one alternative
  C_i = −log p(token);
- group confidence  C_G = mean of C_i over a sliding window of ``window`` tokens (full windows
  ending at positions window−1 … L−1; a trace shorter than the window has one group, the whole trace);
- trace score (:data:`Measure`): ``mean`` (all tokens), ``tail`` (mean C_i of the last ``tail``
  tokens), ``bottom10`` (mean of the lowest max(1, ⌊10%⌋) group confidences), ``lowest_window``
  (the lowest group).

The array maths are :mod:`ttscale.core.confidence`'s (:func:`token_confidences`,
:func:`window_means`, :func:`trace_confidence`); this module adds the per-token
:func:`token_confidence` that the monitor calls as tokens stream in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Literal

from ttscale.core.confidence import LOGPROB_FLOOR, token_confidences, trace_confidence, window_means
from ttscale.core.types import TokenLogprob

__all__ = [
    "Measure", "WindowMonitor", "confidence", "token_confidence", "token_confidences", "trace_confidence",
    "window_means",
]

Measure = Literal["bottom10", "tail", "lowest_window", "mean"]


def token_confidence(tok: TokenLogprob, top_k: int = 20) -> float:
    """C_i of one position, as :func:`ttscale.core.confidence.token_confidences` computes it
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
    """A trace's confidence under ``measure`` (:func:`ttscale.core.confidence.trace_confidence`);
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
