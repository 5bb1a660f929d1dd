"""Run a sweep recipe and turn its results into one tidy table.

A sweep is a plan of runs, one per (engine, dataset, configuration, seed), in that order. Each run
is a :class:`ttscale.lab.runner.Runner` writing ``<out>/runs/<slug>.jsonl``, so a sweep resumes
exactly like ``ttscale run``: finished problems are skipped, and a changed configuration gets a new
file (its slug ends in a digest of everything that changes results).

The table has one row per (dataset, engine/model, configuration, seed, problem); see
:data:`COLUMNS`. Configurations are the runs themselves (``derived_from == ""``) and, for runs
with a ``subsample`` entry, k-sample configurations derived from the first k candidates of the run
(i.i.d. samples, so the first k are a valid k-sample run, as the HF search-and-learn recipe does):
the selection rule (``majority``, ``best_of_n``, ``weighted_best_of_n``) is applied to those k, the
row's correctness is the selected candidate's grade, its generated tokens are those k candidates'
completion tokens, and its prompt tokens, verifier tokens and wall time are the run's, pro rata
k/N. Written to ``<out>/table.jsonl`` and ``<out>/table.parquet`` atomically (temp file + rename).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.core.io import read_jsonl, read_parquet, slug
from ttscale.core.protocols import AnswerSpace, Engine, Verifier
from ttscale.lab.recipe import DatasetSpec, EngineSpec, Recipe, RunConfig, Subsample, config_label
from ttscale.lab.runner import RunSummary, one_per_problem, read_results
from ttscale.lab.stop_gate import StopGate
from ttscale.strategies.voting import Tally

COLUMNS: tuple[str, ...] = (
    "sweep", "dataset", "problem_id", "engine", "model", "strategy", "params", "config", "budget_n", "seed",
    "derived_from", "correct", "answer", "reference", "generated_tokens", "prompt_tokens", "verifier_tokens",
    "generations", "flops", "wall_time_s", "cand_correct", "cand_scores", "sample_accuracy", "mean_score",
    "cand_answers",
)
"""The columns of the sweep table, in order."""


def table_schema() -> Any:
    """The Arrow schema of the sweep table (fixed, so that empty or all-null columns keep their type)."""
    import pyarrow as pa

    types = {
        "budget_n": pa.int64(), "seed": pa.int64(), "correct": pa.bool_(), "generated_tokens": pa.int64(),
        "prompt_tokens": pa.int64(), "verifier_tokens": pa.int64(), "generations": pa.int64(),
        "flops": pa.float64(), "wall_time_s": pa.float64(), "cand_correct": pa.list_(pa.bool_()),
        "cand_scores": pa.list_(pa.float64()), "sample_accuracy": pa.float64(), "mean_score": pa.float64(),
        "cand_answers": pa.list_(pa.string()),
    }
    return pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])


# ----------------------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep and the results file it writes."""

    index: int
    engine: EngineSpec
    dataset: DatasetSpec
    config: RunConfig
    seed: int
    path: Path


def plan(recipe: Recipe, out: Path | None = None) -> list[PlannedRun]:
    """Every run of the recipe, in execution order: engine, dataset, configuration (grid × budget),
    seed (``order: runs``: engine, ``runs`` entry, dataset, configuration, seed; see
    :meth:`Recipe.dataset_configs`). ``out`` overrides the recipe's output directory."""
    root = Path(out) if out is not None else recipe.out
    runs = []
    for eng in recipe.engines:
        for ds, cfg in recipe.dataset_configs():
            for seed in recipe.seeds:
                key = json.dumps({
                    "engine": [eng.engine, eng.model], "dataset": ds.identity(), "strategy": cfg.strategy,
                    "params": cfg.params, "budget": cfg.budget.to_dict(), "seed": seed,
                    "system_prompt": recipe.system_prompt, "verifiers": recipe.verifiers,
                }, sort_keys=True, default=str)
                digest = hashlib.sha1(key.encode()).hexdigest()[:10]
                model = slug(eng.model) if eng.model else "default"
                name = f"{slug(ds.label)}__{eng.engine}-{model}__{cfg.strategy}__s{seed}__{digest}.jsonl"
                runs.append(PlannedRun(len(runs), eng, ds, cfg, seed, root / "runs" / name))
    return runs


# ----------------------------------------------------------------------------------------------------
# selection over a subsample


def select(rule: str, labels: Sequence[int | None], scores: Sequence[float | None]) -> int | None:
    """Index of the candidate a selection rule picks among candidates with answer-class ``labels``
    (``None``: no answer) and verifier ``scores`` (``None`` counts as 0, as in the strategies).

    - ``majority``: the largest answer class (ties: the class seen first); its first member;
    - ``best_of_n``: the highest score (ties: the earliest), whatever its answer;
    - ``weighted_best_of_n``: the class with the largest summed score (ties: seen first); its
      best-scored member (ties: the earliest).
    """
    if not labels:
        return None
    s = [float(x) if x is not None else 0.0 for x in scores]
    if rule == "best_of_n":
        return max(range(len(labels)), key=lambda i: (s[i], -i))
    if rule not in ("majority", "weighted_best_of_n"):
        raise ConfigError(f"unknown selection rule {rule!r}; known: majority, best_of_n, weighted_best_of_n")
    t = Tally.of(labels, None if rule == "majority" else s)
    win = t.winner()
    if win is None:
        return None
    if rule == "majority":
        return t.first[win]
    return max(t.members(win), key=lambda i: (s[i], -i))


# ----------------------------------------------------------------------------------------------------
# rows


def _mean(xs: Iterable[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return fmean(vals) if vals else None


def _flops(rate: float | None, tokens: int) -> float | None:
    return None if rate is None else 2.0 * rate * tokens


def _params_rate(cost: Mapping[str, Any]) -> float | None:
    """The engine's params_count, recovered from a result's FLOPs (None when unknown)."""
    flops = cost.get("flops")
    if flops is None:
        return None
    total = sum(int(cost.get(k) or 0) for k in ("prompt_tokens", "generated_tokens", "verifier_prompt_tokens",
                                                  "verifier_generated_tokens"))
    return float(flops) / (2.0 * total) if total else 0.0


def run_row(rec: Mapping[str, Any], *, sweep: str, dataset: str) -> dict[str, Any]:
    """The table row of one result of a configuration that was run."""
    cost = rec.get("cost") or {}
    params = dict(rec.get("params") or {})
    budget = dict(rec.get("budget") or {})
    cands = list(rec.get("candidates") or [])
    cand_correct = [c.get("correct") for c in cands]
    cand_scores = [None if c.get("score") is None else float(c["score"]) for c in cands]
    generations = int(cost.get("generations") or 0)
    n = params.get("n")
    budget_n = (int(n) if isinstance(n, int | float) and not isinstance(n, bool) else
                budget.get("max_generations") or generations)
    vtok = int(cost.get("verifier_prompt_tokens") or 0) + int(cost.get("verifier_generated_tokens") or 0)
    flops = cost.get("flops")
    return {
        "sweep": sweep, "dataset": dataset, "problem_id": str(rec["problem_id"]),
        "engine": str(rec.get("engine", "")), "model": str(rec.get("model", "")),
        "strategy": str(rec.get("strategy", "")), "params": json.dumps(params, sort_keys=True),
        "config": config_label(str(rec.get("strategy", "")), params, budget), "budget_n": int(budget_n),
        "seed": int(rec.get("seed") or 0), "derived_from": "",
        "correct": rec.get("correct"), "answer": rec.get("answer"), "reference": rec.get("reference"),
        "generated_tokens": int(cost.get("generated_tokens") or 0), "prompt_tokens": int(cost.get("prompt_tokens") or 0),
        "verifier_tokens": vtok, "generations": generations,
        "flops": None if flops is None else float(flops), "wall_time_s": float(cost.get("wall_time_s") or 0.0),
        "cand_correct": cand_correct, "cand_scores": cand_scores,
        "sample_accuracy": _mean(cand_correct), "mean_score": _mean(cand_scores),
        "cand_answers": [None if c.get("answer") is None else str(c["answer"]) for c in cands],
    }


def canonical_answers(cands: Sequence[Mapping[str, Any]], labels: Sequence[int | None]) -> list[str | None]:
    """Each candidate's answer replaced by the first answer of its equivalence class ("7.0" and "7"
    read the same), so that maj@k over ``cand_answers`` can group by plain string equality."""
    first: dict[int, str] = {}
    out: list[str | None] = []
    for c, lab in zip(cands, labels, strict=True):
        if lab is None or c.get("answer") is None:
            out.append(None)
            continue
        out.append(first.setdefault(lab, str(c["answer"])))
    return out


def derived_config(rule: str, k: int, source_label: str) -> str:
    """Label of a subsampled configuration: ``"majority n=4 from best_of_n max_tokens=320"``."""
    return f"{rule} n={k} from {source_label}"


def derived_row(rec: Mapping[str, Any], labels: Sequence[int | None], rule: str, k: int, *,
                sweep: str, dataset: str, src: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The row of the k-sample configuration that applies ``rule`` to the first k candidates of
    ``rec`` (``labels``: answer classes of all its candidates, in sample order; ``src``: the row of
    ``rec`` itself when the caller has it already)."""
    src = src if src is not None else run_row(rec, sweep=sweep, dataset=dataset)
    cands = list(rec.get("candidates") or [])
    total = len(cands)
    m = min(k, total)  # a run clipped by its budget drew fewer: a k-sample run would have been clipped too
    sub = cands[:m]
    cand_correct = src["cand_correct"][:m]
    cand_scores = src["cand_scores"][:m]
    chosen = select(rule, list(labels[:m]), cand_scores)
    reference = rec.get("reference")
    if chosen is not None:
        answer, correct = sub[chosen].get("answer"), sub[chosen].get("correct")
    else:
        answer, correct = None, (False if reference is not None and rec.get("correct") is not None else None)
    frac = m / total if total else 0.0
    cost = rec.get("cost") or {}
    gen = sum(int(c.get("completion_tokens") or 0) for c in sub)
    prompt = round(src["prompt_tokens"] * frac)
    vtok = round(src["verifier_tokens"] * frac)
    params = {**json.loads(src["params"]), "n": k}
    return {
        **src,
        "strategy": rule, "params": json.dumps(params, sort_keys=True),
        "config": derived_config(rule, k, src["config"]), "budget_n": k, "derived_from": src["config"],
        "correct": correct, "answer": answer,
        "generated_tokens": gen, "prompt_tokens": prompt, "verifier_tokens": vtok, "generations": m,
        "flops": _flops(_params_rate(cost), prompt + gen + vtok),
        "wall_time_s": round(src["wall_time_s"] * frac, 4),
        "cand_correct": cand_correct, "cand_scores": cand_scores,
        "sample_accuracy": _mean(cand_correct), "mean_score": _mean(cand_scores),
        "cand_answers": src["cand_answers"][:m],
    }


async def table_rows(records: Sequence[Mapping[str, Any]], *, sweep: str, dataset: str,
                     subsample: Subsample | None, answers: AnswerSpace) -> list[dict[str, Any]]:
    """The rows of one run's results: one per record, then (when ``subsample``) one per record for
    each selection rule and each k, rules outermost."""
    labels = [await answers.group([c.get("answer") for c in r.get("candidates") or []]) for r in records]
    rows = []
    for r, lab in zip(records, labels, strict=True):
        row = run_row(r, sweep=sweep, dataset=dataset)
        row["cand_answers"] = canonical_answers(r.get("candidates") or [], lab)
        rows.append(row)
    if subsample is None:
        return rows
    base = list(rows)
    for rule in subsample.select:
        for k in subsample.n:
            for r, lab, row in zip(records, labels, base, strict=True):
                rows.append(derived_row(r, lab, rule, k, sweep=sweep, dataset=dataset, src=row))
    return rows


def read_run(run: PlannedRun, problem_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """A run's results, in dataset order when ``problem_ids`` is given (others dropped), else in file
    order; one record per problem."""
    records, _ = read_results(run.path)
    by_id: dict[str, dict[str, Any]] = {}
    for r in records:
        by_id.setdefault(str(r["problem_id"]), r)
    if problem_ids is None:
        return list(by_id.values())
    return [by_id[p] for p in problem_ids if p in by_id]


def build_table(recipe: Recipe, runs: Sequence[PlannedRun] | None = None, *,
                problem_ids: Mapping[str, Sequence[str]] | None = None,
                answers: AnswerSpace | None = None,
                dataset_answers: Mapping[str, AnswerSpace] | None = None) -> list[dict[str, Any]]:
    """The sweep table from the results files of ``runs`` (default: the recipe's plan). Problems
    are kept in dataset order (``problem_ids``: dataset label -> ids) and runs in plan order, so the
    table does not depend on the order problems finished in. Runs without a file are skipped.
    ``dataset_answers`` overrides the answer space per dataset label (code datasets)."""
    from ttscale.verifiers.math_answers import MathAnswers

    runs = plan(recipe) if runs is None else runs
    space = answers or MathAnswers()

    async def go() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for run in runs:
            if not run.path.exists():
                continue
            ids = None if problem_ids is None else problem_ids.get(run.dataset.label)
            records = read_run(run, ids)
            own = (dataset_answers or {}).get(run.dataset.label, space)
            rows.extend(await table_rows(records, sweep=recipe.name, dataset=run.dataset.label,
                                         subsample=run.config.subsample, answers=own))
        return rows

    return asyncio.run(go())


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_table(rows: Sequence[Mapping[str, Any]], out: str | Path) -> tuple[Path, Path]:
    """Write ``<out>/table.jsonl`` and ``<out>/table.parquet`` atomically; returns both paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    for r in rows:
        if list(r) != list(COLUMNS):
            raise ValueError(f"a table row has columns {list(r)}, expected {list(COLUMNS)}")
    jsonl, parquet = root / "table.jsonl", root / "table.parquet"

    def w_jsonl(p: Path) -> None:
        with p.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    def w_parquet(p: Path) -> None:
        pq.write_table(pa.Table.from_pylist(list(rows), schema=table_schema()), p)

    _replace_atomically(jsonl, w_jsonl)
    _replace_atomically(parquet, w_parquet)
    return jsonl, parquet


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a sweep table (``.jsonl`` or ``.parquet``)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"sweep table {p} does not exist")
    return read_parquet(p) if p.suffix == ".parquet" else read_jsonl(p)


def summarize_by_seed(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One line per (dataset, engine, model, configuration, seed), in table order: problems,
    accuracy over graded problems, mean generated tokens and generations (the sweep command's
    printout; :func:`ttscale.lab.metrics.summarize_table` pools seeds and adds intervals)."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        key = (r["dataset"], r["engine"], r["model"], r["config"], r["seed"])
        groups.setdefault(key, []).append(r)
    out = []
    for (dataset, engine, model, config, seed), rs in groups.items():
        graded = [bool(r["correct"]) for r in rs if r["correct"] is not None]
        out.append({
            "dataset": dataset, "engine": engine, "model": model, "config": config, "seed": seed,
            "derived_from": rs[0]["derived_from"], "budget_n": rs[0]["budget_n"], "problems": len(rs),
            "accuracy": fmean(graded) if graded else None,
            "mean_generated_tokens": fmean(r["generated_tokens"] for r in rs),
            "mean_generations": fmean(r["generations"] for r in rs),
        })
    return out


# ----------------------------------------------------------------------------------------------------
# executing


EngineFactory = Callable[[EngineSpec], Engine]


def default_engine_factory(spec: EngineSpec) -> Engine:
    from ttscale.engines import make_engine

    return make_engine(spec.engine, spec.model, dict(spec.params))


@dataclass
class SweepResult:
    """What ``run_sweep`` did."""

    out: Path
    runs: list[PlannedRun]
    summaries: dict[int, RunSummary] = field(default_factory=dict)
    """Runner summaries by plan index (runs executed now)."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    table_paths: tuple[Path, Path] | None = None
    interrupted: bool = False
    stopped: str | None = None
    """Why a stop gate (``--stop-after``, SIGUSR1) ended the sweep with work left; None otherwise."""


def load_datasets(recipe: Recipe) -> dict[str, Any]:
    """Every dataset of the recipe, by label (loaded once, before any model)."""
    from ttscale.datasets import load_dataset

    out = {}
    for ds in recipe.datasets:
        try:
            out[ds.label] = load_dataset(ds.dataset, question_field=ds.question_field, answer_field=ds.answer_field,
                                         split=ds.split, limit=ds.limit, seed=ds.seed)
        except ConfigError as e:
            raise ConfigError(f"{recipe.source}: dataset {ds.dataset!r}: {e}") from e
    return out


def _all_done(runs: Sequence[PlannedRun], datasets: Mapping[str, Any]) -> bool:
    """Whether every planned run's results file holds all of its dataset's problems."""
    for r in runs:
        want = {p.id for p in datasets[r.dataset.label].problems}
        have = {str(x["problem_id"]) for x in one_per_problem(read_results(r.path)[0])}
        if not want <= have:
            return False
    return True


async def execute(recipe: Recipe, runs: Sequence[PlannedRun], datasets: Mapping[str, Any], *,
                  engine_factory: EngineFactory = default_engine_factory, progress: bool = True,
                  on_run: Callable[[PlannedRun], None] | None = None,
                  gate: StopGate | None = None) -> tuple[dict[int, RunSummary], bool]:
    """Run every planned run (resuming each from its file); returns the runner summaries by plan
    index and whether the sweep was interrupted. Each engine is built once and closed at the end.
    Once ``gate`` closes, no run and no problem starts (the gate's ``reason`` says why)."""
    from ttscale.datasets import make_grader
    from ttscale.datasets.code import code_runtime
    from ttscale.lab.runner import DEFAULT_SYSTEM_PROMPT, Runner
    from ttscale.verifiers import make_verifier
    from ttscale.verifiers.math_answers import MathAnswers

    summaries: dict[int, RunSummary] = {}
    answers = MathAnswers()
    for spec in recipe.engines:
        mine = [r for r in runs if r.engine == spec]
        if not mine or (gate is not None and gate.closed()):
            continue
        eng = engine_factory(spec)
        if recipe.cache is not None:
            from ttscale.engines.cache import CachingEngine

            try:
                eng = CachingEngine(eng, recipe.cache)
            except BaseException:
                await eng.aclose()
                raise
        built: list[Verifier] = []

        def verifier(name: str, eng: Engine = eng, built: list[Verifier] = built) -> Verifier:
            v = make_verifier(name, eng, dict(recipe.verifiers.get(name) or {}))
            built.append(v)
            return v

        try:
            configured = {name: verifier(name) for name in recipe.verifiers}
            for run in mine:
                if gate is not None and gate.closed():
                    break
                ds = datasets[run.dataset.label]
                if on_run is not None:
                    on_run(run)
                code = code_runtime(ds)  # code datasets: program answers, the sandbox, a code prompt
                default = code.system_prompt if code else DEFAULT_SYSTEM_PROMPT
                system = default if recipe.system_prompt is None else (recipe.system_prompt or None)
                runner = Runner(
                    engine=eng, strategy=run.config.strategy, params=run.config.params,
                    answers=code.answers if code else answers, grader=make_grader(ds), budget=run.config.budget,
                    seed=run.seed, system_prompt=system, concurrency=recipe.concurrency, verifiers=configured,
                    make_verifier=verifier, progress=progress, executor=code.executor if code else None,
                    gate=gate,
                )
                hits = getattr(eng, "hits", 0)
                summary = await runner.run(ds.problems, run.path)
                summary.reused_samples = getattr(eng, "hits", 0) - hits
                summaries[run.index] = summary
                if summary.interrupted:
                    return summaries, True
        finally:
            for v in built:
                close = getattr(v, "aclose", None)
                if close is not None:
                    await close()
            await eng.aclose()
    return summaries, False


def run_sweep(recipe: Recipe, *, out: Path | None = None, table_only: bool = False, progress: bool = True,
              engine_factory: EngineFactory = default_engine_factory,
              on_run: Callable[[PlannedRun], None] | None = None,
              executor: Callable[..., tuple[dict[int, RunSummary], bool]] | None = None,
              gate: StopGate | None = None) -> SweepResult:
    """Run (or, with ``table_only``, only tabulate) a sweep, then write its table. ``executor``
    replaces the in-process execution (``ttscale sweep --ray``: :func:`ttscale.lab.ray_run.sweep_executor`).
    ``gate`` (:mod:`ttscale.lab.stop_gate`) stops it gracefully; the table is still written."""
    if executor is not None and gate is not None and gate.deadline is not None:
        raise ConfigError("a stop deadline (--stop-after) is not supported with --ray yet; stop a Ray sweep "
                          "with Ctrl-C or SIGTERM (finished problems are kept)")
    root = Path(out) if out is not None else recipe.out
    runs = plan(recipe, root)
    datasets = load_datasets(recipe)
    result = SweepResult(out=root, runs=runs)
    if not table_only:
        try:
            if executor is not None:
                result.summaries, result.interrupted = executor(recipe, runs, datasets, progress=progress,
                                                                on_run=on_run)
            else:
                result.summaries, result.interrupted = asyncio.run(
                    execute(recipe, runs, datasets, engine_factory=engine_factory, progress=progress, on_run=on_run,
                            gate=gate)
                )
        except KeyboardInterrupt:
            result.interrupted = True
        if gate is not None and gate.reason is not None and not result.interrupted and not _all_done(runs, datasets):
            result.stopped = gate.reason
    elif not any(r.path.exists() for r in runs):
        raise ConfigError(f"no results of this recipe under {root / 'runs'}; run the sweep first "
                          f"(ttscale sweep {recipe.source})")
    ids = {label: [p.id for p in ds.problems] for label, ds in datasets.items()}
    from ttscale.verifiers.code import CodeAnswers

    code_answers = {label: CodeAnswers() for label, ds in datasets.items() if ds.grader == "code"}
    result.rows = build_table(recipe, runs, problem_ids=ids, dataset_answers=code_answers)
    result.table_paths = write_table(result.rows, root)
    return result
