"""TURN (Du, Yang and Welleck 2025, "Optimizing Temperature for Language Models with Multi-Sample
Inference"): pick the sampling temperature at the model's *entropy turning point*, without labels.

Rule (the paper's idea; the estimator details below are ours):

1. For each temperature t of a grid (default 0.1, 0.2, ..., 1.5) draw ``samples`` short completions
   of the prompt at temperature t with top-k logprobs.
2. Token entropy at each generated position is the entropy of the *tempered* next-token distribution
   restricted to the returned top-k (q_i ∝ exp(logprob_i / t), renormalised); H(t) is its mean over
   every position of every sample drawn at t.
3. On L(t) = log H(t) the turning point (EntP) is where L turns from concave to convex: the first
   grid point after which the second difference L[j+1] − 2L[j] + L[j−1] becomes positive, having
   been ≤ 0 before; when the curve never shows that shape, the grid point with the largest second
   difference (the sharpest upturn).
4. The temperature is EntP + ``offset`` (the paper's aggregation-aware adjustment; 0 by default,
   a parameter because its value per aggregation rule is unverified here), clipped to the grid.

``temperature=turn`` in a sampling strategy measures this once per engine and model for the whole
run, on the first problem that asks (its probe samples are charged to that problem as policy
tokens, and the ``turn`` event of its trace says so); every later problem reuses the estimate for free.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ttscale.core.context import Context
from ttscale.core.errors import ConfigError
from ttscale.core.types import GenerationRequest, TokenLogprob

Temperature = float | Literal["turn"]
"""A sampling temperature, or ``"turn"`` for the TURN estimate."""

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.1 * i, 2) for i in range(1, 16))


@dataclass(frozen=True)
class TurnEstimate:
    """The measured entropy curve and the temperature chosen from it."""

    temperature: float
    turning_point: float
    grid: tuple[float, ...]
    entropy: tuple[float, ...]
    """Mean token entropy H(t) per grid temperature (nats)."""
    probe_tokens: int
    """Tokens generated to measure the curve."""

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "turning_point": self.turning_point,
                "grid": list(self.grid), "entropy": [round(h, 6) for h in self.entropy],
                "probe_tokens": self.probe_tokens}


def tempered_entropy(position: TokenLogprob, t: float) -> float:
    """Entropy (nats) of the top-k distribution at one position, tempered by ``t`` and renormalised."""
    lps = [lp for _, lp in position.top if lp == lp and lp > -1e30] or [position.logprob]
    if len(lps) < 2:
        return 0.0
    z = [lp / max(t, 1e-6) for lp in lps]
    m = max(z)
    w = [math.exp(x - m) for x in z]
    s = sum(w)
    return -sum((x / s) * math.log(x / s) for x in w if x > 0)


def turning_point(grid: Sequence[float], entropy: Sequence[float]) -> float:
    """EntP of an entropy curve (see the module docstring, step 3)."""
    if len(grid) != len(entropy) or len(grid) < 3:
        raise ConfigError(f"TURN needs at least 3 grid temperatures with an entropy each, got {len(grid)}")
    logh = [math.log(max(h, 1e-9)) for h in entropy]
    d2 = [logh[j + 1] - 2 * logh[j] + logh[j - 1] for j in range(1, len(logh) - 1)]
    seen_concave = False
    for j, v in enumerate(d2, start=1):
        if v <= 0:
            seen_concave = True
        elif seen_concave:
            return float(grid[j])
    return float(grid[1 + max(range(len(d2)), key=lambda i: d2[i])])


def choose_temperature(grid: Sequence[float], entropy: Sequence[float], offset: float = 0.0) -> float:
    """EntP + ``offset``, clipped to the grid's range."""
    t = turning_point(grid, entropy) + offset
    return round(min(max(t, min(grid)), max(grid)), 4)


async def measure_turn(ctx: Context, *, grid: Sequence[float] = DEFAULT_GRID, samples: int = 2,
                       max_tokens: int = 96, top_k: int = 20, offset: float = 0.0) -> TurnEstimate:
    """Draw the probe samples on ``ctx.problem`` (charged to it) and estimate the temperature."""
    base = GenerationRequest(messages=ctx.messages(), max_tokens=max_tokens, logprobs=top_k)
    outs = await asyncio.gather(*(ctx.generate(base.with_(n=samples, temperature=float(t))) for t in grid))
    entropy, tokens = [], 0
    for t, comps in zip(grid, outs, strict=True):
        values = [tempered_entropy(pos, t) for c in comps for pos in (c.logprobs or ())]
        tokens += sum(c.completion_tokens for c in comps)
        if not values:
            raise ConfigError("temperature=turn needs per-token logprobs from the engine "
                              f"(engine {ctx.engine.name!r} returned none)")
        entropy.append(sum(values) / len(values))
    return TurnEstimate(choose_temperature(grid, entropy, offset), turning_point(grid, entropy),
                        tuple(float(t) for t in grid), tuple(entropy), tokens)


_measured: weakref.WeakKeyDictionary[Any, dict[str, TurnEstimate]] = weakref.WeakKeyDictionary()
_pending: weakref.WeakKeyDictionary[Any, dict[str, asyncio.Future[TurnEstimate]]] = weakref.WeakKeyDictionary()


async def resolve_temperature(ctx: Context, value: Temperature) -> float:
    """``value`` as a number: itself, or the run's TURN estimate for this engine and model (measured
    on the first problem that asks; see the module docstring), logged to the problem's trace as a
    ``turn`` event (with whether this problem paid for the probes)."""
    if value != "turn":
        return float(value)
    eng, model = ctx.engine, ctx.engine.model
    est = _measured.get(eng, {}).get(model)
    paid = False
    if est is None:
        pending = _pending.setdefault(eng, {})
        fut = pending.get(model)
        if fut is None:
            paid = True
            fut = asyncio.get_running_loop().create_future()
            pending[model] = fut
            try:
                est = await measure_turn(ctx)
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()  # marked retrieved: the waiters re-raise it themselves
                raise
            finally:
                pending.pop(model, None)
            _measured.setdefault(eng, {})[model] = est
            fut.set_result(est)
        else:
            est = await asyncio.shield(fut)
    ctx.log("turn", **est.to_dict(), measured_on_this_problem=paid)
    return est.temperature
