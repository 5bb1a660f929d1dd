"""Running untrusted programs against tests: the capability strategies, verifiers and graders use.

A strategy never runs model-written code itself: it asks ``ctx.executor`` (a :class:`CodeExecutor`),
which the runner sets to the sandbox (:mod:`ttscale.sandbox`) for code datasets. Tests are Python
source: a statement (``assert f(1) == 2``) passes when it runs without raising; an expression
(``f(1)``) also reports the ``repr`` of its value in :attr:`TestResult.value`, which is how
strategies observe a program's behaviour on inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, runtime_checkable

from ttscale.core.types import Problem

TestStatus = Literal["pass", "fail", "timeout", "crash"]
"""``pass``: ran without raising; ``fail``: raised (an assertion or another exception; the message
says which); ``timeout``: ran out of time (its own limit or the program's); ``crash``: the process
died (a signal, ``os._exit``, memory) or the program did not load."""


@dataclass(frozen=True)
class TestResult:
    """The outcome of one test against one program."""

    __test__ = False  # not a pytest class

    test: str
    status: TestStatus
    message: str = ""
    value: str | None = None
    """``repr`` of the value when the test is an expression and it passed (cut to a few KB)."""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, str | None]:
        return {"test": self.test, "status": self.status, "message": self.message, "value": self.value}


@runtime_checkable
class CodeExecutor(Protocol):
    """Runs a program and then each test against it, each program in its own isolated process.

    Returns one result per test, in order. ``time_limit`` is seconds per test (the program's own
    loading counts against the first). Never raises for anything the program does.
    """

    async def run_tests(self, program: str, tests: Sequence[str], time_limit: float = 3.0) -> list[TestResult]: ...


# ----------------------------------------------------------------------------------------------------
# code problems (the metadata code datasets give their problems; see ttscale.datasets.code)

GOLD_KEY = "gold_tests"
"""Problem metadata holding the grading tests: for the grader only, removed before a strategy runs."""


def for_strategy(problem: Problem) -> Problem:
    """``problem`` as a strategy may see it: without the grading tests."""
    if GOLD_KEY not in (problem.metadata or {}):
        return problem
    return replace(problem, metadata={k: v for k, v in problem.metadata.items() if k != GOLD_KEY})


def is_code_problem(problem: Problem) -> bool:
    return "entry_point" in (problem.metadata or {})


def program_for(problem: Problem, code: str) -> str:
    """The program to run for a candidate's ``code``: the problem's function header and docstring
    first (a bare function body then completes it; a whole function redefines it), then ``code``."""
    head = str((problem.metadata or {}).get("code_prompt") or "")
    return f"{head}\n{code}\n" if head else code


def public_tests(problem: Problem) -> list[str]:
    """The tests a strategy may run (the docstring's examples of a code problem)."""
    return [str(t) for t in (problem.metadata or {}).get("public_tests") or ()]
