"""The ``ttscale`` command line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ttscale.core.errors import TtscaleError
from ttscale.core.io import slug
from ttscale.core.registry import parse_kv

app = typer.Typer(
    add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
    help="ttscale: spend test-time compute (sampling, verifying, searching) to answer hard prompts better.",
)
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)
_state = {"debug": False}
DEFAULT_LIMIT = 6
"""Problems of the bundled dataset that a bare ``ttscale run`` solves (~15 minutes on 2 CPU cores)."""


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False) -> None:
    _state["debug"] = debug


@app.command()
def run(
    engine: Annotated[str, typer.Option(help="engine: embedded, openai, replay, scripted")] = "embedded",
    model: Annotated[str | None, typer.Option(help="model: a name, a GGUF path, an upstream model or a file")] = None,
    engine_param: Annotated[list[str] | None, typer.Option("--engine-param", help="engine option key=value")] = None,
    extra_engine: Annotated[list[str] | None, typer.Option(
        "--extra-engine", help="another engine strategies can name, NAME=ENGINE[:MODEL] (e.g. AB-MCTS arms)")] = None,
    dataset: Annotated[str, typer.Option(help="file, preset (gsm8k, math500, aime24), hf:NAME, rg:TASK")] = "default",
    question_field: Annotated[str | None, typer.Option(help="field holding the question")] = None,
    answer_field: Annotated[str | None, typer.Option(help="field holding the reference answer")] = None,
    split: Annotated[str | None, typer.Option(help="dataset split (Hugging Face)")] = None,
    limit: Annotated[int | None, typer.Option(help="run only the first N problems")] = None,
    dataset_seed: Annotated[int, typer.Option(help="seed of generated datasets (rg:TASK)")] = 0,
    strategy: Annotated[str, typer.Option(help="strategy name (see `ttscale strategies`)")] = "self_consistency",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="strategy parameter key=value")] = None,
    verifier: Annotated[list[str] | None, typer.Option(help="verifier(s) to configure, first is default")] = None,
    verifier_param: Annotated[list[str] | None, typer.Option("--verifier-param", help="key=value for --verifier")] = None,
    max_generations: Annotated[int | None, typer.Option(help="budget: max policy generations per problem")] = None,
    max_generated_tokens: Annotated[int | None, typer.Option(help="budget: max generated tokens per problem")] = None,
    seed: Annotated[int, typer.Option(help="run seed")] = 0,
    system_prompt: Annotated[str | None, typer.Option(help="system prompt ('' for none)")] = None,
    concurrency: Annotated[int, typer.Option(help="problems in flight at once")] = 16,
    out: Annotated[Path | None, typer.Option(help="results JSONL (rerun with the same file to resume)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Run a strategy over a dataset; one JSON line per problem, resumable."""
    from ttscale.core.budget import Budget
    from ttscale.datasets import load_dataset, make_grader
    from ttscale.engines import make_engine
    from ttscale.lab.runner import DEFAULT_SYSTEM_PROMPT, Runner
    from ttscale.verifiers import make_verifier
    from ttscale.verifiers.math_answers import MathAnswers

    params = parse_kv(param, "--param")
    eparams = parse_kv(engine_param, "--engine-param")
    vparams = parse_kv(verifier_param, "--verifier-param")
    if engine == "replay" and dataset == "default" and model:
        dataset = model
    if dataset == "default" and limit is None:
        limit = DEFAULT_LIMIT
        console.print(f"bundled dataset: the first {limit} problems (--limit 40 for all of them)")
    ds = load_dataset(dataset, question_field=question_field, answer_field=answer_field, split=split,
                      limit=limit, seed=dataset_seed)
    budget = Budget(max_generations, max_generated_tokens)
    from ttscale.strategies.base import load_strategies

    entry = load_strategies().get(strategy)
    checked = entry.make_params(params)  # validate before loading a model
    extras = _extra_engines(extra_engine)
    eng = make_engine(engine, model, eparams)
    engines = {name: make_engine(kind, m, {}) for name, (kind, m) in extras.items()}
    if out is None:
        key = json.dumps([json.loads(json.dumps(checked, default=lambda o: o.__dict__)), budget.to_dict()],
                         sort_keys=True)
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        out = Path("runs") / f"{slug(ds.name)}__{strategy}__{slug(eng.model)}__s{seed}__{digest}.jsonl"

    verifiers = {}
    for name in verifier or []:
        verifiers[name] = make_verifier(name, eng, vparams if name == (verifier or [None])[0] else {})

    runner = Runner(
        engine=eng, strategy=strategy, params=params, answers=MathAnswers(), grader=make_grader(ds),
        budget=budget, seed=seed,
        system_prompt=DEFAULT_SYSTEM_PROMPT if system_prompt is None else (system_prompt or None),
        concurrency=concurrency, verifiers=verifiers, make_verifier=lambda n: make_verifier(n, eng),
        progress=progress, engines=engines,
    )
    console.print(f"[bold]ttscale run[/]: {strategy} on {ds.name} ({len(ds.problems)} problems) "
                  f"with {eng.name}:{eng.model} -> {out}")

    async def go() -> Any:
        try:
            return await runner.run(ds.problems, out)
        finally:
            await eng.aclose()
            for e in engines.values():
                await e.aclose()

    summary = asyncio.run(go())
    acc = f"{summary.accuracy:.1%}" if summary.accuracy is not None else "n/a"
    console.print(
        f"{summary.done_before + summary.done_now}/{summary.total} problems done "
        f"({summary.done_now} now, {summary.done_before} resumed), accuracy {acc}, "
        f"{summary.generated_tokens} generated tokens in {summary.wall_time_s:.1f}s"
    )
    if summary.cached_prompt_tokens:
        console.print(f"prefix cache hits: {summary.cached_prompt_tokens} of {summary.prompt_tokens} prompt tokens "
                      f"({summary.cached_prompt_tokens / max(1, summary.prompt_tokens):.1%})")
    console.print(f"results: {out}")
    console.print(f"summary: ttscale report {out}")
    if summary.interrupted:
        err_console.print("interrupted: finished problems are saved; rerun the same command to resume")
        raise typer.Exit(130)


def _extra_engines(specs: list[str] | None) -> dict[str, tuple[str, str | None]]:
    """``NAME=ENGINE[:MODEL]`` options -> {name: (engine, model)}."""
    out: dict[str, tuple[str, str | None]] = {}
    for spec in specs or []:
        name, sep, rest = spec.partition("=")
        name = name.strip()
        if not sep or not name or not rest.strip():
            raise TtscaleError(f"--extra-engine {spec!r}: expected NAME=ENGINE[:MODEL], e.g. big=embedded:qwen2.5-coder-1.5b")
        if name == "policy" or name in out:
            raise TtscaleError(f"--extra-engine {spec!r}: the name {name!r} is taken")
        kind, _, m = rest.strip().partition(":")
        out[name] = (kind, m or None)
    return out


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="results JSONL files, sweep tables (folder, table.jsonl, "
                                                      "table.parquet) and at most one policy JSON")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="also write a self-contained HTML report here")] = None,
) -> None:
    """Accuracy, tokens and generations per problem, per strategy configuration."""
    from ttscale.lab.analysis_command import report_tables, split_report_inputs
    from ttscale.lab.report import summarize

    tables, plain, policies = split_report_inputs(results)
    if as_json and tables and plain:
        raise TtscaleError("--json takes either sweep tables or results files, not both")
    report_tables(tables, plain, policies, html=html, as_json=as_json, out=console)
    if not plain:
        return
    rows = summarize(plain)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="ttscale report (means per problem)")
    for col in ("strategy", "params", "model", "problems", "accuracy", "1-sample acc", "gen tok",
                "prompt tok", "verifier tok", "gens", "s"):
        t.add_column(col, overflow="fold")
    for r in rows:
        params = " ".join(f"{k}={_short(v)}" for k, v in r["params"].items())
        t.add_row(
            r["strategy"], params, slug(r["model"]), str(r["problems"]),
            pct(r["accuracy"]), pct(r["sample_accuracy"]), f"{r['mean_generated_tokens']:.0f}",
            f"{r['mean_prompt_tokens']:.0f}", f"{r['mean_verifier_tokens']:.0f}",
            f"{r['mean_generations']:.1f}", f"{r['mean_wall_time_s']:.1f}",
        )
    console.print(t)


def _short(v: Any, width: int = 24) -> str:
    """A parameter value for a table cell (prompts and other long strings cut, newlines shown)."""
    s = str(v).replace("\n", "\\n")
    return s if len(s) <= width else s[: width - 1] + "…"


def pct(v: float | None) -> str:
    return f"{v:.1%}" if v is not None else "-"


def _describe(kind: str) -> None:
    from ttscale.engines import load_engines
    from ttscale.strategies.base import load_strategies
    from ttscale.verifiers import load_verifiers

    reg = {"strategies": load_strategies, "engines": load_engines, "verifiers": load_verifiers}[kind]()
    for e in reg.entries():
        console.print(f"[bold cyan]{e.name}[/]: {e.summary}")
        for f in e.describe():
            console.print(f"    {f['name']}: {f['type']} = {f['default']!r}  [dim]{f['help']}[/]")


@app.command()
def strategies() -> None:
    """List every strategy with its parameters and defaults."""
    _describe("strategies")


@app.command()
def engines() -> None:
    """List every engine with its options."""
    _describe("engines")


@app.command()
def verifiers() -> None:
    """List every verifier with its options."""
    _describe("verifiers")


def _register_commands() -> None:
    from ttscale.serve.command import serve_command

    app.command("serve", help="Serve any strategy over an OpenAI-compatible API.")(serve_command)
    from ttscale.testbeds.command import testbed_command

    app.command("testbed", help="Synthetic metastable-chain testbed figures.")(testbed_command)
    from ttscale.lab.analysis_command import fit_policy_command, plot_command

    app.command("fit-policy", help="Fit the compute-optimal policy on a sweep table.")(fit_policy_command)
    app.command("plot", help="Plot accuracy vs compute per strategy and difficulty bin.")(plot_command)
    from ttscale.lab.sweep_command import sweep_command
    app.command("sweep", help="Run a RECIPE.yaml sweep: datasets x strategies x grids x budgets x seeds.")(sweep_command)


_register_commands()


def main() -> None:
    """Console entry point: clear one-line errors, tracebacks only with --debug."""
    debug = "--debug" in sys.argv[1:]
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except TtscaleError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}")  # a message may hold [brackets]
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors are ClickException
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {e} (rerun with --debug for a traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
