"""Code answers: the program in a solution (the answer space), its grade by the gold tests, and the
``public_tests`` verifier. Every program runs through a :class:`~ttscale.core.execution.CodeExecutor`
(the sandbox), never in this process.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ttscale.core.errors import ConfigError
from ttscale.core.execution import GOLD_KEY, CodeExecutor, is_code_problem, program_for, public_tests
from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem
from ttscale.verifiers.base import verifier

if TYPE_CHECKING:
    from ttscale.core.context import Context

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGS = ("", "python", "py", "python3")


def extract_program(text: str) -> str | None:
    """The program in a solution: the last fenced Python block that defines a function (else the
    last Python block; an unclosed block, cut by the token limit, counts); without fences, the whole
    text when it parses as Python. None when there is no code."""
    blocks = [body.strip() for lang, body in _FENCE.findall(text) if lang.lower() in _CODE_LANGS]
    blocks = [b for b in blocks if b]
    if blocks:
        defining = [b for b in blocks if re.search(r"^\s*def\s", b, re.MULTILINE)]
        return (defining or blocks)[-1]
    body = text.strip()
    if not body or ("\n" not in body and not body.startswith(("def ", "return ", "import "))):
        return None
    try:
        ast.parse(body)
    except SyntaxError:
        return None
    return body


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module) and body
                and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return tree


def normalize_program(code: str) -> str:
    """A canonical form: the syntax tree without comments, docstrings or formatting (the code with
    runs of whitespace collapsed when it does not parse)."""
    try:
        return ast.dump(_strip_docstrings(ast.parse(code)))
    except (SyntaxError, ValueError, RecursionError):
        return " ".join(code.split())


class CodeAnswers:
    """The answer space of code problems: the answer is the extracted program; answers group by
    their normalised syntax tree (grouping by *behaviour* needs the problem and the sandbox: the
    ``code_behavior_vote`` strategy does that)."""

    def extract(self, text: str) -> str | None:
        return extract_program(text)

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        labels: dict[str, int] = {}
        out: list[int | None] = []
        for a in answers:
            if a is None:
                out.append(None)
                continue
            out.append(labels.setdefault(normalize_program(a), len(labels)))
        return out


class CodeGrader:
    """Correct when the program passes the problem's gold tests (run in the sandbox); ``None`` for a
    problem that is not a code problem. Results are cached per (problem, program)."""

    name = "code"

    def __init__(self, executor: CodeExecutor, time_limit: float = 10.0) -> None:
        self.executor = executor
        self.time_limit = float(time_limit)
        self._cache: dict[tuple[str, str], bool] = {}

    async def grade(self, problem: Problem, answer: str | None) -> bool | None:
        gold = (problem.metadata or {}).get(GOLD_KEY)
        if not is_code_problem(problem) or not gold:
            return None
        if answer is None:
            return False
        key = (problem.id, answer)
        if key not in self._cache:
            results = await self.executor.run_tests(program_for(problem, answer), list(gold), self.time_limit)
            self._cache[key] = bool(results) and all(r.passed for r in results)
        return self._cache[key]


def executor_of(ctx: Context) -> CodeExecutor:
    ex = getattr(ctx, "executor", None)
    if ex is None:
        raise ConfigError("running code needs a sandbox executor (ctx.executor); use a code dataset "
                          "(--dataset humaneval or a HumanEval-style .jsonl)")
    return ex


class PublicTests(Verifier):
    """Scores a candidate by the fraction of the problem's public tests (its docstring examples) its
    program passes, in the sandbox; no program scores 0.0, a problem without public tests gives
    every program 0.5. Calls no model."""

    name = "public_tests"

    def __init__(self, time_limit: float = 3.0) -> None:
        self.time_limit = time_limit

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        import asyncio

        tests = public_tests(problem)
        ex = executor_of(ctx)

        async def one(c: Candidate) -> float:
            if c.answer is None:
                return 0.0
            if not tests:
                return 0.5
            res = await ex.run_tests(program_for(problem, c.answer), tests, self.time_limit)
            return sum(r.passed for r in res) / len(tests)

        return list(await asyncio.gather(*(one(c) for c in candidates)))


@dataclass(frozen=True)
class PublicTestsParams:
    time_limit: float = param(3.0, "seconds per test")


@verifier("public_tests", PublicTestsParams, "code: fraction of the docstring's example tests the program passes")
def make_public_tests(engine: Engine, params: PublicTestsParams) -> PublicTests:
    return PublicTests(params.time_limit)
