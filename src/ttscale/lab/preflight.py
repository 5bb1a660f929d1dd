"""Checks a run's strategy settings before any model loads, by a dry run on a stand-in engine.

Many parameter mistakes only surface when a strategy builds its first request (``n=-3`` becomes a
request for -3 samples) or first needs something it was not given (a verifier, an extra engine).
:func:`check_strategy` runs the strategy on one problem against an instant stand-in engine (every
sample is ``\\boxed{0}``) and a stand-in verifier (every score 0.5), for at most a few dozen requests
and a second or two, and turns the errors that mean bad input (``ConfigError``, ``ValueError``) into
one ``ConfigError``. Anything else the dry run meets is left to the real run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ttscale.core.budget import Budget, CostMeter
from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted, ConfigError
from ttscale.core.execution import TestResult
from ttscale.core.protocols import Verifier
from ttscale.core.types import Candidate, Completion, GenerationRequest, Problem
from ttscale.verifiers.math_answers import MathAnswers

_MAX_REQUESTS = 64


class _Enough(Exception):
    """The dry run has seen enough requests."""


class _StandInEngine:
    name = "preflight"
    supports_token_ids = False
    supports_logprobs = True
    params_count = None

    def __init__(self, model: str = "preflight") -> None:
        self.model = model
        self.requests = 0

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        self.requests += 1
        if self.requests > _MAX_REQUESTS:
            raise _Enough
        await asyncio.sleep(0)
        return [Completion(text="\\boxed{0}", completion_tokens=3, prompt_tokens=10 if i == 0 else 0,
                           answer_hint="0") for i in range(req.n)]

    async def aclose(self) -> None:
        return None


class _StandInVerifier(Verifier):
    name = "preflight"

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        return [0.5] * len(candidates)

    async def score_steps(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[list[float]]:
        return [[0.5] * max(1, len(c.steps)) for c in candidates]


async def _dry_run(target: Callable[..., Any], params: Any, problem: Problem, ctx: Context) -> None:
    try:
        await target(problem, ctx, params)
    except (_Enough, BudgetExhausted):
        pass


class _StandInExecutor:
    """Every test passes at once: the dry run checks settings, not programs."""

    async def run_tests(self, program: str, tests: Sequence[str], time_limit: float = 3.0) -> list[TestResult]:
        return [TestResult(t, "pass") for t in tests]


def check_strategy(
    entry: Any,
    params: Any,
    problem: Problem,
    *,
    budget: Budget | None = None,
    verifiers: Iterable[str] = (),
    check_verifier: Callable[[str], object] | None = None,
    engines: Iterable[str] = (),
    system_prompt: str | None = None,
    timeout_s: float = 2.0,
    runs_programs: bool = False,
) -> None:
    """Dry-run ``entry`` (a strategy registry entry) with ``params`` on ``problem`` (see the module
    docstring). ``verifiers``: the names the run configures; ``check_verifier(name)`` raises for a
    name the strategy asks for that does not exist; ``engines``: the extra engine names;
    ``runs_programs``: the run has a sandbox executor (a code dataset), stood in for here."""
    def make_verifier(name: str) -> Verifier:
        if check_verifier is not None:
            check_verifier(name)
        return _StandInVerifier()

    ctx = Context(
        problem=problem, engine=_StandInEngine(), answers=MathAnswers(), meter=CostMeter(budget),
        verifiers={v: _StandInVerifier() for v in verifiers}, make_verifier=make_verifier,
        system_prompt=system_prompt, engines={e: _StandInEngine(e) for e in engines},
        executor=_StandInExecutor() if runs_programs else None,
    )

    async def go() -> None:
        await asyncio.wait_for(_dry_run(entry.target, params, problem, ctx), timeout_s)

    try:
        asyncio.run(go())
    except (ConfigError, ValueError) as e:
        msg = str(e)
        if f"strategy {entry.name!r}" not in msg:
            msg = f"strategy {entry.name!r} cannot run with these settings: {msg}"
        raise ConfigError(msg) from e
    except Exception:  # anything else is the real run's to report
        return
