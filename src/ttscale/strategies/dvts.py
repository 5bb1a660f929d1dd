"""Diverse verifier tree search (HF search-and-learn): N/M independent subtrees, each a greedy
search that samples M next steps of its current path and keeps the single best-scored one, until
that step ends the path (EOS, a boxed answer, the token cap or ``max_steps``).

Each subtree contributes the finished steps of its last expansion (up to M completions; the chosen
one at least), and the answer is a weighted best-of-N over all of them. Subtrees run concurrently
and independently (one does not wait for another's round); the M siblings of a step share their
prefix in one request. ``extra["subtrees"]`` lists each subtree's chosen path of node ids.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ttscale.core.context import Context
from ttscale.core.types import Candidate, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.beam_search import BeamSearchParams
from ttscale.strategies.tree import StepTree, by_score, ended, weighted_select


async def _subtree(tree: StepTree, m: int) -> tuple[list[Candidate], list[int]]:
    node: Candidate | None = None
    path: list[int] = []
    for _ in range(tree.p.max_steps):
        kids = await tree.expand(node, m)
        if not kids:
            break
        kids = await tree.score(kids)
        best = by_score(kids)[0]
        path.append(best.id)
        if ended(best):
            return [c for c in by_score(kids) if ended(c)], path
        node = best
    return ([node] if node is not None else []), path


@strategy("dvts", BeamSearchParams, "N/M independent greedy subtrees over a PRM (diverse verifier tree search)")
async def dvts(problem: Problem, ctx: Context, p: BeamSearchParams) -> Outcome:
    tree = StepTree(ctx, p)
    m = max(1, min(p.beam_width, p.n))
    res = await asyncio.gather(*(_subtree(tree, m) for _ in range(max(1, p.n // m))))
    pool = [tree.nodes[c.id] for finals, _ in res for c in finals]
    answer, chosen, weights = await weighted_select(ctx, pool)
    extra: dict[str, Any] = {"subtrees": [path for _, path in res], "weights": weights, "tree": tree.tree(),
                             "stopped_by_budget": tree.exhausted}
    return Outcome(answer, chosen, pool, extra)
