"""Sequential self-revision in parallel chains (Snell et al. 2024, "revisions").

Budget N attempts = P chains × S attempts per chain. Every chain starts with a plain sample of the
problem (all P first attempts go out as one request of ``n=P``); each later attempt asks the model to
revise, with up to ``history`` previous attempts of its own chain in the prompt (the most recent
ones, oldest first; Snell uses 4). The chains of one round go out concurrently.

Shape: ``ratio`` is the sequential:parallel ratio S/P. P = round(√(N / ratio)) clipped to [1, N] and
the N attempts are spread over the P chains as evenly as possible (the first chains one longer when
P does not divide N): ``ratio=1`` is √N × √N (Snell's good default), a large ratio one long chain,
a small one plain parallel sampling.

Selection: revisions also turn right answers wrong (Snell: ~38% of correct answers get revised into
wrong ones), so the last attempt is not taken on trust. The verifier scores every attempt, and the
answer is chosen over *all* attempts of all chains by ``select``:

- ``weighted`` (default): weighted best-of-N, verifier scores summed per equivalent answer; the
  heaviest answer wins, its best-scored attempt is chosen;
- ``best``: the single best-scored attempt (ties: the earliest);
- ``majority``: plain majority over the attempts' answers (no verifier call).

``extra["chain_best"]`` additionally records the within-chain weighted best-of-N pick of every
chain (Snell's hierarchical selection), so both levels can be inspected.

Prompts: the revision request replaces the content of the problem's last user message by
``revise_prompt`` (placeholders ``{problem}`` = that content and ``{attempts}`` = the previous
attempts, each rendered with ``attempt_prompt``: ``{index}`` = its number in the chain, from 1, and
``{text}``), keeping any system prompt. Literal braces in a template are doubled (``{{ }}``).
Override either from the CLI (``--param revise_prompt=...``) or a recipe. The prompt grows with
``history × max_tokens``; an engine's context must hold it.

Budget: every request goes through ``ctx.generate``. A clipped first request makes fewer chains; a
chain whose revision request finds the budget spent (``BudgetExhausted``) stops, and the strategy
answers from the attempts that exist. Candidates carry ``parent`` = the previous attempt of their
chain and ``extra = {"chain", "revision"}`` (revision 0 = the first attempt).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import check_template, param
from ttscale.core.types import Candidate, Completion, GenerationRequest, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.tree import by_score, counts_over, weighted_select
from ttscale.strategies.voting import Aggregate, scored, vote

REVISE_PROMPT = (
    "{problem}\n\n"
    "Here are previous attempts at this problem, oldest first. They may contain mistakes.\n\n"
    "{attempts}\n\n"
    "Write a new, corrected solution: check the reasoning of the attempts above, fix any error, and "
    "solve the problem step by step. End with the final answer in the form \\boxed{{ANSWER}}."
)
"""Default revision prompt: ``{problem}`` (the last user message) and ``{attempts}``."""

ATTEMPT_PROMPT = "Attempt {index}:\n{text}"
"""Default rendering of one previous attempt: ``{index}`` (1-based within the chain) and ``{text}``."""

Select = Literal["weighted", "best", "majority"]


def with_user_content(ctx: Context, content: str) -> tuple[dict[str, str], ...]:
    """The problem's messages (with the system prompt) with the last user message's content
    replaced by ``content`` (appended as a user message when there is none)."""
    msgs = [dict(m) for m in ctx.messages()]
    for m in reversed(msgs):
        if m.get("role") == "user":
            m["content"] = content
            break
    else:
        msgs.append({"role": "user", "content": content})
    return tuple(msgs)


def chain_shape(n: int, ratio: float) -> list[int]:
    """Attempts per chain for ``n`` attempts at sequential:parallel ratio ``ratio``."""
    chains = max(1, min(n, round(math.sqrt(n / ratio))))
    return counts_over(n, chains)


@dataclass(frozen=True)
class RevisionsParams:
    n: int = param(16, "N: total attempts (chains x attempts per chain)")
    ratio: float = param(1.0, "sequential:parallel ratio (attempts per chain / chains); 1 = sqrt(N) x sqrt(N)")
    history: int = param(4, "previous attempts of the chain shown to each revision (most recent)")
    temperature: float = param(0.7, "sampling temperature")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per attempt")
    select: Select = param("weighted", "final choice over all attempts: weighted (BoN), best, majority")
    verifier: str = param("llm_judge", "verifier that scores every attempt (not used by select=majority)")
    aggregate: Aggregate = param("outcome", "outcome score, or step scores aggregated by last/min/prod/mean")
    revise_prompt: str = param(REVISE_PROMPT, "revision prompt with {problem} and {attempts}")
    attempt_prompt: str = param(ATTEMPT_PROMPT, "one previous attempt in the revision prompt: {index}, {text}")
    logprobs: int = param(0, "top-k logprobs to request for every attempt (needed by the confidence verifier)")

    def __post_init__(self) -> None:
        for name in ("n", "history", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.logprobs < 0:
            raise ValueError(f"logprobs must be >= 0, got {self.logprobs}")
        if not self.ratio > 0 or math.isinf(self.ratio):
            raise ValueError(f"ratio must be a positive number, got {self.ratio}")
        check_template("revise_prompt", self.revise_prompt, ("problem", "attempts"))
        check_template("attempt_prompt", self.attempt_prompt, ("index", "text"))


def revise_request(ctx: Context, p: RevisionsParams, chain: Sequence[Candidate]) -> GenerationRequest:
    """The request for the next attempt of ``chain`` (its attempts so far, oldest first)."""
    shown = chain[-p.history:]
    first = len(chain) - len(shown) + 1
    attempts = "\n\n".join(p.attempt_prompt.format(index=first + i, text=c.text) for i, c in enumerate(shown))
    content = p.revise_prompt.format(problem=ctx.problem.question, attempts=attempts)
    return GenerationRequest(messages=with_user_content(ctx, content), temperature=p.temperature,
                             top_p=p.top_p, max_tokens=p.max_tokens, logprobs=p.logprobs or None)


async def _revise(ctx: Context, p: RevisionsParams, chain: list[Candidate]) -> Completion | None:
    try:
        (c,) = await ctx.generate(revise_request(ctx, p, chain))
    except BudgetExhausted:
        return None
    return c


@strategy("revisions", RevisionsParams, "parallel chains of sequential self-revisions; weighted best-of-N")
async def revisions(problem: Problem, ctx: Context, p: RevisionsParams) -> Outcome:
    lengths = chain_shape(p.n, p.ratio)
    try:
        firsts = await ctx.sample(len(lengths), temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                                  logprobs=p.logprobs or None)
    except BudgetExhausted:
        firsts = []
    chains = [[c.with_(extra={"chain": i, "revision": 0})] for i, c in enumerate(firsts)]
    alive = [i for i in range(len(chains)) if lengths[i] > 1]
    rounds = 1 if chains else 0
    while alive:
        made = await asyncio.gather(*(_revise(ctx, p, chains[i]) for i in alive))
        got_any = False
        for i, c in zip(alive, made, strict=True):  # ids in chain order, whatever finished first
            if c is not None:
                cand = ctx.to_candidate(c, parent=chains[i][-1].id)
                chains[i].append(cand.with_(extra={"chain": i, "revision": len(chains[i])}))
                got_any = True
        if got_any:
            rounds += 1
        alive = [i for i, cand in zip(alive, made, strict=True) if cand is not None and len(chains[i]) < lengths[i]]
    cands = [c for chain in chains for c in chain]
    cands.sort(key=lambda c: c.id)
    extra: dict[str, Any] = {
        "shape": {"chains": len(lengths), "lengths": lengths},
        "chains": [[c.id for c in chain] for chain in chains],
        "chain_answers": [[c.answer for c in chain] for chain in chains],
        "rounds": rounds,
        "stopped_by_budget": ctx.meter.stopped_by_budget,
    }
    if not cands:
        return Outcome(None, None, [], extra)
    if p.select == "majority":
        v = await vote(ctx, cands)
        extra["votes"] = v.votes
        return Outcome(v.answer, v.chosen, cands, extra)
    cands = await scored(ctx, cands, p.aggregate, p.verifier)
    by_id = {c.id: c for c in cands}
    chain_best = []
    for chain in chains:
        _, best_in_chain, _ = await weighted_select(ctx, [by_id[c.id] for c in chain])
        chain_best.append(best_in_chain.id if best_in_chain is not None else None)
    extra["chain_best"] = chain_best
    if p.select == "best":
        chosen = by_score(cands)[0]
        return Outcome(chosen.answer, chosen, cands, extra)
    answer, chosen, weights = await weighted_select(ctx, cands)
    extra["weights"] = weights
    return Outcome(answer, chosen, cands, extra)
