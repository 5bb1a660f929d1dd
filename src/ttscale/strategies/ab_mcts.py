"""Adaptive branching MCTS (Inoue et al. 2025, "Wider or Deeper?"; SakanaAI TreeQuest) over
solution steps.

Every open node (the root, or a partial solution whose path has not ended) has a GEN arm (go wider:
sample one more child step here) besides its open children (go deeper). From the root, at each
level a value is Thompson-sampled from every arm's posterior and the argmax is taken; descending
stops at GEN, where one new step is generated, scored by the step verifier (aggregated score in
[0, 1]), and the score is backed up to every node on the path. Posteriors (``posterior``):

- ``beta``: Beta(0.5 + Σs, 0.5 + Σ(1 − s)) over scores s ∈ [0, 1] (Jeffreys prior; fractional
  successes as in TreeQuest);
- ``nig``: Normal with a Normal-Inverse-Gamma prior (m=0, κ=1, ν=1, τ²=0.1); the sampled mean is
  the arm's value.

A GEN arm's observations are the scores of the children generated at that node (TreeQuest's
AB-MCTS-A keeps the new-child scores with the GEN node); a child arm's are every score backed up
through that child. Finished children are not arms (they cannot grow).

Several models as extra arms (AB-MCTS-M's model choice): when GEN is chosen, the model is one more
Thompson arm over a global posterior of the scores of the nodes each model produced. A "model" is
an (engine, temperature) pair: ``engines`` names engines of the context (``policy`` = the run's
engine; others come from ``ttscale run --extra-engine NAME=ENGINE:MODEL``) and ``temperatures`` the
sampling temperatures, every combination one arm. Any model may extend any node: a path continues
from token ids while one engine produced all of it, else from its text (tokenizers differ). Tokens
of every engine are charged to the problem; FLOPs use the policy engine's parameter count. ``n`` is
the number of generations (iterations); the search is sequential within a problem.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ttscale.core.context import Context
from ttscale.core.registry import param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.tree import StepTree, TreeParams, by_score, ended, weighted_select

ROOT = -1
NIG_PRIOR = (0.0, 1.0, 1.0, 0.1)
"""m, κ, ν, τ² of the Normal-Inverse-Gamma prior (TreeQuest's defaults)."""


@dataclass(frozen=True)
class ABMCTSParams(TreeParams):
    n: int = param(16, "generations (iterations) of the search")
    posterior: Literal["beta", "nig"] = param("beta", "arm posterior: beta (Jeffreys) or nig (Normal-Inverse-Gamma)")
    temperatures: list[float] = param([0.8], "sampling temperatures; each (engine, temperature) is one model arm")
    engines: list[str] = param(["policy"], "engines as model arms: policy and names given with --extra-engine")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperatures:
            raise ValueError("temperatures needs at least one entry")
        if not self.engines:
            raise ValueError("engines needs at least one entry (policy = the run's engine)")

    def arms(self) -> list[tuple[str, float]]:
        return [(e, t) for e in self.engines for t in self.temperatures]


def thompson(scores: Sequence[float], posterior: str, rng: random.Random) -> float:
    """One draw of an arm's value from its posterior given the observed scores."""
    if posterior == "beta":
        s = sum(min(1.0, max(0.0, x)) for x in scores)
        return rng.betavariate(0.5 + s, 0.5 + len(scores) - s)
    m0, k0, v0, t2 = NIG_PRIOR
    n = len(scores)
    xbar = sum(scores) / n if n else 0.0
    ss = sum((x - xbar) ** 2 for x in scores)
    kn, vn = k0 + n, v0 + n
    mn = (k0 * m0 + n * xbar) / kn
    vt2 = v0 * t2 + ss + k0 * n * (xbar - m0) ** 2 / kn
    sigma2 = vt2 / rng.gammavariate(vn / 2.0, 2.0)  # scaled inverse chi-squared(vn, vt2 / vn)
    return rng.gauss(mn, math.sqrt(sigma2 / kn))


@strategy("ab_mcts", ABMCTSParams, "adaptive-branching MCTS: Thompson sampling between wider (GEN) and deeper")
async def ab_mcts(problem: Problem, ctx: Context, p: ABMCTSParams) -> Outcome:
    tree = StepTree(ctx, p)
    rng = ctx.rng
    children: dict[int, list[int]] = {ROOT: []}
    gen_obs: dict[int, list[float]] = {ROOT: []}
    sub_obs: dict[int, list[float]] = {}
    models = p.arms()
    for name in p.engines:
        ctx.engine_named(name)  # unknown engine names fail before any generation
    model_obs: list[list[float]] = [[] for _ in models]
    model_uses = [0] * len(models)
    choices: list[dict[str, Any]] = []
    for it in range(p.n):
        if tree.exhausted:
            break
        node, path = ROOT, [ROOT]
        while True:
            arms: list[tuple[float, int]] = [(thompson(gen_obs[node], p.posterior, rng), ROOT)]
            for c in children[node]:
                if not ended(tree.nodes[c]):
                    arms.append((thompson(sub_obs[c], p.posterior, rng), c))
            _, pick = max(arms, key=lambda a: (a[0], a[1] == ROOT))
            if pick == ROOT:
                break
            node = pick
            path.append(node)
        arm = max(range(len(models)),
                  key=lambda i: (thompson(model_obs[i], p.posterior, rng), -i)) if len(models) > 1 else 0
        eng, temp = models[arm]
        kids = await tree.expand(tree.nodes[node] if node != ROOT else None, 1, temperature=temp, engine=eng)
        if not kids:
            break
        kid = (await tree.score(kids))[0]
        s = float(kid.score or 0.0)
        model_uses[arm] += 1
        model_obs[arm].append(s)
        gen_obs[node].append(s)
        children[node].append(kid.id)
        children[kid.id] = []
        gen_obs[kid.id] = []
        sub_obs[kid.id] = [s]
        for a in path[1:]:
            sub_obs[a].append(s)
        choices.append({"iter": it + 1, "at": None if node == ROOT else node, "model": arm, "new": kid.id,
                        "score": round(s, 6)})
    nodes = [tree.nodes[i] for i in sub_obs]
    finals = [c for c in nodes if ended(c)] or by_score(nodes)[:1]
    answer, chosen, weights = await weighted_select(ctx, finals)
    extra = {"choices": choices, "models": [f"{e}@{t:g}" for e, t in models], "model_uses": model_uses,
             "weights": weights, "tree": tree.tree(),
             "stopped_by_budget": tree.exhausted}
    return Outcome(answer, chosen, finals, extra)
