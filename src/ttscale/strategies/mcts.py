"""Monte-Carlo tree search over solution steps with UCT (Kocsis & Szepesvári 2006), valued by the
step verifier instead of random rollouts (as in PRM-guided MCTS variants).

Each iteration selects from the root: a node with fewer than ``max_children`` children (and whose
path has not ended) is expanded by one sampled step; otherwise the child maximising
``Q + c·sqrt(ln N_parent / N_child)`` is entered. The new node's value is its aggregated step score
(``aggregate``; optionally after a greedy ``rollout`` of k steps, scored at its last step); values
are backed up along the path. A selected finished node is re-valued without generating. One
generation per expansion: ``n`` is the number of iterations that generate (plus rollout steps), so
the search is sequential within a problem (problems still run concurrently).

The answer is a weighted best-of-N over the finished nodes (by score); without any, the partial
node with the best mean value. ``extra["visits"]`` maps node ids to ``[visits, mean value]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.registry import param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.tree import StepTree, TreeParams, ended, weighted_select

ROOT = -1


@dataclass(frozen=True)
class MCTSParams(TreeParams):
    n: int = param(16, "expansions (generations, not counting rollout steps)")
    max_children: int = param(3, "children per node before selection goes deeper")
    c_uct: float = param(1.0, "UCT exploration constant")
    rollout: int = param(0, "greedy steps rolled out from a new node before valuing it (0 = value the node)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_children < 1:
            raise ValueError(f"max_children must be >= 1, got {self.max_children}")


@strategy("mcts", MCTSParams, "UCT tree search over steps valued by the step verifier")
async def mcts(problem: Problem, ctx: Context, p: MCTSParams) -> Outcome:
    tree = StepTree(ctx, p)
    children: dict[int, list[int]] = {ROOT: []}
    visits: dict[int, int] = {ROOT: 0}
    total: dict[int, float] = {ROOT: 0.0}

    def uct(parent: int, child: int) -> float:
        q = total[child] / max(1, visits[child])
        return q + p.c_uct * math.sqrt(math.log(max(1, visits[parent])) / max(1, visits[child]))

    gens = 0
    for _ in range(p.n * 4 + 8):
        if gens >= p.n or tree.exhausted:
            break
        path = [ROOT]
        node = ROOT
        while True:
            open_ = node == ROOT or not ended(tree.nodes[node])
            if open_ and len(children[node]) < p.max_children:
                break
            if not open_ or not children[node]:
                break
            node = max(children[node], key=lambda c, par=node: (uct(par, c), -c))
            path.append(node)
        if node != ROOT and ended(tree.nodes[node]):
            value = tree.nodes[node].score or 0.0
        else:
            kids = await tree.expand(tree.nodes[node] if node != ROOT else None, 1)
            gens += 1
            if not kids:
                continue
            kid = (await tree.score(kids))[0]
            value = kid.score or 0.0
            if p.rollout > 0 and not ended(kid):
                end = await tree.rollout(kid, p.rollout)
                if end.id != kid.id:
                    value = (await tree.last_step_value([end]))[0]
            children[node].append(kid.id)
            children[kid.id] = []
            visits[kid.id] = 0
            total[kid.id] = 0.0
            path.append(kid.id)
        for n_ in path:
            visits[n_] += 1
            total[n_] += value
    nodes = [tree.nodes[i] for i in visits if i != ROOT]
    finals = [c for c in nodes if ended(c)]
    if finals:
        answer, chosen, weights = await weighted_select(ctx, finals)
    else:
        best = max(nodes, key=lambda c: (total[c.id] / max(1, visits[c.id]), -c.id), default=None)
        finals = [best] if best is not None else []
        answer, chosen, weights = (best.answer if best else None), best, {}
    extra = {"visits": {str(i): [visits[i], round(total[i] / max(1, visits[i]), 6)] for i in visits if i != ROOT},
             "weights": weights, "tree": tree.tree(), "stopped_by_budget": tree.exhausted}
    return Outcome(answer, chosen, [tree.nodes[c.id] for c in finals], extra)


