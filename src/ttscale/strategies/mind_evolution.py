"""Mind Evolution (Lee et al. 2025): genetic search in natural language with a programmatic evaluator.

An *evaluator* (:mod:`ttscale.evaluators`) gives every proposed solution a fitness and textual
feedback. The search keeps ``islands`` separate populations and runs ``generations`` generations;
in each, every island runs ``population`` *conversations* concurrently:

1. **Proposal.** Generation 0 (or an island left empty): a fresh solution from ``init_prompt``.
   Later: ``parents`` parents drawn from the island's pool by *Boltzmann tournament selection*
   (without replacement, P(candidate) ∝ exp((fitness − best) / selection_temperature), draws from
   ``ctx.rng``), shown with their fitness and feedback in ``recombine_prompt`` (LLM recombination);
   the model writes one child.
2. **Refinement.** ``refine_turns`` critic→author turns: the critic (``critic_prompt``) sees the
   latest solution and the evaluator's feedback and says what to fix; the author
   (``author_prompt``) rewrites the solution with the feedback and the critique.

Every solution (proposal or rewrite) is evaluated and joins its island's pool. After each
generation but the last: **migration**, the ``migrants`` best of each island are copied into the
next island (ring order, from a snapshot, no duplicates); every ``reset_interval`` generations
(0 = never) an **island reset**: the ``reset_islands`` islands with the worst best fitness (at most
islands − 1; ties: the later island) restart from the ``reset_top`` best candidates overall.
The search stops as soon as the evaluator says a solution is solved (conversations in flight stop
before their next call) or the budget is spent (``BudgetExhausted`` on any call), and answers with
the best-fitness candidate so far (ties: the earliest).

Defaults are scaled down for CPU: 2 islands × 2 conversations × 2 generations, 1 refinement turn,
2 parents, 1 migrant, reset every 3 generations (the paper: 4 islands × 5 conversations × 10
generations, 4 turns per conversation, up to 5 parents, 5 emigrants, 2 islands reset every 3
generations). With the defaults one generation makes islands × population × (1 + 2·refine_turns)
= 12 policy calls.

Cost. Every model call of the search itself (proposals, recombinations, critiques, rewrites) is a
*policy* call through ``ctx.generate`` and counts against ``--max-generations`` /
``--max-generated-tokens``; a model-based evaluator (``math``: a verifier's score) charges its
calls as verifier tokens. Each request has an explicit seed drawn from ``ctx.rng`` before the
generation starts, so a run is reproducible even though its conversations run concurrently.

Evaluator (``evaluator``): ``auto`` = ``meeting`` when the problem carries a meeting puzzle
(``--dataset meeting``), else ``math`` (fitness = the ``verifier``'s score, no feedback, solved
only when ``solved_threshold`` is set and reached). A candidate's ``answer`` is the evaluator's
canonical answer when the evaluator reads answers itself (``meeting``: the parsed schedule
``"Ana: 10, Ben: 12"``, None when no time was found), else the answer space's extraction; its ``score`` is its fitness and its ``parent`` the first parent (or the
solution it rewrites).

Prompts (module constants, overridable with ``-p NAME=...``): ``init_prompt`` {problem};
``recombine_prompt`` {problem}, {parents}; ``parent_template`` (one parent inside {parents})
{index}, {solution}, {fitness}, {feedback}; ``critic_prompt`` {problem}, {solution}, {fitness},
{feedback}; ``author_prompt`` the same plus {critique}. Empty feedback shows as
:data:`NO_FEEDBACK`. The system prompt (``ctx.system_prompt``) precedes the solution-writing prompts,
not the critic's.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.evaluation import Evaluation, Evaluator
from ttscale.core.plugins import load_evaluators, make_evaluator
from ttscale.core.registry import check_template, param
from ttscale.core.types import Candidate, Completion, GenerationRequest, Problem
from ttscale.strategies.base import Outcome, strategy

INIT_PROMPT = (
    "Solve the following problem. Write a complete solution in the format the problem asks for.\n\n"
    "Problem:\n{problem}"
)
"""First proposals; placeholder ``{problem}``."""

RECOMBINE_PROMPT = (
    "Problem:\n{problem}\n\n"
    "Here are earlier proposed solutions, each with the evaluation it received:\n\n{parents}\n\n"
    "Write one new, complete solution that keeps what is right in them and fixes what the "
    "evaluations point out. Use the format the problem asks for."
)
"""Recombination; placeholders ``{problem}``, ``{parents}`` (the parents rendered with
:data:`PARENT_TEMPLATE`, separated by blank lines)."""

PARENT_TEMPLATE = "Proposed solution {index} (score {fitness}):\n{solution}\nEvaluation:\n{feedback}"
"""One parent in ``{parents}``; placeholders ``{index}`` (1-based), ``{solution}``, ``{fitness}``,
``{feedback}``."""

CRITIC_PROMPT = (
    "Problem:\n{problem}\n\n"
    "Proposed solution:\n{solution}\n\n"
    "An automatic checker gave it the score {fitness} and reported:\n{feedback}\n\n"
    "You are a critic. Explain briefly what is wrong with this solution and how to fix it. "
    "Do not write a new solution."
)
"""Critic turn; placeholders ``{problem}``, ``{solution}``, ``{fitness}``, ``{feedback}``."""

AUTHOR_PROMPT = (
    "Problem:\n{problem}\n\n"
    "Your previous solution:\n{solution}\n\n"
    "An automatic checker gave it the score {fitness} and reported:\n{feedback}\n\n"
    "A critic commented:\n{critique}\n\n"
    "Write an improved, complete solution that fixes these problems. Use the format the problem asks for."
)
"""Author turn; placeholders ``{problem}``, ``{solution}``, ``{fitness}``, ``{feedback}``,
``{critique}``."""

NO_FEEDBACK = "(no detailed feedback)"

_SOLUTION_KEYS = ("problem", "solution", "fitness", "feedback")


@dataclass(frozen=True)
class MindEvolutionParams:
    islands: int = param(2, "number of islands (separate populations)")
    population: int = param(2, "conversations per island per generation")
    generations: int = param(2, "number of generations")
    refine_turns: int = param(1, "critic->author refinement turns after each proposal")
    parents: int = param(2, "parents per recombination (Boltzmann tournament selection)")
    selection_temperature: float = param(1.0, "Boltzmann temperature of parent selection (> 0)")
    migrants: int = param(1, "best candidates copied to the next island after each generation")
    reset_interval: int = param(3, "reset the worst islands every this many generations (0 = never)")
    reset_islands: int = param(1, "islands reset each time (at most islands - 1)")
    reset_top: int = param(2, "a reset island restarts from this many best candidates overall")
    evaluator: str = param("auto", "evaluator: auto (meeting if the problem is a meeting puzzle, else math), meeting, math")
    verifier: str = param("llm_judge", "verifier scoring solutions for the math evaluator")
    solved_threshold: float | None = param(None, "math evaluator: stop when the score reaches this (None = never)")
    temperature: float = param(0.8, "sampling temperature of every model call")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(512, "max generated tokens per solution")
    critic_max_tokens: int = param(256, "max generated tokens per critique")
    init_prompt: str = param(INIT_PROMPT, "first-proposal prompt with {problem}")
    recombine_prompt: str = param(RECOMBINE_PROMPT, "recombination prompt with {problem} and {parents}")
    parent_template: str = param(PARENT_TEMPLATE, "one parent in {parents}: {index}, {solution}, {fitness}, {feedback}")
    critic_prompt: str = param(CRITIC_PROMPT, "critic prompt with {problem}, {solution}, {fitness}, {feedback}")
    author_prompt: str = param(AUTHOR_PROMPT, "author prompt: the critic's placeholders and {critique}")

    def __post_init__(self) -> None:
        for name in ("islands", "population", "generations", "parents", "max_tokens", "critic_max_tokens",
                     "reset_top"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("refine_turns", "migrants", "reset_interval", "reset_islands"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.selection_temperature > 0:
            raise ValueError(f"selection_temperature must be > 0, got {self.selection_temperature}")
        names = load_evaluators().names()
        if self.evaluator != "auto" and self.evaluator not in names:
            raise ValueError(f"evaluator={self.evaluator!r} is unknown; known: auto, {', '.join(names)}")
        check_template("init_prompt", self.init_prompt, ("problem",))
        check_template("recombine_prompt", self.recombine_prompt, ("problem", "parents"))
        check_template("parent_template", self.parent_template, ("index", *_SOLUTION_KEYS[1:]))
        check_template("critic_prompt", self.critic_prompt, _SOLUTION_KEYS)
        check_template("author_prompt", self.author_prompt, (*_SOLUTION_KEYS, "critique"))


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


def pick_evaluator(problem: Problem, p: MindEvolutionParams) -> Evaluator:
    name = p.evaluator
    if name == "auto":
        name = "meeting" if "meeting" in (problem.metadata or {}) else "math"
    return make_evaluator(name, {"verifier": p.verifier, "solved_threshold": p.solved_threshold})


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass
class _Search:
    ctx: Context
    p: MindEvolutionParams
    evaluator: Evaluator
    cands: dict[int, Candidate] = field(default_factory=dict)
    evals: dict[int, Evaluation] = field(default_factory=dict)
    pools: list[list[int]] = field(default_factory=list)
    solved: int | None = None
    exhausted: bool = False

    def stop(self) -> bool:
        return self.solved is not None or self.exhausted

    def fitness(self, cid: int) -> float:
        return self.evals[cid].fitness

    def ranked(self, ids: Sequence[int]) -> list[int]:
        """Best fitness first; ties: the earlier candidate."""
        return sorted(ids, key=lambda c: (-self.fitness(c), c))

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

    async def conversation(self, island: int, generation: int, parents: Sequence[int], seed: int) -> None:
        p = self.p
        if parents:
            shown = "\n\n".join(
                p.parent_template.format(index=k, **{key: v for key, v in self.solution_fields(cid).items()
                                                    if key != "problem"})
                for k, cid in enumerate(parents, 1)
            )
            content = p.recombine_prompt.format(problem=self.ctx.problem.question, parents=shown)
            op = "recombine"
        else:
            content = p.init_prompt.format(problem=self.ctx.problem.question)
            op = "init"
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


@strategy("mind_evolution", MindEvolutionParams,
          "Mind Evolution: islands, Boltzmann selection, LLM recombination, critic/author refinement")
async def mind_evolution(problem: Problem, ctx: Context, p: MindEvolutionParams) -> Outcome:
    ev = pick_evaluator(problem, p)
    s = _Search(ctx, p, ev, pools=[[] for _ in range(p.islands)])
    best_fitness: list[list[float | None]] = []
    migrations: list[dict[str, int]] = []
    resets: list[dict[str, Any]] = []
    generations_run = 0
    for g in range(p.generations):
        if s.stop():
            break
        jobs = []
        for i in range(p.islands):
            for _ in range(p.population):
                pool = s.pools[i]
                parents: list[int] = []
                if g > 0 and pool:
                    picks = boltzmann_select(ctx.rng, [s.fitness(c) for c in pool], p.parents,
                                             p.selection_temperature)
                    parents = [pool[k] for k in picks]
                jobs.append(s.conversation(i, g, parents, ctx.rng.randrange(2**30)))
        await asyncio.gather(*jobs)
        generations_run = g + 1
        best_fitness.append([max((s.fitness(c) for c in pool), default=None) for pool in s.pools])
        if s.stop() or g == p.generations - 1:
            break
        if p.islands > 1 and p.migrants:
            snapshot = [list(pool) for pool in s.pools]
            for i, pool in enumerate(snapshot):
                dest = (i + 1) % p.islands
                for cid in s.ranked(pool)[: p.migrants]:
                    if cid not in s.pools[dest]:
                        s.pools[dest].append(cid)
                        migrations.append({"generation": g, "from": i, "to": dest, "candidate": cid})
        n_reset = min(p.reset_islands, p.islands - 1)
        if p.reset_interval and n_reset and (g + 1) % p.reset_interval == 0:
            def island_key(i: int) -> tuple[float, int]:
                return (max((s.fitness(c) for c in s.pools[i]), default=-math.inf), -i)

            worst = sorted(range(p.islands), key=island_key)[:n_reset]
            top = s.ranked(list(s.cands))[: p.reset_top]
            for i in sorted(worst):
                s.pools[i] = list(top)
                resets.append({"generation": g, "island": i, "candidates": list(top)})
    cands = [s.cands[c] for c in sorted(s.cands)]
    extra: dict[str, Any] = {
        "evaluator": ev.name, "solved": s.solved is not None, "generations": generations_run,
        "best_fitness": best_fitness, "migrations": migrations, "resets": resets,
        "stopped_by_budget": s.exhausted,
    }
    if not cands:
        return Outcome(None, None, [], extra)
    best = s.cands[s.ranked(list(s.cands))[0]]
    return Outcome(best.answer, best, cands, extra)
