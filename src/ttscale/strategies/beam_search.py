"""Step-level beam search against a process verifier (Snell et al. 2024; HF search-and-learn).

Budget N, beam width M: sample N first steps, score each prefix with the step verifier, keep the
top N/M live beams and expand each M ways (when fewer than N/M beams are live, the N expansions are
spread over the survivors, as HF does), for at most ``max_steps`` rounds. A beam whose new step
ends the path (EOS, a boxed answer, the token cap or ``max_steps``; see
:mod:`ttscale.strategies.tree`) leaves the pool; the search stops once N beams have finished or
none is live. The answer is a weighted best-of-N over the finished beams, each scored by its step
scores aggregated with ``aggregate`` (``last`` by default, Snell's best).

Siblings continue the same prefix (same token ids) in concurrent requests, so the engine's prefix
cache serves them; each round's N requests go out together. ``extra["rounds"]`` lists, per round,
the nodes generated, those that finished and the beams kept; ``extra["tree"]`` every node.

The shared :func:`beam_rounds` also runs :mod:`lookahead` (``lookahead > 0``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ttscale.core.context import Context
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.tree import (
    StepTree,
    TreeParams,
    by_score,
    counts_over,
    ended,
    weighted_select,
)
from ttscale.strategies.voting import aggregate_steps


@dataclass(frozen=True)
class BeamSearchParams(TreeParams):
    beam_width: int = param(4, "M: each kept beam is expanded M ways; N/M beams are kept per round")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")


async def score_with_lookahead(tree: StepTree, children: list[Candidate], k: int) -> list[Candidate]:
    """Score new steps; with ``k > 0`` each live child is first rolled out ``k`` steps greedily
    (T=0) and its new step's score is the verifier's score of the rollout's last step."""
    if k <= 0:
        return await tree.score(children)
    ends = await asyncio.gather(*(tree.rollout(c, k) if not ended(c) else _same(c) for c in children))
    values = await tree.last_step_value(list(ends))
    out = []
    for c, e, v in zip(children, ends, values, strict=True):
        scores = tuple(c.step_scores or ())
        if len(scores) < len(c.steps):
            scores = scores + (v,) * (len(c.steps) - len(scores))
        extra: dict[str, Any] = dict(c.extra)
        if e.id != c.id:
            extra["lookahead_to"] = e.id
        c = c.with_(step_scores=scores, score=aggregate_steps(scores, tree.p.aggregate) if scores else 0.0,
                    extra=extra)
        tree.nodes[c.id] = c
        out.append(c)
    return out


async def _same(c: Candidate) -> Candidate:
    return c


async def beam_rounds(ctx: Context, p: BeamSearchParams, lookahead: int = 0) -> Outcome:
    tree = StepTree(ctx, p)
    keep_n = max(1, p.n // p.beam_width)
    finished: list[Candidate] = []
    kept: list[Candidate] = []
    rounds: list[dict[str, Any]] = []
    jobs: list[tuple[Candidate | None, int]] = [(None, p.n)]
    for rnd in range(1, p.max_steps + 1):
        children = await tree.expand_all(jobs)
        if not children:
            break
        children = await score_with_lookahead(tree, children, lookahead)
        done = [c for c in children if ended(c)]
        finished += done
        kept = by_score([c for c in children if not ended(c)])[:keep_n]
        rounds.append({"round": rnd, "generated": [c.id for c in children], "finished": [c.id for c in done],
                       "kept": [c.id for c in kept]})
        ctx.log("beam_round", round=rnd, kept=[c.id for c in kept], finished=[c.id for c in done])
        if len(finished) >= p.n or not kept or tree.exhausted:
            break
        jobs = list(zip(kept, counts_over(p.n, len(kept)), strict=True))
    pool = finished or kept
    answer, chosen, weights = await weighted_select(ctx, pool)
    extra = {"rounds": rounds, "weights": weights, "tree": tree.tree(), "stopped_by_budget": tree.exhausted}
    return Outcome(answer, chosen, [tree.nodes[c.id] for c in pool], extra)


@strategy("beam_search", BeamSearchParams, "step-level beam search over a PRM; weighted best-of-N at the end")
async def beam_search(problem: Problem, ctx: Context, p: BeamSearchParams) -> Outcome:
    return await beam_rounds(ctx, p)
