"""Self-debugging with execution feedback (Chen et al. 2024, "Teaching Large Language Models to
Self-Debug"; unit-test feedback).

``n`` chains run in parallel. Each starts with a sampled program, which runs on the public tests
(the docstring's examples) in the sandbox. While a chain's latest program fails a test and it has
turns left, the conversation continues: the model's reply, then a user turn with the failing test and
its error (``feedback_prompt``: ``{test}``, ``{error}``), asking for the whole corrected function.
A chain stops when its program passes every public test, after ``turns`` revisions, or when the
budget is spent; a problem without public tests gets no feedback (one attempt per chain).

Selection over every attempt of every chain: most public tests passed; ties go to the lowest chain,
then its earliest attempt. Revision ``r`` of chain ``i`` is seeded ``base + i * turns + r``, so runs
are reproducible whatever order attempts finish in. Candidates carry ``parent`` (the attempt they revise), ``score`` (fraction of public tests
passed) and ``extra = {"chain", "revision", "public"}``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.execution import TestResult, public_tests
from ttscale.core.registry import check_template, param
from ttscale.core.types import Candidate, GenerationRequest, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.code_common import passed, run_each, sample_programs
from ttscale.strategies.turn import Temperature

FEEDBACK_PROMPT = (
    "The code above fails this test:\n```python\n{test}\n```\n{error}\n"
    "Find the bug and fix it. Reply with the whole corrected function in one ```python code block."
)
"""Default feedback turn: ``{test}`` (the first failing test) and ``{error}`` (what happened)."""

NO_CODE = "Your reply has no Python code block. Reply with the whole function in one ```python code block."


@dataclass(frozen=True)
class SelfDebugParams:
    n: int = param(4, "parallel chains")
    turns: int = param(2, "at most this many revisions per chain")
    temperature: Temperature = param(0.8, "sampling temperature, or turn (TURN: the entropy turning point)")
    top_p: float = param(0.95, "nucleus sampling")
    max_tokens: int = param(768, "max generated tokens per attempt")
    time_limit: float = param(3.0, "seconds per public test")
    feedback_prompt: str = param(FEEDBACK_PROMPT, "feedback turn ({test}, {error})")

    def __post_init__(self) -> None:
        check_template("feedback_prompt", self.feedback_prompt, ("test", "error"))
        if self.turns < 0:
            raise ValueError(f"turns must be >= 0, got {self.turns}")


def feedback(p: SelfDebugParams, cand: Candidate, results: list[TestResult] | None) -> str | None:
    """The next user turn for a chain, or None when its program passes everything."""
    if cand.answer is None:
        return NO_CODE
    failing = next((r for r in results or () if not r.passed), None)
    if failing is None:
        return None
    error = {"timeout": "It ran out of time: ", "crash": "The process crashed: "}.get(failing.status, "")
    return p.feedback_prompt.format(test=failing.test, error=(error + failing.message).strip() or failing.status)


async def _chain(ctx: Context, p: SelfDebugParams, chain: int, first: Candidate, tests: list[str],
                 out: list[tuple[Candidate, list[TestResult] | None]], seed: int, t: float) -> None:
    cand = first.with_(extra={"chain": chain, "revision": 0})
    history = [dict(m) for m in ctx.messages()]
    for revision in range(p.turns + 1):
        results = (await run_each(ctx, [cand], tests, p.time_limit))[0]
        out.append((cand, results))
        turn = feedback(p, cand, results) if tests else None
        if turn is None or revision == p.turns:
            return
        history += [{"role": "assistant", "content": cand.text}, {"role": "user", "content": turn}]
        req = GenerationRequest(messages=tuple(history), temperature=t, top_p=p.top_p,
                                max_tokens=p.max_tokens, seed=(seed + chain * p.turns + revision) % 2**31)
        try:
            (c,) = await ctx.generate(req)
        except BudgetExhausted:
            return
        cand = ctx.to_candidate(c, parent=cand.id).with_(extra={"chain": chain, "revision": revision + 1})


@strategy("self_debug", SelfDebugParams, "code: revise programs with failing-test feedback (Self-Debug)")
async def self_debug(problem: Problem, ctx: Context, p: SelfDebugParams) -> Outcome:
    drawn = await sample_programs(ctx, p)
    if drawn is None:
        return Outcome(None, None, [])
    firsts, t = drawn
    tests = public_tests(problem)
    done: list[tuple[Candidate, list[TestResult] | None]] = []
    # revision seeds by (chain, revision), not by arrival order: a run is reproducible, and chain i
    # revises the same way at any n (a generation cache then shares revisions across n)
    seed = ctx.rng.randrange(2**31)
    await asyncio.gather(*(_chain(ctx, p, i, c, tests, done, seed, t) for i, c in enumerate(firsts)))
    done.sort(key=lambda cr: (cr[0].extra["chain"], cr[0].extra["revision"]))
    total = len(tests)
    cands = [c.with_(score=(passed(r) / total) if total else None,
                     extra={**c.extra, "public": f"{passed(r)}/{total}"}) for c, r in done]
    scored = [(passed(r), -i) for i, (c, r) in enumerate(done) if c.answer is not None]
    if not scored:
        return Outcome(None, None, cands, {"public_tests": total})
    best = -max(scored)[1]
    return Outcome(cands[best].answer, cands[best], cands, {"public_tests": total})
