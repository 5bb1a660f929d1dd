"""Best-of-N filtered by public tests (Li et al. 2022, AlphaCode; Chen et al. 2021, Codex): sample N
programs, run each on the problem's public tests (the docstring's examples) in the sandbox, and keep
those that pass them all; answer with the first survivor. When none passes every test, the program
passing the most wins (ties: the earliest sample); a problem without public tests answers with the
first sample that has a program.

Each candidate's ``score`` is its fraction of public tests passed; ``extra["public"]`` is
``passed/total``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.execution import public_tests
from ttscale.core.registry import param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.code_common import passed, run_each, sample_programs
from ttscale.strategies.turn import Temperature


@dataclass(frozen=True)
class CodeFilterParams:
    n: int = param(8, "number of sampled programs")
    temperature: Temperature = param(0.8, "sampling temperature, or turn (TURN: the entropy turning point)")
    top_p: float = param(0.95, "nucleus sampling")
    max_tokens: int = param(768, "max generated tokens per program")
    time_limit: float = param(3.0, "seconds per public test")


@strategy("code_filter", CodeFilterParams, "code: best of N programs by the public (docstring) tests")
async def code_filter(problem: Problem, ctx: Context, p: CodeFilterParams) -> Outcome:
    drawn = await sample_programs(ctx, p)
    if drawn is None:
        return Outcome(None, None, [])
    cands = drawn[0]
    tests = public_tests(problem)
    results = await run_each(ctx, cands, tests, p.time_limit)
    total = len(tests)
    cands = [c.with_(score=(passed(r) / total) if total else None,
                     extra={**c.extra, "public": f"{passed(r)}/{total}"})
             for c, r in zip(cands, results, strict=True)]
    with_program = [i for i, c in enumerate(cands) if c.answer is not None]
    if not with_program:
        return Outcome(None, None, cands, {"survivors": 0, "public_tests": total})
    best = max(with_program, key=lambda i: (passed(results[i]), -i))
    survivors = sum(1 for i in with_program if total and passed(results[i]) == total)
    return Outcome(cands[best].answer, cands[best], cands, {"survivors": survivors, "public_tests": total})
