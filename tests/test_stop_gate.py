"""The graceful stop (``--stop-after``, SIGUSR1): no new problem starts, those in flight finish and are saved."""

import asyncio
import json
import os
import signal
import time

import pytest
import yaml
from typer.testing import CliRunner

from test_sweep import SCRIPT, Engines, recipe_dict
from ttscale.cli import app
from ttscale.core.errors import ConfigError
from ttscale.core.types import Problem
from ttscale.engines.scripted import ScriptedEngine
from ttscale.lab.recipe import parse_recipe
from ttscale.lab.runner import Runner, read_results
from ttscale.lab.stop_gate import EXIT_STOPPED, StopGate, cli_gate, parse_duration
from ttscale.lab.sweep import run_sweep
from ttscale.verifiers.math_answers import MathAnswers


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("45s", 45.0), ("90m", 5400.0), ("1.5h", 5400.0),
                                              ("2h30m", 9000.0), ("1d", 86400.0), (" 2H ", 7200.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2x", "h2", "-5", "0", "0m", "2h 30q"])
def test_parse_duration_rejects_with_the_option_and_value(text):
    with pytest.raises(ConfigError, match=r"--stop-after: .*" + repr(text).replace("(", r"\(")[1:-1]):
        parse_duration(text)


def test_gate_closes_at_its_deadline_and_keeps_the_first_reason():
    gate = StopGate.after(0.05, "--stop-after 0.05")
    assert not gate.closed() and gate.reason is None
    time.sleep(0.06)
    assert gate.closed() and gate.reason == "--stop-after 0.05"
    gate.close("SIGUSR1")
    assert gate.reason == "--stop-after 0.05"
    assert not StopGate.after(None).closed()


def test_sigusr1_closes_the_cli_gate():
    old = signal.getsignal(signal.SIGUSR1)
    try:
        gate = cli_gate(None)
        assert gate.deadline is None and not gate.closed()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)  # the handler runs in the main thread at the next bytecode boundary
        assert gate.closed() and gate.reason == "SIGUSR1"
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_runner_finishes_the_problems_in_flight_and_starts_no_more(tmp_path):
    problems = [Problem(id=f"p{i}", prompt=f"q{i}", answer="5") for i in range(8)]
    engine = ScriptedEngine({f"p{i}": [f"w{i} \\boxed{{5}}"] for i in range(8)}, delay_s=0.05)
    gate = StopGate()
    runner = Runner(engine=engine, strategy="self_consistency", params={"n": 2, "max_tokens": 20},
                    answers=MathAnswers(), concurrency=3, progress=False, gate=gate,
                    on_result=lambda res: gate.close("test"))
    out = tmp_path / "r.jsonl"
    summary = asyncio.run(runner.run(problems, out))
    # 3 problems were in flight when the first finished and closed the gate: all 3 finish, 5 never start
    assert (summary.done_now, summary.left, summary.stopped, summary.interrupted) == (3, 5, "test", False)
    records, _ = read_results(out)
    assert [r["problem_id"] for r in records] == ["p0", "p1", "p2"]
    assert sorted({c.problem_id for c in engine.calls}) == ["p0", "p1", "p2"]

    # a rerun without the gate does the rest
    engine2 = ScriptedEngine({f"p{i}": [f"w{i} \\boxed{{5}}"] for i in range(8)})
    runner2 = Runner(engine=engine2, strategy="self_consistency", params={"n": 2, "max_tokens": 20},
                     answers=MathAnswers(), concurrency=3, progress=False)
    again = asyncio.run(runner2.run(problems, out))
    assert (again.done_before, again.done_now, again.left, again.stopped) == (3, 5, 0, None)
    assert sorted({c.problem_id for c in engine2.calls}) == [f"p{i}" for i in range(3, 8)]


def test_sweep_stops_between_runs_writes_the_table_and_resumes(tmp_path):
    d = recipe_dict(tmp_path)
    d["runs"].append({"strategy": "self_consistency", "params": {"n": 2, "max_tokens": 50}})
    gate = StopGate()
    engines = Engines()
    res = run_sweep(parse_recipe(d, source="r.yaml"), progress=False, engine_factory=engines, gate=gate,
                    on_run=lambda run: gate.close("test") if run.index == 1 else None)
    assert res.stopped == "test" and not res.interrupted
    assert res.summaries[0].done_now == 3 and (res.summaries[1].done_now, res.summaries[1].left) == (0, 3)
    assert read_results(res.runs[1].path)[0] == []
    assert {r["config"] for r in res.rows} and (tmp_path / "sweep" / "table.jsonl").exists()

    engines = Engines()
    res = run_sweep(parse_recipe(d, source="r.yaml"), progress=False, engine_factory=engines, gate=StopGate())
    assert res.stopped is None and list(res.summaries) == [0, 1]
    assert res.summaries[0].done_now == 0 and res.summaries[1].done_now == 3


def test_a_gate_that_closes_after_all_work_is_done_is_no_stop(tmp_path):
    gate = StopGate()
    res = run_sweep(parse_recipe(recipe_dict(tmp_path), source="r.yaml"), progress=False, engine_factory=Engines(),
                    gate=gate)
    gate.close("late")
    assert res.stopped is None and res.summaries[0].done_now == 3


def test_cli_sweep_stop_after_exits_75_then_resumes(tmp_path):
    f = tmp_path / "recipe.yaml"
    f.write_text(yaml.safe_dump(recipe_dict(tmp_path, engines=[{"engine": "scripted",
                                                                 "model": str(tmp_path / "script.json")}])))
    (tmp_path / "script.json").write_text(json.dumps(SCRIPT))
    cli = CliRunner()
    old = signal.getsignal(signal.SIGUSR1)
    try:
        r = cli.invoke(app, ["sweep", str(f), "--no-progress", "--stop-after", "0.001"])
        assert r.exit_code == EXIT_STOPPED, r.output
        assert "stopped by --stop-after 0.001" in r.output and "rerun the same command to resume" in r.output
        r = cli.invoke(app, ["sweep", str(f), "--no-progress", "--stop-after", "1h"])
        assert r.exit_code == 0, r.output
        assert "(30 rows)" in r.output
        r = cli.invoke(app, ["sweep", str(f), "--no-progress", "--stop-after", "soon"])
        assert isinstance(r.exception, ConfigError) and "--stop-after: cannot read 'soon'" in str(r.exception)
    finally:
        signal.signal(signal.SIGUSR1, old)
