"""The ``ttscale`` command line."""

from __future__ import annotations

import json
import signal
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
# off a terminal nothing is wrapped: a long hint (a pip command) stays one pasteable line
console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}
ENGINE_NAMES = "embedded, openai, vllm, pool, replay, scripted, ensemble"


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", metavar="", help="show tracebacks on errors")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def run(
    engine: Annotated[str, typer.Option(help=f"engine: {ENGINE_NAMES}")] = "embedded",
    model: Annotated[str | None, typer.Option(help="model: a name, a GGUF path, an upstream model or a file")] = None,
    engine_param: Annotated[list[str] | None, typer.Option("--engine-param", help="engine option key=value")] = None,
    extra_engine: Annotated[list[str] | None, typer.Option(
        "--extra-engine", help="another engine strategies can name, NAME=ENGINE[:MODEL] (e.g. AB-MCTS arms)")] = None,
    dataset: Annotated[str, typer.Option(help="file, preset (gsm8k, math500, aime24, humaneval), hf:NAME, rg:TASK")] = "default",
    question_field: Annotated[str | None, typer.Option(help="field holding the question")] = None,
    answer_field: Annotated[str | None, typer.Option(help="field holding the reference answer")] = None,
    no_grade: Annotated[bool, typer.Option(
        "--no-grade", metavar="", help="run without grading (a dataset without reference answers)")] = False,
    split: Annotated[str | None, typer.Option(help="dataset split (Hugging Face)")] = None,
    limit: Annotated[int | None, typer.Option(help="run only the first N problems")] = None,
    dataset_seed: Annotated[int, typer.Option(help="seed of generated datasets (rg:TASK)")] = 0,
    strategy: Annotated[str | None, typer.Option(
        help="strategy name (see `ttscale strategies`); default: weighted best-of-8 by token confidence on the "
             "embedded engine, self_consistency on the others")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="strategy parameter key=value")] = None,
    verifier: Annotated[list[str] | None, typer.Option(help="verifier(s) to configure, first is default")] = None,
    verifier_param: Annotated[list[str] | None, typer.Option("--verifier-param", help="key=value for --verifier")] = None,
    max_generations: Annotated[int | None, typer.Option(help="budget: max policy generations per problem")] = None,
    max_generated_tokens: Annotated[int | None, typer.Option(help="budget: max generated tokens per problem")] = None,
    seed: Annotated[int, typer.Option(help="run seed")] = 0,
    system_prompt: Annotated[str | None, typer.Option(help="system prompt ('' for none)")] = None,
    concurrency: Annotated[int, typer.Option(help="problems in flight at once")] = 16,
    out: Annotated[Path | None, typer.Option(help="results JSONL (rerun with the same file to resume)")] = None,
    cache: Annotated[Path | None, typer.Option(
        help="generation cache (SQLite): seeded samples stored here are reused, e.g. across strategies")] = None,
    progress: Annotated[bool, typer.Option(
        metavar="", help="show progress: a live bar on a terminal, else a plain line every --progress-every s")] = True,
    progress_every: Annotated[float, typer.Option(help="seconds between plain progress lines (no terminal)")] = 15.0,
    ray: Annotated[str | None, typer.Option("--ray", help="fan problems out to Ray actors: --ray alone starts a "
                                            "local cluster; --ray ADDRESS (auto, HOST:PORT) joins one")] = None,
    ray_actors: Annotated[int, typer.Option(help="Ray actors (engine replicas); 0: as many as fit")] = 0,
    ray_actor: Annotated[list[str] | None, typer.Option(
        "--ray-actor", help="Ray resources per actor key=value: num_cpus (default 1), num_gpus, memory")] = None,
    stop_after: Annotated[str | None, typer.Option(
        "--stop-after", help="start no new problem after this long (90m, 2h, 2h30m); problems in flight finish "
        "and are saved, exit 75; rerun to resume. kill -USR1 PID does the same at once")] = None,
) -> None:
    """Run a strategy over a dataset; one JSON line per problem, resumable."""
    from ttscale.lab import run_command as rc
    from ttscale.lab.runner import results_lock
    from ttscale.lab.stop_gate import cli_gate

    signal.signal(signal.SIGTERM, rc.raise_terminated)  # SIGTERM stops like Ctrl-C (exit 143)
    if ray is not None and stop_after is not None:
        raise TtscaleError("--stop-after is not supported with --ray yet; stop a Ray run with Ctrl-C or SIGTERM "
                           "(finished problems are kept)")
    gate = cli_gate(stop_after)  # the clock starts with the command, model loading included
    strategy, params, verifiers, vparams = rc.default_strategy(
        engine, strategy, parse_kv(param, "--param"), list(verifier or []),
        parse_kv(verifier_param, "--verifier-param"), say=lambda m: console.print(m, highlight=False))
    spec = rc.RunSpec(
        engine=engine, model=model, eparams=parse_kv(engine_param, "--engine-param"),
        extras=_extra_engines(extra_engine), strategy=strategy, params=params,
        verifiers=verifiers, vparams=vparams,
        budget=rc.make_budget(max_generations, max_generated_tokens), seed=seed,
        system_prompt=system_prompt or None, cache=cache,
    )
    if concurrency < 1:
        raise TtscaleError(f"--concurrency must be >= 1, got {concurrency}")
    if progress_every <= 0:
        raise TtscaleError(f"--progress-every must be > 0 seconds, got {progress_every}")
    if engine == "replay" and dataset == "default" and model:
        dataset = model
    ds = rc.run_dataset(dataset, question_field=question_field, answer_field=answer_field, split=split,
                        limit=limit, seed=dataset_seed, no_grade=no_grade, out=console)
    if system_prompt is None:  # the dataset's kind picks the default (code datasets ask for a program)
        spec.system_prompt = rc.default_system_prompt(ds)
    checked = rc.check_before_loading(spec, ds)
    if ray is not None and cache is not None:
        raise TtscaleError(f"--cache {cache} is a file on this machine; Ray actors cannot share it (drop one)")
    if ray is not None:  # scale out: problems go to Ray actors, one engine replica each; the driver writes `out`
        from ttscale.lab.ray_run import cli_run

        summary, out, stats = cli_run(
            (ray, ray_actors, parse_kv(ray_actor, "--ray-actor"), concurrency), engine, model, spec.eparams,
            spec.extras, ds, strategy=strategy, params=spec.params, budget=spec.budget, seed=seed,
            verifiers=spec.verifiers, vparams=spec.vparams, system_prompt=spec.system_prompt,
            out=out or (lambda m: rc.results_path(ds.name, strategy, m, seed, checked, spec.budget)),
            progress=progress, say=console.print)
        return _print_run_summary(summary, out, stats)
    out = out or rc.default_out(spec, checked, ds.name)
    with results_lock(out):  # before the model loads: a second run on the same file stops here
        rc.check_resume_early(out, spec, checked, ds, no_grade=no_grade)
        summary = rc.execute(spec, ds, out, no_grade=no_grade, concurrency=concurrency, progress=progress,
                             progress_every=progress_every, console=console, gate=gate)
    _print_run_summary(summary, out, summary.replicas)


def _print_run_summary(summary: Any, out: Path, stats: list[dict[str, Any]] | None = None) -> None:
    """A run's summary, and the per-replica counters of a pool or of Ray actors."""
    acc = f"{summary.accuracy:.1%}" if summary.accuracy is not None else "n/a"
    console.print(
        f"{summary.done_before + summary.done_now}/{summary.total} problems done "
        f"({summary.done_now} now, {summary.done_before} resumed), accuracy {acc}, "
        f"{summary.generated_tokens} generated tokens in {summary.wall_time_s:.1f}s"
    )
    if stats:
        from ttscale.lab.ray_run import replica_lines

        for line in replica_lines(stats):
            console.print(line, highlight=False)
    if summary.cached_prompt_tokens:
        console.print(f"prefix cache hits: {summary.cached_prompt_tokens} of {summary.prompt_tokens} prompt tokens "
                      f"({summary.cached_prompt_tokens / max(1, summary.prompt_tokens):.1%})")
    _print_gain(out)
    if summary.reused_samples:
        console.print(f"generation cache: {summary.reused_samples} samples reused (their tokens are still counted)")
    console.print(f"results: {out}")
    console.print(f"summary: ttscale report {out}")
    if summary.interrupted:
        what = "terminated" if summary.terminated else "interrupted"
        err_console.print(f"{what}: finished problems are saved; rerun the same command to resume")
        raise typer.Exit(143 if summary.terminated else 130)
    if summary.left:  # a stop gate closed with problems not started
        from ttscale.lab.stop_gate import EXIT_STOPPED

        err_console.print(f"stopped by {summary.stopped}: {summary.left} problems not started, the ones in flight were "
                          "finished and saved; rerun the same command to resume")
        raise typer.Exit(EXIT_STOPPED)


def _print_gain(out: Path) -> None:
    """Single-sample accuracy next to the strategy's: what the extra compute bought, with its noise."""
    from ttscale.lab.report import gain_over_one_sample

    try:
        g = gain_over_one_sample(out)
    except TtscaleError:
        return
    if g is None:
        return
    console.print(
        f"single sample: {g['sample_accuracy']:.1%} (mean over each problem's samples); strategy: {g['accuracy']:.1%}; "
        f"gain {100 * g['gain']:+.1f} points (95% interval {100 * g['gain_low']:+.1f} to {100 * g['gain_high']:+.1f}, "
        f"paired over {g['problems']} problems)", highlight=False)


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


def _register_view() -> None:
    from ttscale.view.command import view_command

    app.command("view", help="Look inside runs and sweeps in the browser (local web app, or --export one page).")(view_command)


_register_view()


def _ray_flag(argv: list[str]) -> list[str]:
    """``--ray`` with no address after it means a local cluster (``--ray local``)."""
    if "--ray" not in argv:
        return argv
    from ttscale.lab.ray_backend import looks_like_address

    out = list(argv)
    for i in range(len(out) - 1, -1, -1):
        if out[i] == "--ray" and (i + 1 == len(out) or not looks_like_address(out[i + 1])):
            out.insert(i + 1, "local")
    return out


def main() -> None:
    """Console entry point: clear one-line errors, tracebacks only with --debug."""
    debug = "--debug" in sys.argv[1:]
    sys.argv[1:] = _ray_flag(sys.argv[1:])
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except TtscaleError as e:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt) as e:
        from ttscale.lab.run_command import Terminated

        err_console.print("terminated" if isinstance(e, Terminated) else "interrupted")
        sys.exit(143 if isinstance(e, Terminated) else 130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors are ClickException
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))} ({type(e).__name__}; rerun with --debug for a "
                          "traceback)", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
