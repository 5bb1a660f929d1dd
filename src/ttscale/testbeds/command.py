"""``ttscale testbed EXPERIMENT`` (register with ``app.command("testbed")(testbed_command)``):
regenerates a figure of ``docs/testbed/`` (PNG + CSV + JSON) and prints its headline numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ttscale.core.errors import ConfigError

CHOICES = ("hitting", "vb-vf", "difficulty", "all")


def testbed_command(
    experiment: Annotated[str, typer.Argument(help="hitting (exp. 1), vb-vf (exp. 2), difficulty (exp. 3) or all")],
    seed: Annotated[int, typer.Option(help="seed of the chains, the samples and the PRM noise")] = 0,
    out_dir: Annotated[Path, typer.Option(help="where the PNG, CSV and JSON go")] = Path("docs/testbed"),
    quick: Annotated[bool, typer.Option(help="smaller settings (seconds; for smoke tests)")] = False,
) -> None:
    """Synthetic metastable-chain testbed: regenerate a figure and print its headline numbers."""
    from ttscale.testbeds.experiments import EXPERIMENTS

    if experiment not in CHOICES:
        raise ConfigError(f"unknown testbed experiment {experiment!r}; choose from {', '.join(CHOICES)}")
    names = list(EXPERIMENTS) if experiment == "all" else [experiment]
    files = {"hitting": "hitting_time", "vb-vf": "vb_vs_vf", "difficulty": "difficulty_bins"}
    for name in names:
        EXPERIMENTS[name](seed, out_dir, quick=quick)
        meta = json.loads((out_dir / f"{files[name]}.json").read_text())
        head = {k: v for k, v in meta.items() if k not in ("rows",)}
        typer.echo(f"[{name}] wrote {out_dir / files[name]}.png/.csv/.json")
        typer.echo(json.dumps(head, indent=1))
