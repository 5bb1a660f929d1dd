"""The steps of ``ttscale run``, in the order that spends nothing before the input is known good.

1. :func:`run_dataset`: load the dataset and check it has reference answers (or ``--no-grade``);
2. :func:`check_before_loading`: every parameter, budget, verifier, engine option and extra engine
   is checked, and the strategy dry-runs on a stand-in engine (:mod:`ttscale.lab.preflight`);
3. the results file is locked and checked against this run's fingerprint (:func:`check_resume_early`);
4. only then :func:`execute` loads the model (saying so: assembling, loading) and runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.core.io import jsonable, slug
from ttscale.core.protocols import Engine, replica_stats
from ttscale.datasets import ANSWER_FIELDS, Dataset, load_dataset, make_grader
from ttscale.lab.runner import RunSummary, check_resume
from ttscale.lab.stop_gate import StopGate

DEFAULT_PROBLEMS = ("gsm_symbolic-00", "gsm_symbolic-04", "gsm_symbolic-06", "gsm_symbolic-07", "gsm_symbolic-09",
                    "gsm_symbolic-12")
"""The bare run's problems: the first six of the bundled set on which the default model's single
samples were right 25-75% of the time in the lab sweep (``docs/lab/embedded-gsm-table.jsonl``, 8
samples each): the medium difficulty where test-time compute pays (Snell et al.). On problems it
always or never solves, more samples cannot change the answer, and six such problems would make the
demo measure noise."""


DEFAULT_STRATEGY = "weighted_best_of_n"
DEFAULT_PARAMS: dict[str, Any] = {"n": 8, "max_tokens": 384, "logprobs": 5, "verifier": "confidence"}
DEFAULT_VERIFIER: tuple[str, dict[str, Any]] = ("confidence", {"window": 32, "top_k": 5})
"""What ``ttscale run`` does on the embedded engine when no ``--strategy`` is given: 8 samples, each
scored by DeepConf token confidence from its own logprobs (the lowest 10% of 32-token window means of
the top-5 logprobs; no extra model call), votes weighted by that score. Chosen on the lab's evidence
(``docs/lab.md``: on the bundled set it gained the most over single-sample accuracy of the families
that fit in ten minutes, where plain voting at T=0.7 on 6 problems had lost to a single sample).
Other engines keep ``self_consistency``: they may not return logprobs."""


def default_strategy(engine: str, strategy: str | None, params: dict[str, Any], verifiers: list[str],
                     vparams: dict[str, Any], *, say: Any = print) -> tuple[str, dict[str, Any], list[str], dict[str, Any]]:
    """``(strategy, params, verifiers, verifier params)`` with the default configuration filled in when
    no strategy was named; what the user gave (``-p``, ``--verifier``) wins over the defaults."""
    if strategy is not None:
        return strategy, params, verifiers, vparams
    if engine != "embedded":
        return "self_consistency", params, verifiers, vparams
    merged = {**DEFAULT_PARAMS, **params}
    if not verifiers:
        verifiers, vparams = [DEFAULT_VERIFIER[0]], {**DEFAULT_VERIFIER[1], **vparams}
    say(f"strategy: {DEFAULT_STRATEGY} (the default) "
        + " ".join(f"{k}={v}" for k, v in merged.items()) + "; --strategy NAME for another")
    return DEFAULT_STRATEGY, merged, verifiers, vparams


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop like Ctrl-C (finished problems are saved), exit 143."""


@dataclass
class RunSpec:
    """What ``ttscale run`` was asked to do (the parsed options that change results)."""

    engine: str
    model: str | None
    strategy: str
    params: dict[str, Any]
    budget: Budget
    seed: int = 0
    system_prompt: str | None = None
    eparams: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    verifiers: list[str] = field(default_factory=list)
    vparams: dict[str, Any] = field(default_factory=dict)
    cache: Path | None = None
    """Generation cache file (:mod:`ttscale.engines.cache`); not part of the fingerprint."""


def default_system_prompt(ds: Dataset) -> str:
    """The system prompt a run uses when none is given: a program for code datasets, else step-by-step
    reasoning ending in a boxed answer."""
    from ttscale.datasets.code import code_runtime
    from ttscale.lab.runner import DEFAULT_SYSTEM_PROMPT

    code = code_runtime(ds)
    return code.system_prompt if code is not None else DEFAULT_SYSTEM_PROMPT


def make_budget(max_generations: int | None, max_generated_tokens: int | None) -> Budget:
    for flag, v in (("--max-generations", max_generations), ("--max-generated-tokens", max_generated_tokens)):
        if v is not None and v < 1:
            raise ConfigError(f"{flag} must be >= 1 (or left out for no cap), got {v}")
    return Budget(max_generations, max_generated_tokens)


def run_dataset(spec: str, *, question_field: str | None, answer_field: str | None, split: str | None,
                limit: int | None, seed: int, no_grade: bool, out: Console) -> Dataset:
    """Load the dataset; stop when it has no reference answers to grade with (unless ``no_grade``)."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    demo = spec == "default" and limit is None
    ds = load_dataset(spec, question_field=question_field, answer_field=answer_field, split=split,
                      limit=limit, seed=seed)
    if demo:
        ds = dataclasses.replace(ds, problems=tuple(p for p in ds.problems if p.id in DEFAULT_PROBLEMS))
        out.print(f"bundled dataset: {len(ds.problems)} problems of medium difficulty for the default model "
                  "(--limit 40 for all of them)")
    if not ds.problems:
        raise ConfigError(f"dataset {spec!r} has no problems")
    if ds.grader != "math" or no_grade:
        return ds
    if not ds.has_references:
        found = f"its fields are: {', '.join(ds.fields)}. " if ds.fields else ""
        raise ConfigError(
            f"dataset {ds.name!r} has no reference answers (looked for a field named "
            f"{', '.join(ANSWER_FIELDS)}); {found}Name the answer field with --answer-field FIELD, "
            "or pass --no-grade to run without grading. Nothing was run."
        )
    if ds.answer_field_guessed and ds.answer_field != "answer":
        out.print(f"reference answers: field {ds.answer_field!r} (--answer-field FIELD to use another)")
    return ds


def check_before_loading(spec: RunSpec, ds: Dataset) -> Any:
    """Every setting checked, and the strategy dry-run, without loading a model; the strategy's
    checked parameter object."""
    from ttscale.engines import load_engines
    from ttscale.lab.preflight import check_strategy
    from ttscale.strategies.base import load_strategies
    from ttscale.verifiers import load_verifiers

    engines = load_engines()
    engines.get(spec.engine).make_params(spec.eparams)
    for kind, _ in spec.extras.values():
        engines.get(kind)
    verifiers = load_verifiers()
    for i, name in enumerate(spec.verifiers):
        verifiers.get(name).make_params(spec.vparams if i == 0 else {})
    if spec.vparams and not spec.verifiers:
        raise ConfigError("--verifier-param needs a --verifier to apply to")
    entry = load_strategies().get(spec.strategy)
    checked = entry.make_params(spec.params)
    check_strategy(entry, checked, ds.problems[0], budget=spec.budget, verifiers=spec.verifiers,
                   check_verifier=verifiers.get, engines=spec.extras, system_prompt=spec.system_prompt,
                   runs_programs=ds.grader == "code")
    return checked


def results_path(dataset_name: str, strategy: str, model: str, seed: int, checked: Any, budget: Budget) -> Path:
    """``runs/<dataset>__<strategy>__<model>__s<seed>__<hash of params and budget>.jsonl``."""
    key = json.dumps([jsonable(checked), budget.to_dict()], sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return Path("runs") / f"{slug(dataset_name)}__{strategy}__{slug(model)}__s{seed}__{digest}.jsonl"


def default_out(spec: RunSpec, checked: Any, dataset_name: str) -> Path:
    model = spec.model or (_default_model() if spec.engine == "embedded" else spec.engine)
    return results_path(dataset_name, spec.strategy, model, spec.seed, checked, spec.budget)


def _default_model() -> str:
    from ttscale.engines.model_files import DEFAULT_MODEL

    return DEFAULT_MODEL


def model_file_id(engine: str, model: str | None) -> str | None:
    """What identifies the weights behind a model name, where known without reading the file: the
    sha256 of a known chunked model, the package of a packaged one, the size of a local GGUF."""
    if engine != "embedded":
        return None
    from ttscale.engines.model_files import MODELS, ChunkedModel

    name = model or _default_model()
    m = MODELS.get(name)
    if isinstance(m, ChunkedModel):
        return f"sha256:{m.sha256}"
    if m is not None:
        return f"{m.package}=={m.version}:{m.filename}"
    p = Path(name).expanduser()
    return f"{p.name}:{p.stat().st_size} bytes" if p.is_file() else None


def _checked(name: str, values: dict[str, Any], kind: str) -> Any:
    """Options as the entry reads them, defaults included (``threads=0`` given or not is the same)."""
    if kind == "engine":
        from ttscale.engines import load_engines as registry
    else:
        from ttscale.verifiers import load_verifiers as registry
    return jsonable(registry().get(name).make_params(values))


def fingerprint(spec: RunSpec, ds: Dataset, *, no_grade: bool) -> dict[str, Any]:
    """Settings beyond the runner's own that change results (see ``Runner.fingerprint``)."""
    return {
        "dataset": ds.name, "model_file": model_file_id(spec.engine, spec.model),
        "engine_params": _checked(spec.engine, spec.eparams, "engine"),
        "verifier_params": _checked(spec.verifiers[0], spec.vparams, "verifier") if spec.verifiers else {},
        "extra_engines": {k: f"{e}:{m or ''}" for k, (e, m) in sorted(spec.extras.items())},
        "graded": not no_grade,
    }


def check_resume_early(out: Path, spec: RunSpec, checked: Any, ds: Dataset, *, no_grade: bool) -> None:
    """The resume check on what is known before the engine exists (the runner checks again after)."""
    from ttscale.lab.runner import read_results

    want = {"strategy": spec.strategy, "params": jsonable(checked), "seed": spec.seed,
            "budget": spec.budget.to_dict(), "engine": spec.engine, "system_prompt": spec.system_prompt,
            "verifiers": sorted(spec.verifiers), **fingerprint(spec, ds, no_grade=no_grade)}
    check_resume(out, read_results(out)[0], want, ds.problems)


def load_engines(spec: RunSpec, out: Console) -> tuple[Engine, dict[str, Engine]]:
    """The policy engine and the extra ones, saying what takes time (assembling, loading)."""
    from ttscale.engines import make_engine

    if spec.engine == "embedded":
        from ttscale.engines.model_files import resolve_model

        path = resolve_model(spec.model, progress=lambda msg: out.print(f"model: {msg}", soft_wrap=True))
        out.print(f"model: loading {path.name} ({path.stat().st_size / 1e9:.2f} GB)...", soft_wrap=True)
    t0 = time.perf_counter()
    eng = make_engine(spec.engine, spec.model, spec.eparams)
    if spec.engine == "embedded":
        out.print(f"model: loaded in {time.perf_counter() - t0:.1f}s; the first tokens come once the prompts "
                  "are processed", soft_wrap=True)
    if spec.cache is not None:
        from ttscale.engines.cache import CachingEngine

        try:
            eng = CachingEngine(eng, spec.cache)
        except BaseException:
            asyncio.run(eng.aclose())
            raise
    extra = {name: make_engine(kind, m, {}) for name, (kind, m) in spec.extras.items()}
    return eng, extra


def raise_terminated(signum: int, frame: Any) -> None:
    """SIGTERM handler outside the event loop (install it first thing): stop like Ctrl-C."""
    raise Terminated()


def execute(spec: RunSpec, ds: Dataset, out: Path, *, no_grade: bool, concurrency: int, progress: bool,
            progress_every: float, console: Console, gate: StopGate | None = None) -> RunSummary:
    """Load the engines, run, close them. While running, SIGTERM cancels the problems in flight
    like Ctrl-C (``summary.terminated``); outside the loop :func:`raise_terminated` handles it."""
    from ttscale.datasets.code import code_runtime
    from ttscale.lab.runner import Runner
    from ttscale.verifiers import make_verifier
    from ttscale.verifiers.math_answers import MathAnswers

    eng, extra = load_engines(spec, console)
    try:
        verifiers = {name: make_verifier(name, eng, spec.vparams if i == 0 else {})
                     for i, name in enumerate(spec.verifiers)}
        code = code_runtime(ds)  # code datasets: program answers and a sandbox executor
        runner = Runner(
            engine=eng, strategy=spec.strategy, params=spec.params,
            answers=code.answers if code is not None else MathAnswers(),
            grader=None if no_grade else make_grader(ds), budget=spec.budget, seed=spec.seed,
            system_prompt=spec.system_prompt, concurrency=concurrency, verifiers=verifiers,
            make_verifier=lambda n: make_verifier(n, eng), progress=progress, engines=extra,
            fingerprint=fingerprint(spec, ds, no_grade=no_grade), progress_interval_s=progress_every,
            console=console, executor=code.executor if code is not None else None, gate=gate,
        )
        console.print(f"[bold]ttscale run[/]: {spec.strategy} on {ds.name} ({len(ds.problems)} problems) "
                      f"with {eng.name}:{eng.model} -> {out}", soft_wrap=True)
    except BaseException:
        asyncio.run(_close([eng, *extra.values()]))
        raise
    return asyncio.run(_run_async(runner, ds, out, [eng, *extra.values()]))


async def _close(engines: list[Engine]) -> None:
    for e in engines:
        await e.aclose()


async def _run_async(runner: Any, ds: Dataset, out: Path, engines: list[Engine]) -> RunSummary:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated = False

    def on_term() -> None:
        nonlocal terminated
        if not terminated and task is not None:  # once: a repeated SIGTERM does not cut the clean-up
            task.cancel()
        terminated = True

    loop.add_signal_handler(signal.SIGTERM, on_term)
    try:
        summary: RunSummary = await runner.run(ds.problems, out, lock=False)
        summary.replicas = replica_stats(engines[0]) or []
        summary.reused_samples = getattr(engines[0], "hits", 0)
    finally:
        try:
            await _close(engines)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, raise_terminated)
    summary.terminated = terminated
    summary.interrupted = summary.interrupted or terminated
    return summary
