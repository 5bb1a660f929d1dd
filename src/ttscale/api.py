"""The Python API in one import.

    import ttscale

    r = ttscale.solve("Tom has 3 boxes of 12 eggs and breaks 5. How many are left?", n=8)
    print(r.answer, r.cost.generated_tokens)          # a Result, as written by `ttscale run`

    s = ttscale.run("default", strategy="best_of_n", n=4, verifier="llm_judge", limit=5)
    print(s.accuracy, s.out)                          # a RunSummary; s.out is the results file

Both take the strategy's parameters as keyword arguments (``n=8``, ``temperature=0.6``; see
``ttscale strategies``), an engine by name (``"embedded"``, ``"openai"``, ...) with ``model`` and
``engine_params``, or an engine object you built (then you close it), and a budget: an ``int`` caps
policy generations per problem, a :class:`~ttscale.core.budget.Budget` caps either axis.
``system_prompt`` defaults to the dataset's kind (step-by-step with a boxed answer; a program for code
datasets such as ``humaneval``); ``""`` sends none.
``asolve`` / ``arun`` are the same as coroutines, for code that already runs an event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ttscale.core.budget import Budget
from ttscale.core.plugins import make_engine
from ttscale.core.protocols import Engine, Grader, Verifier
from ttscale.core.types import Problem, Result
from ttscale.datasets import Dataset, load_dataset, make_grader
from ttscale.datasets.code import code_runtime
from ttscale.lab.run_command import results_path
from ttscale.lab.runner import DEFAULT_SYSTEM_PROMPT, Runner, RunSummary
from ttscale.strategies.base import load_strategies
from ttscale.verifiers import make_verifier
from ttscale.verifiers.math_answers import MathAnswers

__all__ = ["arun", "asolve", "run", "solve"]


def _budget(budget: Budget | int | None) -> Budget:
    if budget is None:
        return Budget()
    if isinstance(budget, Budget):
        return budget
    return Budget(max_generations=int(budget))


@asynccontextmanager
async def _engine(engine: str | Engine, model: str | None,
                  engine_params: Mapping[str, Any] | None) -> AsyncIterator[Engine]:
    """The engine to run on: built by name (and closed afterwards) or the caller's own (left open)."""
    if not isinstance(engine, str):
        yield engine
        return
    eng = make_engine(engine, model, dict(engine_params or {}))
    try:
        yield eng
    finally:
        await eng.aclose()


def _runner(eng: Engine, strategy: str, params: Mapping[str, Any], *, grader: Grader | None,
            verifier: str | Sequence[str] | None, budget: Budget | int | None, seed: int,
            system_prompt: str | None, progress: bool, dataset: Dataset | None = None) -> Runner:
    names = [verifier] if isinstance(verifier, str) else list(verifier or [])
    verifiers: dict[str, Verifier] = {n: make_verifier(n, eng) for n in names}
    code = code_runtime(dataset) if dataset is not None else None  # programs: their answers and sandbox
    if system_prompt is None:
        system_prompt = code.system_prompt if code is not None else DEFAULT_SYSTEM_PROMPT
    return Runner(
        engine=eng, strategy=strategy, params=params, answers=code.answers if code is not None else MathAnswers(),
        grader=grader, budget=_budget(budget), seed=seed, system_prompt=system_prompt or None,
        verifiers=verifiers, make_verifier=lambda n: make_verifier(n, eng), progress=progress,
        executor=code.executor if code is not None else None,
    )


async def asolve(question: str, *, reference: str | None = None, strategy: str = "self_consistency",
                 engine: str | Engine = "embedded", model: str | None = None,
                 engine_params: Mapping[str, Any] | None = None, verifier: str | Sequence[str] | None = None,
                 budget: Budget | int | None = None, seed: int = 0,
                 system_prompt: str | None = None, **params: Any) -> Result:
    """Answer one question with ``strategy``; graded (``Result.correct``) when ``reference`` is given."""
    load_strategies().get(strategy).make_params(params)  # bad parameters fail before a model loads
    problem = Problem(id="0", prompt=question, answer=reference)
    grader = MathAnswers() if reference is not None else None
    async with _engine(engine, model, engine_params) as eng:
        runner = _runner(eng, strategy, params, grader=grader, verifier=verifier, budget=budget,
                         seed=seed, system_prompt=system_prompt, progress=False)
        return await runner.solve(problem)


def solve(question: str, **kwargs: Any) -> Result:
    """:func:`asolve`, run to completion (see the module docstring for the arguments)."""
    return asyncio.run(asolve(question, **kwargs))


async def arun(dataset: str | Path | Dataset = "default", *, strategy: str = "self_consistency",
               engine: str | Engine = "embedded", model: str | None = None,
               engine_params: Mapping[str, Any] | None = None, verifier: str | Sequence[str] | None = None,
               budget: Budget | int | None = None, seed: int = 0, limit: int | None = None,
               out: str | Path | None = None, system_prompt: str | None = None,
               progress: bool = True, **params: Any) -> RunSummary:
    """Run ``strategy`` over a dataset (a name, a file or a :class:`Dataset`), one JSON line per
    problem in ``out``; rerunning with the same ``out`` resumes."""
    checked = load_strategies().get(strategy).make_params(params)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, limit=limit)
    if isinstance(dataset, Dataset) and limit is not None:
        ds = Dataset(ds.name, ds.problems[:limit], ds.grader)
    async with _engine(engine, model, engine_params) as eng:
        path = Path(out) if out is not None else results_path(ds.name, strategy, eng.model, seed, checked,
                                                              _budget(budget))
        runner = _runner(eng, strategy, params, grader=make_grader(ds), verifier=verifier, budget=budget,
                         seed=seed, system_prompt=system_prompt, progress=progress, dataset=ds)
        return await runner.run(ds.problems, path)


def run(dataset: str | Path | Dataset = "default", **kwargs: Any) -> RunSummary:
    """:func:`arun`, run to completion (see the module docstring for the arguments)."""
    return asyncio.run(arun(dataset, **kwargs))
