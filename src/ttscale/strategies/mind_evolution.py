"""Mind Evolution (Lee et al. 2025): genetic search in natural language with a programmatic evaluator.

An *evaluator* (:mod:`ttscale.evaluators`) gives every proposed solution a fitness and textual
feedback (``auto`` = ``meeting`` when the problem carries a meeting puzzle, else ``math``: the
``verifier``'s score, no feedback, solved only when ``solved_threshold`` is set and reached)::

    for each generation, until a solution is solved or the budget is spent:
        on every island, `population` conversations at once, each:
            parents = Boltzmann tournament over the island's pool (none in generation 0 or from an
                      empty pool): without replacement, P(c) ∝ exp((fitness(c) − best) / T)
            child   = the model recombines the parents, shown with fitness and feedback
                      (no parents: a fresh solution)
            `refine_turns` times: the critic says what to fix given the evaluator's feedback;
                      the author rewrites the solution with feedback and critique
            every solution (child or rewrite) is evaluated and joins the island's pool
        unless it was the last generation:
            migration: each island's `migrants` best are copied to the next island (ring order,
                       from a snapshot, no duplicates)
            every `reset_interval` generations (0 = never): the `reset_islands` islands with the
                       worst best fitness (at most islands − 1; ties: the later island) restart
                       from the `reset_top` best candidates overall
    answer = the best-fitness candidate so far (ties: the earliest)

Conversations in flight stop before their next call once the search must stop. Defaults are
scaled down for CPU: 2 islands × 2 conversations × 2 generations, 1 refinement turn, 2 parents,
1 migrant, reset every 3 generations (the paper: 4 islands × 5 conversations × 10 generations,
4 turns per conversation, up to 5 parents, 5 emigrants, 2 islands reset every 3 generations). With
the defaults one generation makes islands × population × (1 + 2·refine_turns) = 12 policy calls.

Cost. Every model call of the search itself (proposals, recombinations, critiques, rewrites) is a
*policy* call through ``ctx.generate`` and counts against ``--max-generations`` /
``--max-generated-tokens``; a model-based evaluator (``math``) charges its calls as verifier
tokens. Each request has an explicit seed drawn from ``ctx.rng`` before the generation starts, so
a run is reproducible even though its conversations run concurrently.

A candidate's ``answer`` is the evaluator's canonical answer when the evaluator reads answers
itself (``meeting``: the parsed schedule ``"Ana: 10, Ben: 12"``, None when no time was found),
else the answer space's extraction; its ``score`` is its fitness and its ``parent`` the first
parent (or the solution it rewrites). Prompts: :mod:`ttscale.strategies.evolution_prompts`
(``init_prompt`` {problem}; ``recombine_prompt`` {problem}, {parents}; ``parent_template``
{index}, {solution}, {fitness}, {feedback}; ``critic_prompt`` {problem}, {solution}, {fitness},
{feedback}; ``author_prompt`` the same plus {critique}). The system prompt precedes the
solution-writing prompts, not the critic's. Operators: :mod:`ttscale.strategies.evolution_ops`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ttscale.core.context import Context
from ttscale.core.registry import check_template, param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.evolution_ops import IslandSearch, boltzmann_select, check_evaluator, pick_evaluator
from ttscale.strategies.evolution_prompts import (
    AUTHOR_PROMPT,
    CRITIC_PROMPT,
    INIT_PROMPT,
    NO_FEEDBACK,
    PARENT_TEMPLATE,
    RECOMBINE_PROMPT,
    SOLUTION_KEYS,
)

__all__ = [
    "AUTHOR_PROMPT", "CRITIC_PROMPT", "INIT_PROMPT", "NO_FEEDBACK", "PARENT_TEMPLATE", "RECOMBINE_PROMPT",
    "MindEvolutionParams", "boltzmann_select", "mind_evolution", "pick_evaluator",
]


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
        check_evaluator(self.evaluator)
        check_template("init_prompt", self.init_prompt, ("problem",))
        check_template("recombine_prompt", self.recombine_prompt, ("problem", "parents"))
        check_template("parent_template", self.parent_template, ("index", *SOLUTION_KEYS[1:]))
        check_template("critic_prompt", self.critic_prompt, SOLUTION_KEYS)
        check_template("author_prompt", self.author_prompt, (*SOLUTION_KEYS, "critique"))


@strategy("mind_evolution", MindEvolutionParams,
          "Mind Evolution: islands, Boltzmann selection, LLM recombination, critic/author refinement")
async def mind_evolution(problem: Problem, ctx: Context, p: MindEvolutionParams) -> Outcome:
    ev = pick_evaluator(problem, p)
    s = IslandSearch(ctx, p, ev)
    best_fitness: list[list[float | None]] = []
    migrations: list[dict[str, int]] = []
    resets: list[dict[str, Any]] = []
    n_reset = min(p.reset_islands, p.islands - 1)
    generations_run = 0
    for g in range(p.generations):
        if s.stop():
            break
        # parents and seeds are drawn from ctx.rng here, in order, before any conversation runs
        conversations = [s.conversation(i, g, s.select_parents(i) if g > 0 else [], ctx.rng.randrange(2**30))
                         for i in range(p.islands) for _ in range(p.population)]
        await asyncio.gather(*conversations)
        generations_run = g + 1
        best_fitness.append(s.best_per_island())
        if s.stop() or g == p.generations - 1:
            break
        if p.islands > 1 and p.migrants:
            migrations += s.migrate(g)
        if p.reset_interval and n_reset and (g + 1) % p.reset_interval == 0:
            resets += s.reset_worst(g, n_reset)
    best = s.best()
    extra: dict[str, Any] = {
        "evaluator": ev.name, "solved": s.solved is not None, "generations": generations_run,
        "best_fitness": best_fitness, "migrations": migrations, "resets": resets,
        "stopped_by_budget": s.exhausted,
    }
    return Outcome(best.answer if best else None, best, [s.cands[c] for c in sorted(s.cands)], extra)
