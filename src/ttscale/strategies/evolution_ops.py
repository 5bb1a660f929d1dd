"""Mind Evolution's operators (:mod:`ttscale.strategies.mind_evolution`): Boltzmann tournament
selection, the evaluator choice, and :class:`IslandSearch`, the search state with its proposal,
critic→author refinement, migration and island-reset operations."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.evaluation import Evaluation, Evaluator
from ttscale.core.plugins import load_evaluators, make_evaluator
from ttscale.core.types import Candidate, Completion, GenerationRequest, Problem
from ttscale.strategies.evolution_prompts import NO_FEEDBACK

if TYPE_CHECKING:
    from ttscale.strategies.mind_evolution import MindEvolutionParams


def boltzmann_select(rng: random.Random, fitness: Sequence[float], k: int, temperature: float) -> list[int]:
    """``min(k, len(fitness))`` distinct indices, drawn one at a time without replacement with
    P(i) ∝ exp((fitness[i] − max) / temperature) among those left."""
    left = list(range(len(fitness)))
    out: list[int] = []
    while left and len(out) < k:
        top = max(fitness[i] for i in left)
        weights = [math.exp((fitness[i] - top) / temperature) for i in left]
        r = rng.random() * sum(weights)
        pick = left[-1]
        acc = 0.0
        for i, w in zip(left, weights, strict=True):
            acc += w
            if r < acc:
                pick = i
                break
        left.remove(pick)
        out.append(pick)
    return out


def check_evaluator(name: str) -> None:
    """A ValueError naming the known evaluators unless ``name`` is ``auto`` or one of them."""
    names = load_evaluators().names()
    if name != "auto" and name not in names:
        raise ValueError(f"evaluator={name!r} is unknown; known: auto, {', '.join(names)}")


def pick_evaluator(problem: Problem, p: MindEvolutionParams) -> Evaluator:
    name = p.evaluator
    if name == "auto":
        name = "meeting" if "meeting" in (problem.metadata or {}) else "math"
    return make_evaluator(name, {"verifier": p.verifier, "solved_threshold": p.solved_threshold})


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass
class IslandSearch:
    """Every candidate with its evaluation, each island's pool of candidate ids, and whether the
    search must stop (a solution is solved, or the budget is spent)."""

    ctx: Context
    p: MindEvolutionParams
    evaluator: Evaluator
    cands: dict[int, Candidate] = field(default_factory=dict)
    evals: dict[int, Evaluation] = field(default_factory=dict)
    pools: list[list[int]] = field(default_factory=list)
    solved: int | None = None
    exhausted: bool = False

    def __post_init__(self) -> None:
        if not self.pools:
            self.pools = [[] for _ in range(self.p.islands)]

    def stop(self) -> bool:
        return self.solved is not None or self.exhausted

    def fitness(self, cid: int) -> float:
        return self.evals[cid].fitness

    def ranked(self, ids: Sequence[int]) -> list[int]:
        """Best fitness first; ties: the earlier candidate."""
        return sorted(ids, key=lambda c: (-self.fitness(c), c))

    def best(self) -> Candidate | None:
        """The best candidate so far (ties: the earliest)."""
        return self.cands[self.ranked(list(self.cands))[0]] if self.cands else None

    def best_per_island(self) -> list[float | None]:
        return [max((self.fitness(c) for c in pool), default=None) for pool in self.pools]

    def select_parents(self, island: int) -> list[int]:
        """``parents`` parents from the island's pool by Boltzmann tournament (none from an empty pool)."""
        pool = self.pools[island]
        if not pool:
            return []
        picks = boltzmann_select(self.ctx.rng, [self.fitness(c) for c in pool], self.p.parents,
                                 self.p.selection_temperature)
        return [pool[k] for k in picks]

    # --- the model calls of one conversation ------------------------------------------------------

    def messages(self, content: str, *, system: bool) -> tuple[dict[str, str], ...]:
        msgs = []
        if system and self.ctx.system_prompt:
            msgs.append({"role": "system", "content": self.ctx.system_prompt})
        msgs.append({"role": "user", "content": content})
        return tuple(msgs)

    async def call(self, content: str, *, seed: int, max_tokens: int, system: bool) -> Completion | None:
        """One policy request; None (and the search stops) when the budget is spent."""
        p = self.p
        req = GenerationRequest(messages=self.messages(content, system=system), temperature=p.temperature,
                                top_p=p.top_p, max_tokens=max_tokens, seed=seed)
        try:
            out = await self.ctx.generate(req)
        except BudgetExhausted:
            self.exhausted = True
            return None
        return out[0] if out else None

    async def propose(self, content: str, *, seed: int, island: int, generation: int, op: str,
                      parents: Sequence[int], critique: str | None = None) -> Candidate | None:
        """A solution written from ``content``, evaluated and added to the island's pool."""
        c = await self.call(content, seed=seed, max_tokens=self.p.max_tokens, system=True)
        if c is None:
            return None
        cand = self.ctx.to_candidate(c, parent=parents[0] if parents else None)
        ev = await self.evaluator.evaluate(self.ctx.problem, cand.text, self.ctx)
        extra: dict[str, Any] = {"island": island, "generation": generation, "op": op,
                                 "parents": list(parents), "feedback": ev.feedback, "solved": ev.solved}
        if critique is not None:
            extra["critique"] = critique
        answer = ev.answer if getattr(self.evaluator, "gives_answers", False) else cand.answer
        cand = cand.with_(score=ev.fitness, answer=answer, extra=extra)
        self.cands[cand.id] = cand
        self.evals[cand.id] = ev
        self.pools[island].append(cand.id)
        if ev.solved and self.solved is None:
            self.solved = cand.id
        return cand

    def solution_fields(self, cid: int) -> dict[str, str]:
        ev = self.evals[cid]
        return {"problem": self.ctx.problem.question, "solution": self.cands[cid].text,
                "fitness": _fmt(ev.fitness), "feedback": ev.feedback or NO_FEEDBACK}

    def proposal_prompt(self, parents: Sequence[int]) -> tuple[str, str]:
        """(prompt, op): recombination of the parents shown with their evaluations, or a fresh start."""
        p = self.p
        if not parents:
            return p.init_prompt.format(problem=self.ctx.problem.question), "init"
        shown = "\n\n".join(
            p.parent_template.format(index=k, **{key: v for key, v in self.solution_fields(cid).items()
                                                if key != "problem"})
            for k, cid in enumerate(parents, 1)
        )
        return p.recombine_prompt.format(problem=self.ctx.problem.question, parents=shown), "recombine"

    async def conversation(self, island: int, generation: int, parents: Sequence[int], seed: int) -> None:
        """A proposal (recombination of ``parents``, or a fresh one) and ``refine_turns`` critic→author
        turns, stopping as soon as the search must stop."""
        p = self.p
        content, op = self.proposal_prompt(parents)
        cur = await self.propose(content, seed=seed, island=island, generation=generation, op=op,
                                 parents=parents)
        for turn in range(p.refine_turns):
            if cur is None or self.stop():
                return
            f = self.solution_fields(cur.id)
            crit = await self.call(p.critic_prompt.format(**f), seed=seed + 1 + 2 * turn,
                                   max_tokens=p.critic_max_tokens, system=False)
            if crit is None or self.stop():
                return
            cur = await self.propose(p.author_prompt.format(**f, critique=crit.text), seed=seed + 2 + 2 * turn,
                                     island=island, generation=generation, op="refine", parents=[cur.id],
                                     critique=crit.text)

    # --- between generations -----------------------------------------------------------------------

    def migrate(self, generation: int) -> list[dict[str, int]]:
        """Copy each island's ``migrants`` best into the next island (ring order, from a snapshot,
        no duplicates); one record per candidate copied."""
        moved: list[dict[str, int]] = []
        snapshot = [list(pool) for pool in self.pools]
        for i, pool in enumerate(snapshot):
            dest = (i + 1) % len(self.pools)
            for cid in self.ranked(pool)[: self.p.migrants]:
                if cid not in self.pools[dest]:
                    self.pools[dest].append(cid)
                    moved.append({"generation": generation, "from": i, "to": dest, "candidate": cid})
        return moved

    def reset_worst(self, generation: int, n: int) -> list[dict[str, Any]]:
        """Restart the ``n`` islands with the worst best fitness (ties: the later island) from the
        ``reset_top`` best candidates overall; one record per island reset."""
        def island_key(i: int) -> tuple[float, int]:
            return (max((self.fitness(c) for c in self.pools[i]), default=-math.inf), -i)

        worst = sorted(range(len(self.pools)), key=island_key)[:n]
        top = self.ranked(list(self.cands))[: self.p.reset_top]
        resets: list[dict[str, Any]] = []
        for i in sorted(worst):
            self.pools[i] = list(top)
            resets.append({"generation": generation, "island": i, "candidates": list(top)})
        return resets
