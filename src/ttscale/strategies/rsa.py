"""Recursive self-aggregation, RSA (Venkatraman et al. 2025).

A population of N solutions is improved for T steps. Step 1 samples N solutions to the problem
(one request of ``n=N``). At every later step each of the N new members is made by the model from
K *distinct* members of the previous population, drawn at random with ``ctx.rng`` (seeded per run
and problem, so runs repeat), shown in ``aggregate_prompt``; with K=1 the member is a refinement of
one solution (``refine_prompt``). All N requests of a step go out concurrently. The answer is a
majority vote over the last population (equivalent answers grouped by ``ctx.answers``; ties go to
the answer seen first; the chosen candidate is the first member with it).

``rounds`` is T and counts the initial sampling as step 1, so ``rounds=1`` is plain self-consistency
and ``rounds=10`` makes 9 aggregation steps (the paper's defaults are N=16, K=4, T=10 at sampling
temperature 1.0; whether the paper's T counts the initial step is unverified, this is our reading).

Prompts: an aggregation request replaces the content of the problem's last user message (keeping
any system prompt) by ``aggregate_prompt`` (K>1) or ``refine_prompt`` (K=1), with placeholders
``{problem}`` (that content), ``{k}`` (the number of solutions shown) and ``{solutions}``: the K
members, each rendered with ``solution_prompt`` (``{index}`` from 1 and ``{text}``) and joined by
blank lines. Double literal braces (``{{ }}``). The prompt grows with ``K × max_tokens``; the
engine's context must hold it.

Budget: every request goes through ``ctx.generate``. When the initial request is clipped the
population is smaller (later steps keep that size, and K is capped by it). When a member's request
finds the budget spent, the step is cut short: the members made replace the previous population's
members at their positions, the others are carried over, and the run stops there, answering by
majority over that population. Candidates: every member of every step, ``parent`` = the first of
its K sources, ``extra = {"round": t, "sources": [ids]}``; ``extra["rounds"]`` lists each step's
population ids and answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import check_template, param
from ttscale.core.types import Candidate, Completion, GenerationRequest, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.revisions import with_user_content
from ttscale.strategies.voting import vote

AGGREGATE_PROMPT = (
    "{problem}\n\n"
    "Below are {k} candidate solutions to this problem. Some of them may be wrong.\n\n"
    "{solutions}\n\n"
    "Write one better solution: check each candidate's reasoning, keep what is correct, fix the "
    "mistakes and combine the useful ideas. Solve the problem step by step and end with the final "
    "answer in the form \\boxed{{ANSWER}}."
)
"""Default aggregation prompt (K > 1): ``{problem}``, ``{k}``, ``{solutions}``."""

REFINE_PROMPT = (
    "{problem}\n\n"
    "Below is a candidate solution to this problem. It may be wrong.\n\n"
    "{solutions}\n\n"
    "Write an improved solution: check the reasoning, fix any mistake, and solve the problem step by "
    "step. End with the final answer in the form \\boxed{{ANSWER}}."
)
"""Default refinement prompt (K = 1): ``{problem}``, ``{k}``, ``{solutions}``."""

SOLUTION_PROMPT = "Solution {index}:\n{text}"
"""Default rendering of one member in the prompt: ``{index}`` (1-based) and ``{text}``."""

_KEYS = ("problem", "k", "solutions")


@dataclass(frozen=True)
class RSAParams:
    n: int = param(16, "N: population size")
    k: int = param(4, "K: distinct members aggregated into each new member (1 = refine)")
    rounds: int = param(10, "T: population steps, the initial sampling included (1 = majority of N samples)")
    temperature: float = param(1.0, "sampling temperature")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per member")
    aggregate_prompt: str = param(AGGREGATE_PROMPT, "aggregation prompt (K > 1) with {problem}, {k}, {solutions}")
    refine_prompt: str = param(REFINE_PROMPT, "refinement prompt (K = 1) with {problem}, {k}, {solutions}")
    solution_prompt: str = param(SOLUTION_PROMPT, "one member in the prompt: {index}, {text}")

    def __post_init__(self) -> None:
        for name in ("n", "k", "rounds", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k > self.n:
            raise ValueError(f"k={self.k} must be <= n={self.n} (K distinct members of the population)")
        check_template("aggregate_prompt", self.aggregate_prompt, _KEYS)
        check_template("refine_prompt", self.refine_prompt, _KEYS)
        check_template("solution_prompt", self.solution_prompt, ("index", "text"))


def aggregate_request(ctx: Context, p: RSAParams, sources: Sequence[Candidate]) -> GenerationRequest:
    """The request that aggregates ``sources`` (in the order drawn) into one new member."""
    shown = "\n\n".join(p.solution_prompt.format(index=i + 1, text=c.text) for i, c in enumerate(sources))
    tpl = p.refine_prompt if len(sources) == 1 else p.aggregate_prompt
    content = tpl.format(problem=ctx.problem.question, k=len(sources), solutions=shown)
    return GenerationRequest(messages=with_user_content(ctx, content), temperature=p.temperature,
                             top_p=p.top_p, max_tokens=p.max_tokens)


async def _aggregate(ctx: Context, p: RSAParams, sources: Sequence[Candidate]) -> Completion | None:
    try:
        (c,) = await ctx.generate(aggregate_request(ctx, p, sources))
    except BudgetExhausted:
        return None
    return c


@strategy("rsa", RSAParams, "recursive self-aggregation: a population refined by aggregating K members")
async def rsa(problem: Problem, ctx: Context, p: RSAParams) -> Outcome:
    everyone: list[Candidate] = []
    rounds: list[dict[str, Any]] = []
    try:
        pop = await ctx.sample(p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens)
    except BudgetExhausted:
        pop = []
    pop = [c.with_(extra={"round": 1, "sources": []}) for c in pop]
    everyone += pop
    if pop:
        rounds.append({"round": 1, "population": [c.id for c in pop], "answers": [c.answer for c in pop]})
    for t in range(2, p.rounds + 1):
        if not pop:
            break
        k = min(p.k, len(pop))
        subsets = [[pop[j] for j in ctx.rng.sample(range(len(pop)), k)] for _ in range(len(pop))]
        made = await asyncio.gather(*(_aggregate(ctx, p, s) for s in subsets))
        new: list[Candidate] = []
        carried: list[int] = []
        for old, srcs, c in zip(pop, subsets, made, strict=True):
            if c is None:
                new.append(old)
                carried.append(old.id)
                continue
            cand = ctx.to_candidate(c, parent=srcs[0].id)
            cand = cand.with_(extra={"round": t, "sources": [s.id for s in srcs]})
            everyone.append(cand)
            new.append(cand)
        if len(carried) == len(pop):  # nothing was made: the budget is spent
            break
        pop = new
        row: dict[str, Any] = {"round": t, "population": [c.id for c in pop], "answers": [c.answer for c in pop]}
        if carried:
            row["carried"] = carried
        rounds.append(row)
        if carried:
            break
    extra: dict[str, Any] = {"rounds": rounds, "stopped_by_budget": ctx.meter.stopped_by_budget}
    if not pop:
        return Outcome(None, None, [], extra)
    v = await vote(ctx, pop)
    extra["votes"] = v.votes
    return Outcome(v.answer, v.chosen, everyone, extra)
