"""The runner: many problems concurrently against one engine, results appended as they finish.

- Each finished problem is one JSON line, written with a single ``write`` + flush + fsync, so a
  crash loses at most the problems still in flight.
- Restarting with the same output file skips the problems already there (after checking that the
  file holds results of the same strategy, parameters and seed) and drops a torn last line.
- Ctrl-C cancels the problems in flight; everything finished stays on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttscale.core.budget import Budget, CostMeter
from ttscale.core.context import Context
from ttscale.core.errors import ConfigError
from ttscale.core.io import jsonable
from ttscale.core.protocols import AnswerSpace, Engine, Grader, Verifier
from ttscale.core.types import Problem, Result
from ttscale.strategies.base import Outcome, load_strategies

DEFAULT_SYSTEM_PROMPT = (
    "Solve the problem step by step. Separate steps with a blank line. "
    "End with the final answer in the form \\boxed{ANSWER}."
)


@dataclass
class RunSummary:
    """What a run did: counts, accuracy and cost totals over the problems run *now* and before."""

    out: Path
    total: int
    done_before: int = 0
    done_now: int = 0
    correct: int = 0
    graded: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Prompt tokens the engine served from its prefix cache (vLLM, llama.cpp), problems run now."""
    verifier_tokens: int = 0
    wall_time_s: float = 0.0
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


def read_results(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Complete records in a results file, and the byte length of its intact part (a torn last
    line, left by a crash mid-write, is not counted)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good = 0
    pos = 0
    for raw in data.splitlines(keepends=True):
        pos += len(raw)
        if not raw.endswith(b"\n"):
            break
        if raw.strip():
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError as e:
                raise ConfigError(f"results file {path} is corrupt at byte {pos - len(raw)}: {e.msg}") from e
        good = pos
    return records, good


class Runner:
    """Runs one strategy with one parameter set over many problems (see module docstring)."""

    def __init__(
        self,
        *,
        engine: Engine,
        strategy: str,
        params: Mapping[str, Any] | None = None,
        answers: AnswerSpace,
        grader: Grader | None = None,
        budget: Budget | None = None,
        seed: int = 0,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        concurrency: int = 16,
        verifiers: Mapping[str, Verifier] | None = None,
        make_verifier: Callable[[str], Verifier] | None = None,
        progress: bool = True,
        on_result: Callable[[Result], None] | None = None,
        engines: Mapping[str, Engine] | None = None,
    ) -> None:
        entry = load_strategies().get(strategy)
        self.entry = entry
        self.params = entry.make_params(params or {})
        self.engine = engine
        self.answers = answers
        self.grader = grader
        self.budget = budget or Budget()
        self.seed = seed
        self.system_prompt = system_prompt
        self.concurrency = max(1, concurrency)
        self.verifiers: dict[str, Verifier] = dict(verifiers or {})
        self.make_verifier = make_verifier
        self.progress = progress
        self.on_result = on_result
        self.engines: dict[str, Engine] = dict(engines or {})

    @property
    def params_dict(self) -> dict[str, Any]:
        return jsonable(self.params)

    async def solve(self, problem: Problem) -> Result:
        """Run the strategy on one problem and grade it. Does not write anything."""
        meter = CostMeter(self.budget, self.engine.params_count)
        ctx = Context(
            problem=problem, engine=self.engine, answers=self.answers, meter=meter, seed=self.seed,
            verifiers=self.verifiers, make_verifier=self.make_verifier, system_prompt=self.system_prompt,
            engines=self.engines,
        )
        outcome: Outcome = await self.entry.target(problem, ctx, self.params)
        meter.stop_clock()
        cands = list(outcome.candidates)
        correct = None
        if self.grader is not None:
            grades = await asyncio.gather(
                self.grader.grade(problem, outcome.answer),
                *(self.grader.grade(problem, c.answer) for c in cands),
            )
            correct = grades[0]
            cands = [c.with_(correct=g) for c, g in zip(cands, grades[1:], strict=True)]
        chosen = next((c for c in cands if outcome.chosen is not None and c.id == outcome.chosen.id), None)
        extra = dict(outcome.extra)
        if ctx.trace:
            extra["trace"] = ctx.trace
        return Result(
            problem_id=problem.id, answer=outcome.answer, chosen=chosen, candidates=tuple(cands),
            cost=meter.snapshot(), strategy=self.entry.name, params=self.params_dict, seed=self.seed,
            budget=self.budget.to_dict(), correct=correct, reference=problem.answer,
            engine=self.engine.name, model=self.engine.model, stopped_by_budget=meter.stopped_by_budget,
            extra=extra,
        )

    def _check_compatible(self, path: Path, records: Sequence[dict[str, Any]]) -> None:
        want = {"strategy": self.entry.name, "params": self.params_dict, "seed": self.seed,
                "budget": self.budget.to_dict()}
        for r in records[:1]:
            have = {k: r.get(k) for k in want}
            if json.loads(json.dumps(have)) != json.loads(json.dumps(want)):
                raise ConfigError(
                    f"{path} already holds results of another configuration "
                    f"(strategy={have['strategy']}, params={have['params']}, seed={have['seed']}, "
                    f"budget={have['budget']}); this run is strategy={want['strategy']}, "
                    f"params={want['params']}, seed={want['seed']}, budget={want['budget']}. "
                    "Use another --out, or the same settings to resume."
                )

    async def run(self, problems: Sequence[Problem], out: str | Path) -> RunSummary:
        """Run every problem not already in ``out``; append each result as soon as it is done."""
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        records, good = read_results(path)
        self._check_compatible(path, records)
        if path.exists() and good < path.stat().st_size:
            with path.open("r+b") as f:  # drop a torn last line left by a crash
                f.truncate(good)
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"problem id {dup!r} appears more than once in the dataset")
        done = {str(r["problem_id"]) for r in records}
        todo = [p for p in problems if p.id not in done]
        summary = RunSummary(out=path, total=len(problems), done_before=len(problems) - len(todo))
        wanted = set(ids)
        for r in records:
            if str(r["problem_id"]) in wanted and r.get("correct") is not None:
                summary.graded += 1
                summary.correct += bool(r["correct"])
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(self.concurrency)
        fh = path.open("a", encoding="utf-8")

        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}"), TextColumn("{task.fields[tokens]} tok"),
            TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(),
            disable=not self.progress, transient=False,
        )
        task_id = progress.add_task(
            self.entry.name, total=len(problems), completed=summary.done_before,
            acc=self._acc(summary), tokens=0, tps="-",
        )

        def record(res: Result) -> None:
            fh.write(json.dumps(res.to_dict(), ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            summary.done_now += 1
            summary.generated_tokens += res.cost.generated_tokens
            summary.prompt_tokens += res.cost.prompt_tokens
            summary.cached_prompt_tokens += res.cost.cached_prompt_tokens
            summary.verifier_tokens += res.cost.verifier_prompt_tokens + res.cost.verifier_generated_tokens
            if res.correct is not None:
                summary.graded += 1
                summary.correct += bool(res.correct)
            elapsed = time.perf_counter() - t0
            progress.update(
                task_id, advance=1, acc=self._acc(summary), tokens=summary.generated_tokens,
                tps=f"{summary.generated_tokens / elapsed:.1f}" if elapsed > 0 else "-",
            )
            if self.on_result is not None:
                self.on_result(res)

        async def one(p: Problem) -> None:
            async with sem:
                res = await self.solve(p)
            record(res)

        try:
            with progress:
                tasks = [asyncio.create_task(one(p)) for p in todo]
                try:
                    for fut in asyncio.as_completed(tasks):
                        await fut
                except BaseException:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            summary.interrupted = True
        finally:
            fh.close()
            summary.wall_time_s = time.perf_counter() - t0
        return summary

    @staticmethod
    def _acc(s: RunSummary) -> str:
        return f"{s.accuracy:.1%}" if s.accuracy is not None else "-"
