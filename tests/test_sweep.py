import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from ttscale.cli import app
from ttscale.core.errors import ConfigError
from ttscale.engines.scripted import ScriptedEngine
from ttscale.lab.recipe import load_recipe, parse_recipe
from ttscale.lab.runner import read_results
from ttscale.lab.sweep import COLUMNS, plan, read_table, run_sweep, select, table_rows, table_schema
from ttscale.verifiers.math_answers import MathAnswers

# --------------------------------------------------------------------------------------------------
# fixtures: a 3-problem dataset and a script with exact token counts (one token per word)

PROBLEMS = [("a", "q a", "5"), ("b", "q b", "4"), ("c", "q c", "9")]
SCRIPT = {
    # answers 5 4 5 4, completion tokens 2 3 4 5; reference 5
    "a": ["x \\boxed{5}", "y y \\boxed{4}", "z z z \\boxed{5}", "w w w w \\boxed{4}"],
    # answers 3 3 4 4, tokens 2 3 2 4; reference 4
    "b": ["a \\boxed{3}", "b b \\boxed{3}", "c \\boxed{4}", "d d d \\boxed{4}"],
    # no answer, then the right one (cycled), tokens 3 1 3 1; reference 9
    "c": ["I give up", "\\boxed{9}"],
}


SRC = "best_of_n max_tokens=50 n=4 verifier=answer_check"


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in PROBLEMS))
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    return data, script


def recipe_dict(tmp_path: Path, **over) -> dict:
    data, script = write_inputs(tmp_path)
    d = {
        "name": "t",
        "out": str(tmp_path / "sweep"),
        "engines": [{"engine": "scripted", "model": str(script)}],
        "datasets": [{"dataset": str(data)}],
        "seeds": [0],
        "system_prompt": "",
        "verifiers": {"answer_check": {}},
        "runs": [{
            "strategy": "best_of_n",
            "params": {"n": 4, "verifier": "answer_check", "max_tokens": 50},
            "subsample": {"n": [1, 2, 4], "select": ["majority", "best_of_n", "weighted_best_of_n"]},
        }],
    }
    d.update(over)
    return d


class Engines:
    """An engine factory that keeps every scripted engine it built (to count calls)."""

    def __init__(self) -> None:
        self.built: list[ScriptedEngine] = []

    def __call__(self, spec):
        eng = ScriptedEngine(SCRIPT, model=spec.model)
        self.built.append(eng)
        return eng

    def problems_called(self) -> list[str]:
        return sorted({c.problem_id for e in self.built for c in e.calls})


def row(rows, pid, config):
    (r,) = [r for r in rows if r["problem_id"] == pid and r["config"] == config]
    return r


# --------------------------------------------------------------------------------------------------
# recipe validation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["runs"][0].update(strategy="nope"), "field runs[0].strategy = 'nope': unknown strategy 'nope'"),
        (lambda d: d["runs"][0]["params"].update(bogus=1), "field runs[0].params.bogus = 1: unknown field"),
        (lambda d: d["runs"][0]["params"].update(n="many"), "n='many' is not a valid int"),
        (lambda d: d["runs"][0].pop("strategy"), "field runs[0].strategy = None: missing field"),
        (lambda d: d.pop("runs"), "field runs = None: missing field"),
        (lambda d: d["runs"][0]["subsample"].update(n=[1, 8]),
         "field runs[0].subsample.n = [1, 8]: k=8 is larger than the run's n=4"),
        (lambda d: d["runs"][0]["subsample"].update(select=["median"]),
         "field runs[0].subsample.select[0] = 'median': unknown selection rule"),
        (lambda d: d["runs"][0].update(strategy="self_consistency", params={"n": 4}),
         "field runs[0].subsample.select[1] = 'best_of_n': needs verifier scores"),
        (lambda d: d["runs"][0].update(strategy="beam_search", params={"n": 4}),
         "field runs[0].strategy = 'beam_search': cannot be subsampled"),
        (lambda d: d["runs"][0].update(grid={"n": [2, 4]}), "field runs[0].grid.n = [2, 4]: also set in runs[0].params"),
        (lambda d: d["runs"][0].update(budgets=[{"max_tokens": 5}]), "field runs[0].budgets[0].max_tokens = 5"),
        (lambda d: d["runs"][0].update(budgets=[{"max_generations": 0}]), "max_generations = 0: must be >= 1"),
        (lambda d: d["runs"][0]["params"].update(verifier="oracle"), "params.verifier = 'oracle': unknown verifier"),
        (lambda d: d.update(engines=[{"engine": "warp"}]), "field engines[0].engine = 'warp': unknown engine 'warp'"),
        (lambda d: d.update(engines=[{"model": "x"}]), "field engines[0].engine = None: missing field"),
        (lambda d: d.update(datasets=[{"dataset": "x", "limit": -1}]), "field datasets[0].limit = -1: must be >= 1"),
        (lambda d: d.update(seeds=[0, "one"]), "field seeds[1] = 'one': must be an integer"),
        (lambda d: d.update(verifiers={"nope": {}}), "field verifiers.nope = 'nope': unknown verifier 'nope'"),
        (lambda d: d.update(outdir="x"), "field (top level).outdir = 'x': unknown field"),
    ],
)
def test_recipe_errors_name_file_field_and_value(tmp_path, change, message):
    d = recipe_dict(tmp_path)
    change(d)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError) as e:
        load_recipe(f)
    assert str(e.value).startswith(f"{f}: ")
    assert message in str(e.value)


def test_recipe_not_yaml_or_missing(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("runs: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_recipe(f)
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_recipe(tmp_path / "none.yaml")


def test_grid_budget_seed_expansion_and_plan(tmp_path):
    d = recipe_dict(tmp_path, seeds=[0, 1])
    d["runs"] = [
        {"strategy": "beam_search", "params": {"max_tokens": 256}, "grid": {"n": [4, 8], "beam_width": [2, 4]},
         "budgets": [{}, {"max_generated_tokens": 3000}]},
        {"strategy": "self_consistency", "subsample": {"n": [1, 2]}},
    ]
    r = parse_recipe(d, source="x.yaml")
    labels = [c.label for c in r.configs]
    assert labels == [
        "beam_search beam_width=2 max_tokens=256 n=4",
        "beam_search beam_width=2 max_tokens=256 n=4 budget.max_generated_tokens=3000",
        "beam_search beam_width=2 max_tokens=256",  # n=8 is the default: only differences are shown
        "beam_search beam_width=2 max_tokens=256 budget.max_generated_tokens=3000",
        "beam_search max_tokens=256 n=4",  # beam_width=4 is the default
        "beam_search max_tokens=256 n=4 budget.max_generated_tokens=3000",
        "beam_search max_tokens=256",
        "beam_search max_tokens=256 budget.max_generated_tokens=3000",
        "self_consistency",
    ]
    assert r.configs[0].params["beam_width"] == 2 and r.configs[0].params["temperature"] == 0.8
    assert r.configs[-1].subsample.n == (1, 2) and r.configs[-1].subsample.select == ("majority",)
    runs = plan(r)
    assert len(runs) == 9 * 2  # configs x seeds, one engine and one dataset
    assert [(x.config.label, x.seed) for x in runs[:2]] == [(labels[0], 0), (labels[0], 1)]
    assert len({x.path for x in runs}) == len(runs)
    assert all(x.path.parent == tmp_path / "sweep" / "runs" for x in runs)
    # a duplicate configuration is refused
    d["runs"].append({"strategy": "self_consistency", "params": {"n": 8}})
    with pytest.raises(ConfigError, match=r"this configuration appears twice \(runs\[1\] and runs\[2\]\)"):
        parse_recipe(d, source="x.yaml")


# --------------------------------------------------------------------------------------------------
# subsampling on a hand-made 4-candidate problem


def hand_made_record() -> dict:
    cands = [  # reference 7; "7.0" is the same answer as "7"
        ("5", 0.2, False, 10), ("7", 0.3, True, 20), ("5", 0.25, False, 30), ("7.0", 0.9, True, 40),
    ]
    return {
        "problem_id": "p", "answer": "7.0", "reference": "7", "correct": True, "strategy": "best_of_n",
        "params": {"n": 4, "max_tokens": 64, "verifier": "llm_judge", "temperature": 0.7, "top_p": 1.0,
                   "aggregate": "outcome", "logprobs": 0},
        "seed": 3, "budget": {"max_generations": None, "max_generated_tokens": None},
        "engine": "embedded", "model": "m",
        "cost": {"prompt_tokens": 100, "generated_tokens": 100, "generations": 4, "engine_calls": 1,
                 "verifier_prompt_tokens": 40, "verifier_generated_tokens": 8, "verifier_calls": 4,
                 "wall_time_s": 2.0, "flops": 2 * 1e9 * 248},
        "stopped_by_budget": False, "chosen": 3,
        "candidates": [{"id": i, "answer": a, "score": s, "correct": c, "completion_tokens": t, "text": ""}
                       for i, (a, s, c, t) in enumerate(cands)],
        "extra": {},
    }


async def test_subsampled_rows_are_exact():
    rows = await table_rows([hand_made_record()], sweep="s", dataset="d", answers=MathAnswers(),
                            subsample=parse_recipe({"runs": [{"strategy": "best_of_n", "params": {"n": 4},
                                                              "subsample": {"n": [1, 2, 3, 4]}}]}).configs[0].subsample)
    assert [list(r) for r in rows] == [list(COLUMNS)] * 13
    run = rows[0]
    assert (run["config"], run["derived_from"], run["budget_n"], run["correct"], run["generated_tokens"],
            run["prompt_tokens"], run["verifier_tokens"], run["flops"]) == (
        "best_of_n max_tokens=64 n=4", "", 4, True, 100, 100, 48, 4.96e11)
    assert run["cand_correct"] == [False, True, False, True] and run["sample_accuracy"] == 0.5
    assert run["mean_score"] == pytest.approx(0.4125)
    got = {(r["strategy"], r["budget_n"]): (r["answer"], r["correct"], r["generated_tokens"], r["prompt_tokens"],
                                            r["verifier_tokens"], r["generations"], r["wall_time_s"])
           for r in rows[1:]}
    assert got == {
        # k=1: every rule takes the only sample
        ("majority", 1): ("5", False, 10, 25, 12, 1, 0.5),
        ("best_of_n", 1): ("5", False, 10, 25, 12, 1, 0.5),
        ("weighted_best_of_n", 1): ("5", False, 10, 25, 12, 1, 0.5),
        # k=2: 5 vs 7 tie -> first seen; best score 0.3 -> 7; weights 0.2 vs 0.3 -> 7
        ("majority", 2): ("5", False, 30, 50, 24, 2, 1.0),
        ("best_of_n", 2): ("7", True, 30, 50, 24, 2, 1.0),
        ("weighted_best_of_n", 2): ("7", True, 30, 50, 24, 2, 1.0),
        # k=3: 5 twice; best 0.3 -> 7; weights 0.45 vs 0.3 -> 5 (its best member: 0.25)
        ("majority", 3): ("5", False, 60, 75, 36, 3, 1.5),
        ("best_of_n", 3): ("7", True, 60, 75, 36, 3, 1.5),
        ("weighted_best_of_n", 3): ("5", False, 60, 75, 36, 3, 1.5),
        # k=4: 5 and 7/7.0 tie -> 5; best 0.9 -> 7.0; weights 0.45 vs 1.2 -> 7.0 (best member 0.9)
        ("majority", 4): ("5", False, 100, 100, 48, 4, 2.0),
        ("best_of_n", 4): ("7.0", True, 100, 100, 48, 4, 2.0),
        ("weighted_best_of_n", 4): ("7.0", True, 100, 100, 48, 4, 2.0),
    }
    k2 = next(r for r in rows if r["strategy"] == "weighted_best_of_n" and r["budget_n"] == 2)
    assert k2["config"] == "weighted_best_of_n n=2 from best_of_n max_tokens=64 n=4"
    assert k2["derived_from"] == "best_of_n max_tokens=64 n=4"
    assert json.loads(k2["params"])["n"] == 2 and json.loads(k2["params"])["max_tokens"] == 64
    assert k2["flops"] == pytest.approx(2 * 1e9 * (50 + 30 + 24))
    assert k2["cand_correct"] == [False, True] and k2["cand_scores"] == [0.2, 0.3]
    assert k2["sample_accuracy"] == 0.5 and k2["mean_score"] == pytest.approx(0.25)
    assert (k2["seed"], k2["engine"], k2["model"], k2["reference"]) == (3, "embedded", "m", "7")
    # answers by equivalence class (first spelling), so maj@k can group by string equality
    assert run["cand_answers"] == ["5", "7", "5", "7"]
    assert k2["cand_answers"] == ["5", "7"]


def test_select_rules_without_answers():
    assert select("majority", [None, None], [0.9, 0.1]) is None
    assert select("weighted_best_of_n", [None, 0, None], [0.9, 0.1, 0.5]) == 1
    assert select("best_of_n", [None, 0], [0.9, None]) == 0  # best score wins even without an answer
    assert select("best_of_n", [0, 1, 2], [None, 0.5, 0.5]) == 1  # ties: earliest
    assert select("majority", [], []) is None
    assert select("majority", [0, 1, 1, 0, 1], [0.0] * 5) == 1  # the winning class's first member
    assert select("weighted_best_of_n", [0, 1, 1, 0], [0.5, 0.3, 0.4, 0.1]) == 2  # 0.7 > 0.6; best member


# --------------------------------------------------------------------------------------------------
# executing a sweep on the scripted engine


def test_sweep_runs_subsamples_and_resumes(tmp_path):
    d = recipe_dict(tmp_path)
    d["datasets"][0]["limit"] = 2
    engines = Engines()
    res = run_sweep(parse_recipe(d, source="r.yaml"), progress=False, engine_factory=engines)
    assert engines.problems_called() == ["a", "b"]
    assert len(res.rows) == 2 * (1 + 3 * 3)

    # the whole dataset now: only the new problem reaches the engine
    del d["datasets"][0]["limit"]
    engines = Engines()
    res = run_sweep(parse_recipe(d, source="r.yaml"), progress=False, engine_factory=engines)
    assert engines.problems_called() == ["c"]
    assert len(engines.built) == 1 and len(res.runs) == 1
    rows = res.rows
    assert len(rows) == 3 * (1 + 3 * 3)
    assert [r["problem_id"] for r in rows[:3]] == ["a", "b", "c"]  # dataset order, not finishing order

    src = SRC
    a = row(rows, "a", src)
    assert (a["answer"], a["correct"], a["generated_tokens"], a["prompt_tokens"], a["generations"]) == (
        "5", True, 2 + 3 + 4 + 5, 2, 4)
    assert a["cand_correct"] == [True, False, True, False] and a["cand_scores"] == [1.0, 0.0, 1.0, 0.0]
    assert a["flops"] is None and a["sweep"] == "t" and a["dataset"] == "data" and a["engine"] == "scripted"

    def sub(pid, rule, k):
        r = row(rows, pid, f"{rule} n={k} from {src}")
        assert r["derived_from"] == src and r["budget_n"] == k and r["generations"] == k
        return r["answer"], r["correct"], r["generated_tokens"]

    assert [sub("b", rule, 2) for rule in ("majority", "best_of_n", "weighted_best_of_n")] == [
        ("3", False, 5)] * 3
    assert [sub("b", rule, 4) for rule in ("majority", "best_of_n", "weighted_best_of_n")] == [
        ("3", False, 11), ("4", True, 11), ("4", True, 11)]
    assert [sub("c", rule, 1) for rule in ("majority", "best_of_n", "weighted_best_of_n")] == [
        (None, False, 3), (None, False, 3), (None, False, 3)]
    assert [sub("c", rule, 2) for rule in ("majority", "best_of_n", "weighted_best_of_n")] == [
        ("9", True, 4), ("9", True, 4), ("9", True, 4)]
    assert sub("a", "majority", 4) == ("5", True, 14)

    # a third run computes nothing and writes the same table
    jsonl = (tmp_path / "sweep" / "table.jsonl").read_bytes()
    engines = Engines()
    again = run_sweep(parse_recipe(d, source="r.yaml"), progress=False, engine_factory=engines)
    assert engines.problems_called() == []
    assert again.summaries[0].done_now == 0 and again.summaries[0].done_before == 3
    assert (tmp_path / "sweep" / "table.jsonl").read_bytes() == jsonl
    assert again.rows == rows


def test_table_files_parquet_equals_jsonl(tmp_path):
    d = recipe_dict(tmp_path)
    res = run_sweep(parse_recipe(d, source="r.yaml"), progress=False, engine_factory=Engines())
    out = tmp_path / "sweep"
    assert sorted(p.name for p in out.iterdir()) == ["runs", "table.jsonl", "table.parquet"]
    from_jsonl = read_table(out / "table.jsonl")
    from_parquet = read_table(out / "table.parquet")
    assert from_jsonl == from_parquet == res.rows
    assert pq.read_schema(out / "table.parquet").equals(table_schema())
    assert list(from_parquet[0]) == list(COLUMNS)
    # every results file is a plain ttscale results file
    (results,) = list((out / "runs").iterdir())
    assert len(read_results(results)[0]) == 3


def test_budgets_and_grid_runs_are_separate_files(tmp_path):
    d = recipe_dict(tmp_path)
    d["runs"] = [{"strategy": "self_consistency", "grid": {"n": [1, 3]}, "params": {"max_tokens": 50},
                  "budgets": [{}, {"max_generations": 2}]}]
    res = run_sweep(parse_recipe(d, source="r.yaml"), progress=False, engine_factory=Engines())
    assert len(res.runs) == 4 and len({r.path for r in res.runs}) == 4
    by_config = {}
    for r in res.rows:
        by_config.setdefault(r["config"], []).append(r)
    assert {k: ([r["generations"] for r in v], v[0]["budget_n"]) for k, v in by_config.items()} == {
        "self_consistency max_tokens=50 n=1": ([1, 1, 1], 1),
        "self_consistency max_tokens=50 n=1 budget.max_generations=2": ([1, 1, 1], 1),
        "self_consistency max_tokens=50 n=3": ([3, 3, 3], 3),
        "self_consistency max_tokens=50 n=3 budget.max_generations=2": ([2, 2, 2], 3),
    }


# --------------------------------------------------------------------------------------------------
# the command line


def test_cli_sweep_dry_run_run_and_table_only(tmp_path):
    f = tmp_path / "recipe.yaml"
    f.write_text(yaml.safe_dump(recipe_dict(tmp_path)))
    out = tmp_path / "sweep"
    cli = CliRunner()

    r = cli.invoke(app, ["sweep", str(f), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "1 runs, 10 table configurations" in r.output
    assert "weighted_best_of_n n=4 from best_of_n max_tokens=50 n=4 verifier=answer_check" in r.output
    assert not out.exists()

    r = cli.invoke(app, ["sweep", str(f), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"table: {out / 'table.jsonl'} and {out / 'table.parquet'} (30 rows)" in r.output
    assert "run 1/1: best_of_n max_tokens=50 n=4 verifier=answer_check on data (seed 0)" in r.output
    first = read_table(out / "table.jsonl")
    lines = {line.split("│")[3].strip(): line for line in r.output.splitlines() if line.count("│") > 4}
    assert "│ 33.3%" in lines[f"majority n=1 from {SRC}"]  # a right; b wrong; c's first sample has no answer
    assert "│ 100.0%" in lines[f"best_of_n n=4 from {SRC}"]  # the oracle finds a right sample in each
    assert "│ script.json │" in lines[SRC]

    (out / "table.jsonl").unlink()
    (out / "table.parquet").unlink()
    r = cli.invoke(app, ["sweep", str(f), "--table-only"])
    assert r.exit_code == 0, r.output
    assert read_table(out / "table.jsonl") == first == read_table(out / "table.parquet")

    r = cli.invoke(app, ["sweep", str(f), "--table-only", "--out", str(tmp_path / "empty")])
    assert isinstance(r.exception, ConfigError) and "run the sweep first" in str(r.exception)


def test_cli_bad_recipe_is_one_clear_line(tmp_path):
    d = recipe_dict(tmp_path)
    d["runs"][0]["subsample"]["n"] = [16]
    f = tmp_path / "recipe.yaml"
    f.write_text(yaml.safe_dump(d))
    r = subprocess.run([sys.executable, "-m", "ttscale.cli", "sweep", str(f)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    err = " ".join(r.stderr.split())  # the error console wraps long lines
    assert f"error: {f}: field runs[0].subsample.n = [16]: k=16 is larger than the run's n=4" in err
    assert "Traceback" not in r.stderr


def test_committed_recipe_is_valid():
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "embedded-gsm.yaml")
    (cfg,) = recipe.configs
    assert (cfg.strategy, cfg.params["n"], cfg.params["max_tokens"], cfg.params["verifier"]) == (
        "best_of_n", 8, 384, "confidence")
    assert cfg.params["logprobs"] == 5 and recipe.verifiers["confidence"]["window"] == 32
    assert cfg.subsample.n == (1, 2, 4, 8) and len(cfg.subsample.select) == 3
    assert [(e.engine, e.model) for e in recipe.engines] == [("embedded", None)]
    assert [(d.dataset, d.limit) for d in recipe.datasets] == [("default", 16)]


def test_cache_shares_samples_between_runs_of_a_sweep(tmp_path):
    """Two runs that draw the same seeded samples (best-of-N n=4, self-consistency n=2): with ``cache``
    the second generates nothing, and its rows equal those of a sweep without the cache."""
    runs = [{"strategy": "best_of_n", "params": {"n": 4, "verifier": "answer_check", "max_tokens": 50}},
            {"strategy": "self_consistency", "params": {"n": 2, "max_tokens": 50}}]
    cache = tmp_path / "gen.sqlite"
    engines = Engines()
    res = run_sweep(parse_recipe(recipe_dict(tmp_path, runs=runs, cache=str(cache)), source="r.yaml"),
                    progress=False, engine_factory=engines)
    assert cache.exists() and res.summaries[1].reused_samples == 3 * 2 and res.summaries[0].reused_samples == 0
    assert sum(c.n for c in engines.built[0].calls) == 3 * 4  # the n=2 run asked the engine for nothing
    plain = run_sweep(parse_recipe(recipe_dict(tmp_path, runs=runs, out=str(tmp_path / "plain")), source="r.yaml"),
                      progress=False, engine_factory=Engines())
    strip = ("wall_time_s",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in res.rows] == [
        {k: v for k, v in r.items() if k not in strip} for r in plain.rows]
    with pytest.raises(ConfigError, match="field cache"):
        parse_recipe(recipe_dict(tmp_path, cache=3), source="r.yaml")
