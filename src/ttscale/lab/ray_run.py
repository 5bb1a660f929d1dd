"""``ttscale run --ray`` and ``ttscale sweep --ray``: the driver side (see :mod:`ttscale.lab.ray_backend`).

The driver starts the actors of an engine, then runs :class:`~ttscale.lab.ray_backend.RayRunner`s:
for ``run``, one; for a sweep, one per planned run of that engine, all at once (their problems
share the actors), each appending to its own results file exactly as the in-process runner does.
A progress display shows problems, accuracy and tokens/s in total and per replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.core.types import Problem, Result
from ttscale.lab.ray_backend import (
    ActorSlot,
    EngineSpecR,
    RayRunner,
    RaySettings,
    ReplicaSet,
    RunSpec,
    connect,
    run_key,
)
from ttscale.lab.runner import RunSummary, read_results


class ReplicaProgress:
    """Problems, accuracy, tokens and tokens/s in total and per replica (on stderr)."""

    def __init__(self, replicas: ReplicaSet, *, total: int, done_before: int, enabled: bool,
                 console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}"), TextColumn("{task.fields[tokens]} tok"),
            TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(),
            console=self.console, disable=not enabled, transient=False,
        )
        self.t0 = time.perf_counter()
        self.counts = {"done": 0, "graded": 0, "correct": 0, "tokens": 0}
        self.total_id = self.progress.add_task("total", total=total, completed=done_before, acc="-", tokens=0,
                                               tps="-")
        self.rows: dict[int, TaskID] = {
            s.index: self.progress.add_task(s.label, total=None, acc="-", tokens=0, tps="-")
            for s in replicas.slots
        }
        replicas.on_done = self.update

    def _tps(self, tokens: int) -> str:
        elapsed = time.perf_counter() - self.t0
        return f"{tokens / elapsed:.1f}" if elapsed > 0 else "-"

    def update(self, slot: ActorSlot, res: Result) -> None:
        c = self.counts
        c["done"] += 1
        c["tokens"] += res.cost.generated_tokens
        if res.correct is not None:
            c["graded"] += 1
            c["correct"] += bool(res.correct)
        acc = f"{c['correct'] / c['graded']:.1%}" if c["graded"] else "-"
        self.progress.update(self.total_id, advance=1, acc=acc, tokens=c["tokens"], tps=self._tps(c["tokens"]))
        s_acc = f"{slot.correct / slot.graded:.1%}" if slot.graded else "-"
        self.progress.update(self.rows[slot.index], completed=slot.done, acc=s_acc, tokens=slot.generated_tokens,
                             tps=self._tps(slot.generated_tokens))

    def warn(self, msg: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False, soft_wrap=True)


def _done_before(path: Path, problems: Sequence[Problem]) -> int:
    if not path.exists():
        return 0
    ids = {p.id for p in problems}
    return len({str(r["problem_id"]) for r in read_results(path)[0]} & ids)


class _Warnings:
    """Warnings before the progress display exists go straight to stderr."""

    def __init__(self) -> None:
        self.sink: Callable[[str], None] = lambda msg: Console(stderr=True).print(
            f"[yellow]warning:[/] {escape(msg)}", highlight=False, soft_wrap=True)

    def __call__(self, msg: str) -> None:
        self.sink(msg)


def start_replicas(settings: RaySettings, spec: EngineSpecR) -> tuple[ReplicaSet, bool, _Warnings]:
    """Connect to the cluster and start the actors of ``spec``; returns them, whether Ray was
    started here (to shut it down after) and the warning sink."""
    started = connect(settings)
    warn = _Warnings()
    try:
        return ReplicaSet(spec, settings, warn=warn).start(), started, warn
    except BaseException:
        _shutdown(started)
        raise


def _shutdown(started: bool) -> None:
    if started:
        import ray

        ray.shutdown()


def run_on_ray(settings: RaySettings, spec: EngineSpecR, problems: Sequence[Problem], run: RunSpec, *,
               out: Path | Callable[[str], Path], progress: bool = True,
               announce: Callable[[str, Path], None] | None = None) -> tuple[RunSummary, list[dict[str, Any]]]:
    """``ttscale run --ray``: solve ``problems`` on the actors, appending to ``out`` (or to the path
    ``out(model_name)`` once the actors report their model). Returns the runner's summary and the
    per-replica counters."""
    replicas, started, warn = start_replicas(settings, spec)
    try:
        path = out if isinstance(out, Path) else out(str(replicas.engine_info.get("model", "")))
        if announce is not None:
            announce(f"{replicas.engine_info.get('name')}:{replicas.engine_info.get('model')} on "
                     f"{len(replicas.slots)} Ray actors", path)
        display = ReplicaProgress(replicas, total=len(problems), done_before=_done_before(path, problems),
                                  enabled=progress)
        warn.sink = display.warn
        runner = RayRunner(replicas, run, answers=_answers(), budget=Budget(**run.budget), seed=run.seed,
                           system_prompt=run.system_prompt, concurrency=settings.per_actor * len(replicas.slots),
                           progress=False)
        with display.progress:
            summary = asyncio.run(runner.run(problems, path))
        return summary, replicas.replica_stats()
    finally:
        replicas.stop()
        _shutdown(started)


def cli_run(ray: tuple[str, int, Mapping[str, Any], int], engine: str, model: str | None,
            eparams: Mapping[str, Any], extras: Mapping[str, tuple[str, str | None]], ds: Any, *, strategy: str,
            params: Mapping[str, Any], budget: Budget, seed: int, verifiers: Sequence[str],
            vparams: Mapping[str, Any], system_prompt: str | None, out: Path | Callable[[str], Path],
            progress: bool, say: Callable[[str], Any]) -> tuple[RunSummary, Path, list[dict[str, Any]]]:
    """``ttscale run --ray``'s body: ``ray`` is (address, actors, actor options, problems per actor)."""
    if getattr(ds, "grader", None) == "code":
        raise ConfigError(f"dataset {ds.name!r} is a code dataset: its programs run in the driver's sandbox, "
                          "which --ray does not carry to actors yet; run it without --ray")
    address, actors, options, per_actor = ray
    settings = RaySettings.parse(address, actors, options, per_actor)
    spec = EngineSpecR(engine, model, dict(eparams), dict(extras))
    run = RunSpec(key=run_key([strategy, params, budget.to_dict(), seed]), strategy=strategy, params=dict(params),
                  budget=budget.to_dict(), seed=seed, system_prompt=system_prompt, grader=ds.grader,
                  verifiers=tuple((n, dict(vparams) if i == 0 else {}) for i, n in enumerate(verifiers)))
    paths: list[Path] = []

    def where(m: str) -> Path:
        paths.append(out if isinstance(out, Path) else out(m))
        return paths[-1]

    def announce(what: str, path: Path) -> None:
        say(f"[bold]ttscale run[/]: {strategy} on {ds.name} ({len(ds.problems)} problems) with {what} -> {path}")

    summary, stats = run_on_ray(settings, spec, ds.problems, run, out=where, progress=progress, announce=announce)
    return summary, paths[-1], stats


def replica_lines(stats: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per replica (a pool's upstream or a Ray actor) for the end of a run."""
    lines = []
    for s in stats:
        parts = [f"replica {s['replica']}" if not str(s["replica"]).startswith("replica") else str(s["replica"]),
                 "up" if s.get("healthy", True) else "DOWN"]
        for key, label in (("problems", "problems"), ("requests", "requests"), ("errors", "errors"),
                           ("generated_tokens", "gen tok"), ("problems_rescheduled", "rescheduled")):
            if key in s:
                parts.append(f"{label} {s[key]}")
        if s.get("tokens_per_s") is not None:
            parts.append(f"{s['tokens_per_s']:.1f} tok/s")
        if s.get("prefix_hit_rate") is not None:
            parts.append(f"prefix hits {s['prefix_hit_rate']:.0%}")
        lines.append("  " + ", ".join(parts))
    return lines


def _answers() -> Any:
    from ttscale.verifiers.math_answers import MathAnswers

    return MathAnswers()


def sweep_executor(settings: RaySettings) -> Callable[..., tuple[dict[int, RunSummary], bool]]:
    """An executor for :func:`ttscale.lab.sweep.run_sweep` that runs each engine's planned runs on
    Ray actors, all runs of an engine at once (the engines one after the other)."""

    def execute(recipe: Any, runs: Sequence[Any], datasets: Mapping[str, Any], *, progress: bool = True,
                on_run: Callable[[Any], None] | None = None) -> tuple[dict[int, RunSummary], bool]:
        summaries: dict[int, RunSummary] = {}
        mine_settings = replace(settings, per_actor=max(1, int(recipe.concurrency)))
        for eng in recipe.engines:
            mine = [r for r in runs if r.engine == eng]
            if mine:
                spec = EngineSpecR(eng.engine, eng.model, dict(eng.params))
                got = _sweep_engine(mine_settings, spec, recipe, mine, datasets, progress, on_run)
                summaries.update(got)
                if any(s.interrupted for s in got.values()):
                    return summaries, True
        return summaries, False

    return execute


def _sweep_spec(recipe: Any, run: Any, grader: str | None) -> RunSpec:
    from ttscale.lab.runner import DEFAULT_SYSTEM_PROMPT

    system = DEFAULT_SYSTEM_PROMPT if recipe.system_prompt is None else (recipe.system_prompt or None)
    parts = [str(run.path), run.config.strategy, run.config.params, run.config.budget.to_dict(), run.seed]
    return RunSpec(key=run_key(parts), strategy=run.config.strategy, params=dict(run.config.params),
                   budget=run.config.budget.to_dict(), seed=run.seed, system_prompt=system, grader=grader,
                   verifiers=tuple((n, dict(p or {})) for n, p in recipe.verifiers.items()))


def _sweep_engine(settings: RaySettings, spec: EngineSpecR, recipe: Any, runs: Sequence[Any],
                  datasets: Mapping[str, Any], progress: bool,
                  on_run: Callable[[Any], None] | None) -> dict[int, RunSummary]:
    replicas, started, warn = start_replicas(settings, spec)
    try:
        runners = []
        total = before = 0
        for r in runs:
            ds = datasets[r.dataset.label]
            run = _sweep_spec(recipe, r, ds.grader)
            runners.append((r, ds, RayRunner(
                replicas, run, answers=_answers(), budget=r.config.budget, seed=r.seed,
                system_prompt=run.system_prompt, concurrency=settings.per_actor * len(replicas.slots),
                progress=False)))
            total += len(ds.problems)
            before += _done_before(r.path, ds.problems)
        display = ReplicaProgress(replicas, total=total, done_before=before, enabled=progress)
        warn.sink = display.warn
        for r, _, _ in runners:
            if on_run is not None:
                on_run(r)

        async def go() -> list[RunSummary]:
            return list(await asyncio.gather(*(rn.run(ds.problems, r.path) for r, ds, rn in runners)))

        with display.progress:
            summaries = asyncio.run(go())
        return {r.index: s for (r, _, _), s in zip(runners, summaries, strict=True)}
    finally:
        replicas.stop()
        _shutdown(started)
