"""DeepConf token confidence (Fu et al. 2025) as a verifier: a trace's score from its own sampling
logprobs (the maths, and the score modes, are in :mod:`ttscale.core.confidence`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ttscale.core.confidence import Mode, trace_confidence
from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem
from ttscale.verifiers.base import verifier

if TYPE_CHECKING:
    from ttscale.core.context import Context


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
