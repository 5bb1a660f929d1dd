"""Shared by the code strategies: running candidates through ``ctx.executor`` (the sandbox, never this
process) and asking the model for tests."""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import Sequence
from typing import Any

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted, ConfigError
from ttscale.core.execution import CodeExecutor, TestResult, is_code_problem, program_for
from ttscale.core.types import Candidate, GenerationRequest
from ttscale.strategies.turn import resolve_temperature

TEST_PROMPT = (
    "Here is a Python function to be written:\n```python\n{prompt}\n```\n"
    "Do not write the function. Write {k} different test cases for `{entry_point}` as Python assert "
    "statements, one per line, each of the form `assert {entry_point}(...) == ...`, in one ```python "
    "block. Cover ordinary and edge cases; work out each expected value carefully."
)
"""Default test-generation prompt: ``{prompt}`` (the function header and docstring), ``{k}``,
``{entry_point}``."""


def executor(ctx: Context) -> CodeExecutor:
    """The context's sandbox executor; a ConfigError naming the fix when the run has none."""
    if ctx.executor is None or not is_code_problem(ctx.problem):
        raise ConfigError("this strategy runs programs: use a code dataset (--dataset humaneval or a "
                          "HumanEval-style .jsonl with prompt, entry_point and test)")
    return ctx.executor


async def sample_programs(ctx: Context, p: Any) -> tuple[list[Candidate], float] | None:
    """``p.n`` sampled programs (``p.temperature``, a number or ``"turn"``; ``p.top_p``, ``p.max_tokens``)
    after checking the run can execute them, with the temperature they were drawn at (TURN resolved
    once, for the strategy's later requests); None when the budget is already spent."""
    executor(ctx)
    t = await resolve_temperature(ctx, p.temperature)
    try:
        return await ctx.sample(p.n, temperature=t, top_p=p.top_p, max_tokens=p.max_tokens), t
    except BudgetExhausted:
        return None


def entry_point(ctx: Context) -> str:
    return str(ctx.problem.metadata["entry_point"])


async def run_each(ctx: Context, cands: Sequence[Candidate], tests: Sequence[str],
                   time_limit: float) -> list[list[TestResult] | None]:
    """Each candidate's program run on ``tests`` (None for a candidate without a program, or when
    there are no tests), concurrently, bounded by the executor's pool."""
    ex = executor(ctx)

    async def one(c: Candidate) -> list[TestResult] | None:
        if c.answer is None or not tests:
            return None
        return await ex.run_tests(program_for(ctx.problem, c.answer), list(tests), time_limit)

    return list(await asyncio.gather(*(one(c) for c in cands)))


def passed(results: Sequence[TestResult] | None) -> int:
    return sum(r.passed for r in results or ())


def call_of(test: str, ep: str) -> str | None:
    """The ``ep(...)`` call a test checks (``assert ep(x) == y`` -> ``ep(x)``), else None."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    node = tree.body[0].test
    if isinstance(node, ast.Compare):
        node = node.left
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == ep:
        return ast.unparse(node)
    return None


def parse_tests(text: str, ep: str, limit: int) -> list[str]:
    """Assert statements about ``ep`` in a model's reply: each ``assert`` up to the next one, the end
    of its line or a code fence, kept when it parses on its own (duplicates dropped)."""
    out: list[str] = []
    for m in re.finditer(r"\bassert\s.*?(?=\bassert\s|\n|```|$)", text):
        s = _longest_parsing(m.group(0).strip().rstrip(";").strip(), ep)
        if s is not None and s not in out:
            out.append(s)
        if len(out) >= limit:
            break
    return out


def _longest_parsing(s: str, ep: str) -> str | None:
    """``s``, or its longest prefix ending at a space, that is an assert about ``ep`` (a line whose
    line breaks were lost: ``assert f(1) == 2 print(f(1))``)."""
    words = s.split(" ")
    for cut in range(len(words), max(1, len(words) - 30), -1):
        head = " ".join(words[:cut]).rstrip(";").strip()
        if call_of(head, ep) is not None:
            return head
    return None


async def generate_tests(ctx: Context, *, samples: int, per_sample: int, temperature: float,
                         max_tokens: int, limit: int, template: str = TEST_PROMPT) -> list[str]:
    """Model-written tests: ``samples`` replies to the test prompt, their asserts pooled (duplicates
    dropped, at most ``limit``). Charged as policy generations; none when the budget is spent."""
    if samples < 1:
        return []
    ep = entry_point(ctx)
    head = str(ctx.problem.metadata.get("code_prompt") or ctx.problem.question)
    content = template.format(prompt=head.strip("\n"), k=per_sample, entry_point=ep)
    req = GenerationRequest(messages=({"role": "user", "content": content},), n=samples,
                            temperature=temperature, max_tokens=max_tokens)
    try:
        outs = await ctx.generate(req)
    except BudgetExhausted:
        return []
    tests: list[str] = []
    for c in outs:
        for t in parse_tests(c.text, ep, limit):
            if t not in tests and len(tests) < limit:
                tests.append(t)
    ctx.log("generated_tests", count=len(tests))
    return tests
