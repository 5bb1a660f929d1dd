"""``ttscale sweep RECIPE.yaml`` (register with ``app.command("sweep")(sweep_command)``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def _pct(v: float | None) -> str:
    return f"{v:.1%}" if v is not None else "-"


def sweep_command(
    recipe: Annotated[Path, typer.Argument(help="the sweep recipe (YAML)")],
    out: Annotated[Path | None, typer.Option(help="output directory (default: the recipe's `out`)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the runs and configurations; run nothing")] = False,
    table_only: Annotated[bool, typer.Option("--table-only", help="rebuild the table from existing results")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar per run")] = True,
    ray: Annotated[str | None, typer.Option("--ray", help="run on Ray actors: --ray alone starts a local cluster; "
                                            "--ray ADDRESS (auto, HOST:PORT) joins one")] = None,
    ray_actors: Annotated[int, typer.Option(help="Ray actors (engine replicas) per engine; 0: as many as fit")] = 0,
    ray_actor: Annotated[list[str] | None, typer.Option(
        "--ray-actor", help="Ray resources per actor key=value: num_cpus (default 1), num_gpus, memory")] = None,
    stop_after: Annotated[str | None, typer.Option(
        "--stop-after", help="start no new problem after this long (90m, 2h, 2h30m); problems in flight finish "
        "and are saved, the table is written, exit 75; rerun to resume. kill -USR1 PID does the same at once")] = None,
) -> None:
    """Run a sweep recipe (resumable: rerun it to continue), then write <out>/table.{jsonl,parquet}."""
    from ttscale.core.errors import ConfigError
    from ttscale.lab.recipe import load_recipe
    from ttscale.lab.runner import read_results
    from ttscale.lab.stop_gate import EXIT_STOPPED, cli_gate
    from ttscale.lab.sweep import PlannedRun, derived_config, plan, run_sweep, summarize_by_seed

    console = Console(width=None if sys.stdout.isatty() else 200)
    if dry_run and table_only:
        raise ConfigError("--dry-run and --table-only exclude each other")
    gate = cli_gate(stop_after)  # the clock starts with the command, model loading included
    rec = load_recipe(recipe)
    runs = plan(rec, out)
    root = out if out is not None else rec.out

    if dry_run:
        console.print(f"[bold]sweep {rec.name}[/]: {len(runs)} runs -> {root}", highlight=False)
        n_configs = 0
        for r in runs:
            sub = r.config.subsample
            derived = [derived_config(rule, k, r.config.label) for rule in sub.select for k in sub.n] if sub else []
            n_configs += 1 + len(derived)
            done = len(read_results(r.path)[0]) if r.path.exists() else 0
            console.print(f"{r.index + 1:>4}. {r.config.label}  [dim]on {r.dataset.label} with {r.engine.label}, "
                          f"seed {r.seed}; {done} problems done; {r.path}[/]", highlight=False, soft_wrap=True)
            for label in derived:
                console.print(f"        + {label}", highlight=False, soft_wrap=True)
        console.print(f"{len(runs)} runs, {n_configs} table configurations "
                      f"({len(rec.datasets)} datasets x {len(rec.engines)} engines x {len(rec.seeds)} seeds)")
        return

    def announce(r: PlannedRun) -> None:
        console.print(f"[bold]run {r.index + 1}/{len(runs)}[/]: {r.config.label} on {r.dataset.label} "
                      f"(seed {r.seed}) with {r.engine.label} -> {r.path}")

    console.print(f"[bold]ttscale sweep[/] {rec.name}: {len(runs)} runs -> {root}"
                  + (" (table only)" if table_only else ""))
    executor = None
    if ray is not None and not table_only and rec.cache is not None:
        raise ConfigError(f"{rec.source}: cache: {str(rec.cache)!r} is a file on this machine; Ray actors "
                          "cannot share it (remove `cache` or run without --ray)")
    if ray is not None and not table_only:  # every engine's runs fan out to Ray actors (ttscale.lab.ray_run)
        from ttscale.core.registry import parse_kv
        from ttscale.lab.ray_run import RaySettings, sweep_executor

        executor = sweep_executor(RaySettings.parse(ray, ray_actors, parse_kv(ray_actor, "--ray-actor")))
    res = run_sweep(rec, out=out, table_only=table_only, progress=progress, on_run=announce, executor=executor,
                    gate=None if table_only else gate)

    t = Table(title=f"sweep {rec.name} (means per problem)")
    for col in ("dataset", "model", "config", "seed", "problems", "accuracy", "gen tok", "gens"):
        t.add_column(col, overflow="fold")
    for s in summarize_by_seed(res.rows):
        model = Path(s["model"]).name if "/" in s["model"] else s["model"]
        t.add_row(s["dataset"], model, s["config"], str(s["seed"]), str(s["problems"]), _pct(s["accuracy"]),
                  f"{s['mean_generated_tokens']:.0f}", f"{s['mean_generations']:.1f}")
    console.print(t)
    reused = sum(s.reused_samples for s in res.summaries.values())
    if reused:
        console.print(f"generation cache {rec.cache}: {reused} samples reused (their tokens are still counted)")
    if res.table_paths is not None:
        console.print(f"table: {res.table_paths[0]} and {res.table_paths[1]} ({len(res.rows)} rows)")
    if res.interrupted:
        Console(stderr=True).print("interrupted: finished problems are saved; rerun the same command to resume")
        raise typer.Exit(130)
    if res.stopped:
        Console(stderr=True).print(f"stopped by {res.stopped}: no new problem was started after it, the ones in "
                                   "flight were finished and saved; rerun the same command to resume")
        raise typer.Exit(EXIT_STOPPED)
