"""Particle filtering over solution steps (Puri et al. 2025, "A probabilistic inference approach
to inference-time scaling"; its_hub).

N particles (partial solutions). Each round every live particle is extended by one sampled step
(copies of one particle share its prefix in one request), every new step is scored by the step
verifier, and the N particles are resampled with replacement in proportion to their weights;
finished particles stay in the population (they are resampled but not extended). The search stops
when every particle has finished or after ``max_steps`` rounds; the answer is a weighted best-of-N
over the distinct final particles.

Weights from a particle's aggregated score r (``aggregate``, ``last`` by default):
``softmax``: ``exp(logit(r) / T)`` (its_hub's choice at T=1: weights ∝ r/(1−r)); ``normalized``:
``r`` itself. Resampling draws from the context's seeded RNG, so a run is reproducible.
``extra["rounds"]`` records, per round, the weights and the particle ids after resampling.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from ttscale.core.context import Context
from ttscale.core.registry import param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.tree import StepTree, TreeParams, ended, weighted_select


@dataclass(frozen=True)
class ParticleParams(TreeParams):
    resample: Literal["softmax", "normalized"] = param("softmax", "weights: softmax(logit(score)/T) or score itself")
    resample_temperature: float = param(1.0, "T of the softmax weights (lower = greedier)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resample_temperature <= 0:
            raise ValueError(f"resample_temperature must be > 0, got {self.resample_temperature}")


def particle_weights(scores: list[float], how: str, temperature: float = 1.0) -> list[float]:
    """Normalised resampling weights (uniform when all are zero)."""
    if not scores:
        return []
    if how == "softmax":
        logits = []
        for s in scores:
            r = min(max(float(s), 1e-6), 1 - 1e-6)
            logits.append(math.log(r / (1 - r)) / temperature)
        top = max(logits)
        w = [math.exp(x - top) for x in logits]
    else:
        w = [max(0.0, float(s)) for s in scores]
    total = sum(w)
    if total <= 0:
        return [1.0 / len(scores)] * len(scores)
    return [x / total for x in w]


@strategy("particle_filtering", ParticleParams, "particles of partial solutions resampled by PRM step rewards")
async def particle_filtering(problem: Problem, ctx: Context, p: ParticleParams) -> Outcome:
    tree = StepTree(ctx, p)
    particles = await tree.score(await tree.expand(None, p.n))
    rounds: list[dict[str, Any]] = []
    for rnd in range(1, p.max_steps + 1):
        if not particles:
            break
        w = particle_weights([c.score or 0.0 for c in particles], p.resample, p.resample_temperature)
        picks = ctx.rng.choices(range(len(particles)), weights=w, k=p.n)
        particles = [particles[i] for i in sorted(picks)]
        rounds.append({"round": rnd, "weights": [round(x, 6) for x in w],
                       "resampled": [c.id for c in particles]})
        live = Counter(c.id for c in particles if not ended(c))
        if not live or tree.exhausted or rnd == p.max_steps:
            break
        kids = await tree.expand_all([(tree.nodes[i], k) for i, k in live.items()])
        if not kids:
            break
        kids = await tree.score(kids)
        # particles that could not be extended (budget) keep their place
        extended = Counter(c.parent for c in kids)
        carried = []
        for c in particles:
            if not ended(c) and extended.get(c.id, 0) > 0:
                extended[c.id] -= 1
                continue
            carried.append(c)
        particles = kids + carried
    distinct = list({c.id: c for c in particles}.values())
    finals = [c for c in distinct if ended(c)] or distinct
    answer, chosen, weights = await weighted_select(ctx, finals)
    extra = {"rounds": rounds, "weights": weights, "tree": tree.tree(), "stopped_by_budget": tree.exhausted}
    return Outcome(answer, chosen, finals, extra)
