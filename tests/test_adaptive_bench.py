"""bench/adaptive_recorded.py on a small recorded directory made here: the simulation of every
rule must equal the registered strategies run through the Runner on the replay engine (the bench
asserts it), and the held-out tables and the RESULT line must come out."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from helpers import write_recorded

BENCH = Path(__file__).resolve().parents[1] / "bench" / "adaptive_recorded.py"


def _bench():
    spec = importlib.util.spec_from_file_location("adaptive_recorded_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_bench_runs_held_out_and_matches_real_strategies(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    data = tmp_path / "rec"
    data.mkdir()
    write_recorded(data / "analysis_benchA_m1.jsonl", n_problems=6, n_samples=70, seed=1)
    write_recorded(data / "analysis_benchA_m2.jsonl", n_problems=6, n_samples=70, seed=2)
    write_recorded(data / "analysis_benchB_m1.jsonl", n_problems=6, n_samples=70, seed=3)
    bench = _bench()
    assert bench.main(["--data", str(data), "--seeds", "2", "--out-plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    checks = int(re.search(r"real-strategy check: (\d+) \(strategy, problem\) runs", out).group(1))
    assert checks == 18  # 3 strategies x 6 problems, every one equal to the simulation
    assert "leave-one-benchmark-out" in out and "mc4_benchA" in out and "leave-one-file-out (6 files" in out
    result = out.strip().splitlines()[-1]
    assert re.fullmatch(r"RESULT saving_vs_maj64=[-\d.]+ loss_pt=[-\d.]+ rule=adaptive_margin "
                        r"bench_mean_saving=[-\d.]+ bench_mean_loss_pt=[-\d.]+", result)
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_declared_options_and_multiple_choice_rule():
    bench = _bench()
    assert bench.declared_options("mc4_aime2024_Qwen3-4B") == 4 and bench.declared_options("aime2024_x") == 0
    labs, toks = [0, 0, 0, 0, 1], [10, 10, 10, 10, 10]
    assert bench.sim_ours(labs, toks, bench.OURS_DEFAULT) == (3, 0)  # open answers: 3 agreeing samples
    assert bench.sim_ours(labs, toks, bench.OURS_DEFAULT, options=4) == (4, 0)  # 4 options: wait for a 4th
