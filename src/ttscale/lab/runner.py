"""The runner: many problems concurrently against one engine, results appended as they finish.

- Each finished problem is one JSON line, written with a single ``write`` + flush + fsync, so a
  crash loses at most the problems still in flight.
- Restarting with the same output file skips the problems already there and drops a torn last line.
  Each record carries the run's fingerprint (strategy, parameters, seed, budget, engine, model and
  its file, dataset, verifiers, prompts: everything that changes results) and a digest of its
  problem; a rerun whose fingerprint or problems differ is refused, naming what differs.
- One writer per results file: ``<out>.lock`` is held (``filelock``) while a run writes; a second
  run on the same file is refused at once.
- Ctrl-C (or SIGTERM, from the CLI) cancels the problems in flight; everything finished stays on disk.
- A :class:`~ttscale.lab.stop_gate.StopGate` stops gracefully instead: once it closes (``--stop-after``,
  SIGUSR1) no new problem starts and the ones in flight finish and are saved.
- Progress (:mod:`ttscale.lab.progress`) counts tokens as engines stream them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from ttscale.core.budget import Budget, CostMeter, LiveTally
from ttscale.core.context import Context
from ttscale.core.errors import ConfigError
from ttscale.core.execution import CodeExecutor, for_strategy
from ttscale.core.io import jsonable
from ttscale.core.protocols import AnswerSpace, Engine, Grader, Verifier
from ttscale.core.types import Problem, Result
from ttscale.lab.progress import RunProgress
from ttscale.lab.stop_gate import StopGate
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
    reused_samples: int = 0
    """Samples served by a generation cache (``--cache``) instead of the engine, problems run now."""
    wall_time_s: float = 0.0
    interrupted: bool = False
    terminated: bool = False  # stopped by SIGTERM (the CLI exits 143)
    errors: list[str] = field(default_factory=list)
    stopped: str | None = None
    """Why a stop gate ended the run with problems left (``--stop-after ...``, SIGUSR1); None otherwise."""
    left: int = 0
    """Problems not started because the stop gate closed (rerun to do them)."""
    replicas: list[dict[str, Any]] = field(default_factory=list)
    """Per-replica counters of a pool engine (or of Ray actors), for the end-of-run report."""

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



def one_per_problem(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per problem id, the first one written winning (as the sweep table reads them):
    files that two runs wrote at once, before results files were locked, hold duplicates."""
    first: dict[str, dict[str, Any]] = {}
    for r in records:
        first.setdefault(str(r.get("problem_id")), r)
    return list(first.values())


def problem_digest(problem: Problem) -> str:
    """A short digest of a problem's content (question, answer, metadata): resuming on a file whose
    problem of the same id had other content is refused."""
    blob = json.dumps(jsonable({k: v for k, v in problem.to_dict().items() if k != "id"}), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


_TOP_LEVEL_KEYS = ("strategy", "params", "seed", "budget", "engine", "model")


def _show(v: Any, width: int = 80) -> str:
    s = json.dumps(v, sort_keys=True, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return s if len(s) <= width else s[: width - 1] + "…"


def _difference(key: str, have: Any, want: Any) -> str:
    if isinstance(have, dict) and isinstance(want, dict):  # name only the entries that differ
        keys = [k for k in sorted(set(have) | set(want)) if have.get(k, "(unset)") != want.get(k, "(unset)")]
        have = {k: have.get(k, "(unset)") for k in keys}
        want = {k: want.get(k, "(unset)") for k in keys}
    return f"{key}: {_show(have)} in the file, {_show(want)} now"


def check_resume(path: Path, records: Sequence[dict[str, Any]], want: Mapping[str, Any],
                 problems: Sequence[Problem] = ()) -> None:
    """ConfigError naming what differs when ``path`` holds results of another configuration
    (compared on the keys that both the file's fingerprint and ``want`` have: files from before
    fingerprints still compare on strategy, parameters, seed, budget, engine and model) or of
    problems whose content changed."""
    want = jsonable(want)
    digests = {p.id: problem_digest(p) for p in problems}
    for r in records:
        have = {k: r[k] for k in _TOP_LEVEL_KEYS if k in r}
        have.update(r.get("fingerprint") or {})
        diff = [_difference(k, jsonable(have[k]), want[k]) for k in want if k in have and jsonable(have[k]) != want[k]]
        if diff:
            raise ConfigError(
                f"{path} already holds results of another configuration; "
                + "; ".join(diff) + ". Use another --out, or the same settings to resume."
            )
        pid, sha = str(r.get("problem_id")), r.get("problem_sha")
        if sha and pid in digests and digests[pid] != sha:
            raise ConfigError(
                f"{path} holds a result for problem {pid!r} whose content (question, answer) differs from "
                "this dataset's; the dataset changed. Use another --out to run it."
            )


@contextmanager
def results_lock(path: str | Path) -> Iterator[Path]:
    """Hold ``<path>.lock`` while writing ``path``; ConfigError at once if another process holds it.
    The lock file exists only while a run holds it."""
    from filelock import FileLock, Timeout

    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"another ttscale run is writing {path} (it holds {lock_path}); wait for it to end, or use "
            "another --out"
        ) from None
    try:
        yield lock_path
    finally:
        # removed while still held: a process already waiting on this file finds it unlinked once it
        # gets it and retries on a fresh one (filelock checks), so no stale .lock stays beside the results
        lock_path.unlink(missing_ok=True)
        lock.release()


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
        progress: bool | str = True,
        on_result: Callable[[Result], None] | None = None,
        engines: Mapping[str, Engine] | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        progress_interval_s: float = 15.0,
        console: Console | None = None,
        executor: CodeExecutor | None = None,
        gate: StopGate | None = None,
    ) -> None:
        """``progress``: True/"auto" (a live bar on a terminal, plain lines every
        ``progress_interval_s`` otherwise), "bar", "lines", or False/"off". ``fingerprint``: more
        settings that change results (dataset, model file, engine options...), stored in every
        record and compared on resume together with the runner's own. ``gate``: once it closes, problems
        not yet started are left for a rerun (``summary.left``, ``summary.stopped``)."""
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
        self.progress = {True: "auto", False: "off"}.get(progress, progress)  # type: ignore[call-overload]
        self.progress_interval_s = progress_interval_s
        self.console = console
        self.on_result = on_result
        self.engines: dict[str, Engine] = dict(engines or {})
        self.extra_fingerprint = dict(fingerprint or {})
        self.live = LiveTally()
        self.executor = executor
        self.gate = gate

    @property
    def params_dict(self) -> dict[str, Any]:
        return jsonable(self.params)

    def fingerprint(self) -> dict[str, Any]:
        """Everything about this run that changes its results (stored in each record)."""
        fp: dict[str, Any] = {
            "strategy": self.entry.name, "params": self.params_dict, "seed": self.seed,
            "budget": self.budget.to_dict(), "engine": self.engine.name, "model": self.engine.model,
            "system_prompt": self.system_prompt, "verifiers": sorted(self.verifiers),
            "engines": {k: f"{e.name}:{e.model}" for k, e in sorted(self.engines.items())},
            "grader": type(self.grader).__name__ if self.grader is not None else None,
        }
        fp.update(self.extra_fingerprint)
        return jsonable(fp)

    async def solve(self, problem: Problem) -> Result:
        """Run the strategy on one problem and grade it. Does not write anything."""
        meter = CostMeter(self.budget, self.engine.params_count, live=self.live)
        visible = for_strategy(problem)  # without grading data (a code problem's gold tests)
        ctx = Context(
            problem=visible, engine=self.engine, answers=self.answers, meter=meter, seed=self.seed,
            verifiers=self.verifiers, make_verifier=self.make_verifier, system_prompt=self.system_prompt,
            engines=self.engines, executor=self.executor,
        )
        outcome: Outcome = await self.entry.target(visible, ctx, self.params)
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

    def _prepare(self, path: Path, problems: Sequence[Problem]) -> tuple[list[Problem], RunSummary]:
        """Check the results file against this run, drop a torn last line; the problems left to do."""
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"problem id {dup!r} appears more than once in the dataset")
        records, good = read_results(path)
        check_resume(path, records, self.fingerprint(), problems)
        if path.exists() and good < path.stat().st_size:
            with path.open("r+b") as f:  # drop a torn last line left by a crash
                f.truncate(good)
        records = one_per_problem(records)
        done = {str(r["problem_id"]) for r in records}
        todo = [p for p in problems if p.id not in done]
        summary = RunSummary(out=path, total=len(problems), done_before=len(problems) - len(todo))
        wanted = set(ids)
        for r in records:
            if str(r["problem_id"]) in wanted and r.get("correct") is not None:
                summary.graded += 1
                summary.correct += bool(r["correct"])
        return todo, summary

    async def run(self, problems: Sequence[Problem], out: str | Path, *, lock: bool = True) -> RunSummary:
        """Run every problem not already in ``out``; append each result as soon as it is done.
        ``lock=False`` when the caller already holds :func:`results_lock` on ``out``."""
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        if lock:
            with results_lock(path):
                return await self._run(problems, path)
        return await self._run(problems, path)

    async def _run(self, problems: Sequence[Problem], path: Path) -> RunSummary:
        todo, summary = self._prepare(path, problems)
        digests = {p.id: problem_digest(p) for p in todo}
        fingerprint = self.fingerprint()
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(self.concurrency)
        progress = RunProgress(self.entry.name, total=len(problems), done_before=summary.done_before,
                               live=self.live, mode=self.progress, interval_s=self.progress_interval_s,
                               console=self.console)
        progress.acc = self._acc(summary)
        fh = path.open("a", encoding="utf-8")

        def record(res: Result) -> None:
            rec = {**res.to_dict(), "fingerprint": fingerprint, "problem_sha": digests[res.problem_id]}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
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
            progress.problem_done(self._acc(summary))
            if self.on_result is not None:
                self.on_result(res)

        gate = self.gate

        async def one(p: Problem) -> None:
            async with sem:
                if gate is not None and gate.closed():
                    summary.left += 1
                    summary.stopped = gate.reason
                    return
                res = await self.solve(p)
            record(res)

        try:
            async with progress:
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
