"""The powered compute-optimal sweep (recipes/power.yaml) end to end on the scripted engine: several
datasets in one table, the four families (majority / best-of-N / weighted best-of-N subsampled from
one confidence-scored run, revisions, beam search with a step judge) at budgets 1..16, run-major plan
order, difficulty from the i.i.d. samples only, 5-fold policies on oracle and predicted difficulty
with bootstrap intervals, Snell-style plots and the HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.cli import app
from ttscale.core.errors import ConfigError
from ttscale.core.types import GenerationRequest
from ttscale.engines.scripted import ScriptedEngine, ScriptedReply
from ttscale.lab.difficulty import oracle_difficulty, predicted_difficulty
from ttscale.lab.metrics import pool_rows
from ttscale.lab.plots import plot_table
from ttscale.lab.policy import fit_policy
from ttscale.lab.recipe import load_recipe, parse_recipe
from ttscale.lab.sweep import plan, run_sweep

PNG = b"\x89PNG\r\n\x1a\n"
BUDGETS = [1, 2, 4, 8, 16]
FAMILIES = ("majority", "best_of_n", "weighted_best_of_n", "revisions", "beam_search")
# problem id -> (answer, how many of every 4 samples are right): pass@1 = level / 4
LEVELS = {"e0": 4, "e1": 4, "e2": 3, "e3": 2, "e4": 1, "h0": 3, "h1": 2, "h2": 1, "h3": 0, "h4": 0}
ANSWER = {pid: str(10 + i) for i, pid in enumerate(LEVELS)}


def script(req: GenerationRequest, k: int) -> ScriptedReply:
    """Samples, revisions and beam steps: right on (k + problem index) % 4 < level (confident: logprob -3), else a
    wrong answer (logprob -0.5); the step judge says Yes exactly when the step holds the answer."""
    pid = req.problem_id or ""
    content = req.messages[-1]["content"] if req.messages else ""
    if content.startswith("Here is a problem and the first steps"):
        return ScriptedReply("Yes" if f"\\boxed{{{ANSWER[pid]}}}" in content else "No")
    if (k + list(LEVELS).index(pid)) % 4 < LEVELS[pid]:
        return ScriptedReply(f"so \\boxed{{{ANSWER[pid]}}}", [-3.0, -3.0])
    return ScriptedReply(f"so \\boxed{{{90 + k % 3}}}", [-0.5, -0.5])


def power_recipe(tmp_path: Path) -> dict:
    for name in ("easy", "hard"):
        rows = [{"id": pid, "question": f"question {pid}", "answer": ANSWER[pid]} for pid in LEVELS if pid[0] == name[0]]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    beam = {"beam_width": 4, "max_step_tokens": 16, "max_tokens": 32, "max_steps": 4, "verifier": "llm_judge"}
    rev = {"max_tokens": 32, "verifier": "confidence", "logprobs": 5}
    return {
        "name": "power-mini", "out": str(tmp_path / "sweep"), "order": "runs", "concurrency": 4,
        "engines": [{"engine": "scripted", "model": "unused"}],
        "datasets": [{"dataset": str(tmp_path / "easy.jsonl")}, {"dataset": str(tmp_path / "hard.jsonl")}],
        "seeds": [0], "system_prompt": "",
        "verifiers": {"confidence": {"mode": "bottom10", "window": 32, "top_k": 5}, "llm_judge": {}},
        "runs": [
            {"strategy": "best_of_n", "params": {"n": 16, "max_tokens": 32, "verifier": "confidence", "logprobs": 5},
             "subsample": {"n": BUDGETS, "select": ["majority", "best_of_n", "weighted_best_of_n"]}},
            {"strategy": "revisions", "grid": {"n": [1, 2, 4]}, "params": rev},
            {"strategy": "beam_search", "grid": {"n": [1, 2, 4]}, "params": beam},
            {"strategy": "revisions", "grid": {"n": [8, 16]}, "params": rev},
            {"strategy": "beam_search", "grid": {"n": [8, 16]}, "params": beam},
        ],
    }


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("power")
    recipe = parse_recipe(power_recipe(tmp), source="power-mini")
    res = run_sweep(recipe, progress=False, engine_factory=lambda spec: ScriptedEngine(script))
    return recipe, res


def test_run_major_order_puts_each_entry_on_every_dataset_first(swept):
    recipe, res = swept
    order = [(r.config.strategy, r.config.params["n"], r.dataset.label) for r in plan(recipe)]
    assert order[:2] == [("best_of_n", 16, "easy"), ("best_of_n", 16, "hard")]
    assert order[2:8] == [("revisions", n, ds) for ds in ("easy", "hard") for n in (1, 2, 4)]
    assert order[8:14] == [("beam_search", n, ds) for ds in ("easy", "hard") for n in (1, 2, 4)]
    assert [o[:2] for o in order[14:]] == [("revisions", 8), ("revisions", 16)] * 2 + [("beam_search", 8),
                                                                                     ("beam_search", 16)] * 2
    # the default order keeps a dataset's runs together; the file names do not depend on the order
    default = parse_recipe({**power_recipe(Path(res.out).parent), "order": "datasets"}, source="x")
    assert [r.dataset.label for r in plan(default)] == ["easy"] * 11 + ["hard"] * 11
    assert sorted(r.path.name for r in plan(default)) == sorted(r.path.name for r in plan(recipe))
    with pytest.raises(ConfigError, match=r"field order = 'problems': must be one of: datasets, runs"):
        parse_recipe({**power_recipe(Path(res.out).parent), "order": "problems"}, source="x")


def test_table_holds_every_family_at_every_budget_for_both_datasets(swept):
    _, res = swept
    assert not res.interrupted
    have = {(r["dataset"], r["strategy"], r["budget_n"]) for r in res.rows}
    for ds in ("easy", "hard"):
        for fam in FAMILIES:
            for b in BUDGETS:
                assert (ds, fam, b) in have
    assert len({(r["dataset"], r["problem_id"]) for r in res.rows}) == 10
    beam16 = [r for r in res.rows if r["strategy"] == "beam_search" and r["budget_n"] == 16]
    assert all(r["generations"] == 16 and len(r["cand_correct"]) == 16 for r in beam16)
    rev16 = [r for r in res.rows if r["strategy"] == "revisions" and r["budget_n"] == 16]
    assert all(r["generations"] == 16 and all(s is not None for s in r["cand_scores"]) for r in rev16)


def test_difficulty_comes_from_the_iid_samples_not_beams_or_revisions(swept):
    _, res = swept
    oracle = oracle_difficulty(res.rows)
    assert oracle == {(("easy" if p[0] == "e" else "hard"), p): lvl / 4 for p, lvl in LEVELS.items()}
    pools = pool_rows(res.rows, column="cand_scores")
    assert {r["config"] for r in pools.values()} == {"best_of_n logprobs=5 max_tokens=32 n=16 verifier=confidence"}
    # first 4 samples: level right at confidence 3.0, the others at 0.5
    pred = predicted_difficulty(res.rows, 4)
    assert pred[("easy", "e3")] == pytest.approx((2 * 3.0 + 2 * 0.5) / 4)
    assert pred[("hard", "h4")] == pytest.approx(0.5)


def test_pool_rows_prefers_samples_over_a_larger_beam_pool():
    beam = {"dataset": "d", "problem_id": "p", "config": "a beam", "strategy": "beam_search", "seed": 0,
            "cand_correct": [True] * 20, "sample_accuracy": 1.0}
    bon = {"dataset": "d", "problem_id": "p", "config": "z bon", "strategy": "best_of_n", "seed": 0,
           "cand_correct": [True, False, False, False], "sample_accuracy": 0.25}
    assert pool_rows([beam, bon])[("d", "p")] is bon
    assert oracle_difficulty([beam, bon]) == {("d", "p"): 0.25}
    assert oracle_difficulty([beam]) == {("d", "p"): 1.0}  # no sample row: the largest pool, as before


@pytest.mark.parametrize("difficulty", ["oracle", "predicted"])
def test_five_fold_policy_with_bootstrap_on_the_mixed_table(swept, difficulty):
    _, res = swept
    pol = fit_policy(res.rows, difficulty=difficulty, folds=5, bootstrap=200)
    assert pol["budgets"] == BUDGETS and pol["fit"]["datasets"] == ["easy", "hard"]
    assert pol["fit"]["problems"] == 10 and pol["fit"]["folds"] == 5
    assert {k: [c["budget"] for c in v] for k, v in pol["fixed_curves"].items()} == {f: BUDGETS for f in FAMILIES}
    assert [c["budget"] for c in pol["cv_curve"]] == BUDGETS
    assert all(len(c["fold_accuracies"]) == 5 and "boot_low" in c for c in pol["cv_curve"])
    assert [m["budget"] for m in pol["bon_match"]] == BUDGETS
    assert all(m["resamples"] == 200 and "ratio_low" in m for m in pol["bon_match"])
    assert len(pol["problem_bins"]) == 10 and {d for d, _, _ in pol["problem_bins"]} == {"easy", "hard"}
    assert sorted(pol["cv_by_bin"]) == ["0", "1", "2", "3", "4"]
    # every problem is right at N = 16 by best-of-N except the two the model never solves
    bon16 = pol["fixed_curves"]["best_of_n"][-1]
    assert bon16["accuracy"] == pytest.approx(0.8)


@pytest.mark.parametrize("x", ["budget", "tokens"])
def test_snell_style_plot_per_bin_with_the_frontier(swept, tmp_path, x):
    _, res = swept
    pol = fit_policy(res.rows, folds=5, bootstrap=0)
    out = plot_table(res.rows, tmp_path / f"{x}.png", pol, x=x)
    assert out.read_bytes().startswith(PNG)
    with pytest.raises(ConfigError, match="x axis 'flops' is not one of tokens, budget"):
        plot_table(res.rows, tmp_path / "bad.png", pol, x="flops")  # type: ignore[arg-type]


def test_cli_pipeline_fit_policy_plot_report(swept, tmp_path):
    _, res = swept
    runner = CliRunner()
    for difficulty in ("oracle", "predicted"):
        pol = tmp_path / f"policy-{difficulty}.json"
        r = runner.invoke(app, ["fit-policy", str(res.out), "--folds", "5", "--bootstrap", "200",
                                "--difficulty", difficulty, "--out", str(pol)])
        assert r.exit_code == 0, r.output
        text = " ".join(r.output.split())
        assert "best-of-N to match the policy at N=16" in text and "ratio 95% interval" in text
        if difficulty == "oracle":  # pass@1 1, 1, .75, .5, .25 (easy) and .75, .5, .25, 0, 0 (hard): 2 a bin
            assert "problems per bin (bin 0 = easiest) and dataset: easy 2/1/1/1/0; hard 0/1/1/1/2" in text
    r = runner.invoke(app, ["plot", str(res.out), "--policy", str(tmp_path / "policy-oracle.json"), "--x", "budget",
                            "--out", str(tmp_path / "fig.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "fig.png").read_bytes().startswith(PNG)
    r = runner.invoke(app, ["plot", str(res.out), "--x", "cost"])
    assert isinstance(r.exception, ConfigError) and str(r.exception) == "--x 'cost' is not one of tokens, budget"
    html = tmp_path / "report.html"
    r = runner.invoke(app, ["report", str(res.out), str(tmp_path / "policy-oracle.json"), "--html", str(html)])
    assert r.exit_code == 0, r.output
    page = html.read_text()
    assert "beam_search" in page and "revisions" in page and "Generations best-of-N needs to match" in page
    assert "Accuracy vs generation budget N (Snell et al.)" in page and page.count("data:image/png;base64,") == 2


def test_policy_cells_name_the_budget_when_the_label_omits_it():
    from ttscale.lab.analysis_command import _short_config

    # beam_search's default n is 8, so its label at n=8 has no n=
    assert _short_config({"config": "beam_search max_tokens=256", "budget_n": 8}) == "beam_search max_tokens=256 [N=8]"
    assert _short_config({"config": "majority n=4 from best_of_n n=16", "budget_n": 4}) == "majority n=4"
    assert _short_config({"config": "revisions n=2 verifier=confidence", "budget_n": 2}) == (
        "revisions n=2 verifier=confidence")


def test_committed_power_recipe():
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "power.yaml")
    assert recipe.order == "runs" and recipe.cache is not None
    assert [(e.engine, e.model) for e in recipe.engines] == [("embedded", "qwen2.5-coder-0.5b")]
    assert all(d.dataset.startswith("rg:") and d.limit for d in recipe.datasets)
    assert len(recipe.datasets) >= 5 and sum(d.limit or 0 for d in recipe.datasets) >= 200
    first = recipe.configs[0]
    assert (first.strategy, first.params["n"], first.params["verifier"]) == ("best_of_n", 16, "confidence")
    assert first.subsample.n == tuple(BUDGETS) and len(first.subsample.select) == 3
    by = {}
    for c in recipe.configs[1:]:
        by.setdefault(c.strategy, []).append(c.params["n"])
    assert by == {"revisions": BUDGETS, "beam_search": BUDGETS}
    assert {c.params["verifier"] for c in recipe.configs if c.strategy == "beam_search"} == {"llm_judge"}
    assert {c.params["logprobs"] for c in recipe.configs if c.strategy == "revisions"} == {5}
    runs = plan(recipe)
    assert len(runs) == 11 * len(recipe.datasets)
    assert [r.config.strategy for r in runs[:len(recipe.datasets)]] == ["best_of_n"] * len(recipe.datasets)
