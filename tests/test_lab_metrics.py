import itertools
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ttscale.core.errors import ConfigError
from ttscale.lab.difficulty import (
    Binning,
    absolute_bins,
    oracle_difficulty,
    predicted_difficulty,
    quantile_bins,
)
from ttscale.lab.metrics import (
    accuracy_with_interval,
    beta_interval,
    bootstrap_interval,
    cost_per_correct,
    maj_at_k,
    pass_at_k,
    passk_table,
    summarize_table,
)
from ttscale.lab.recipe import config_label
from ttscale.lab.sweep import summarize_by_seed
from ttscale.lab.table_io import all_params_label, load_any, load_table, rows_from_results


def row(pid, config="sc n=4", correct=True, seed=0, **kw):
    r = {"sweep": "s", "dataset": "d", "problem_id": pid, "engine": "scripted", "model": "m",
         "strategy": config.split()[0], "params": json.dumps({"n": 4}), "config": config, "budget_n": 4,
         "seed": seed, "derived_from": "", "correct": correct, "answer": "1", "reference": "1",
         "generated_tokens": 100, "prompt_tokens": 10, "verifier_tokens": 5, "generations": 4, "flops": None,
         "wall_time_s": 0.5, "cand_correct": [], "cand_scores": [], "sample_accuracy": None, "mean_score": None}
    r.update(kw)
    return r


# --- pass@k ----------------------------------------------------------------------------------------
def brute_pass(n, c, k):
    cands = [True] * c + [False] * (n - c)
    subs = list(itertools.combinations(range(n), k))
    return sum(any(cands[i] for i in s) for s in subs) / len(subs)


def test_pass_at_k_matches_enumeration_over_subsets():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_known_values_and_errors():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(4, 2, 3) == 1.0  # n - c < k
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


# --- maj@k -----------------------------------------------------------------------------------------
def brute_maj(answers, correct, k):
    """Independent reference: enumerate subsets, Counter majority, ties to the earliest member."""
    hits = []
    for s in itertools.combinations(range(len(answers)), k):
        votes = Counter(answers[i] for i in s if answers[i] is not None)
        if not votes:
            hits.append(0.0)
            continue
        top = max(votes.values())
        first = min(i for i in s if answers[i] is not None and votes[answers[i]] == top)
        hits.append(float(bool(correct[first])))
    return sum(hits) / len(hits)


ANS = ["7", "5", "5", "9", "7", "5", None, "7", "5", "2"]
COR = [a == "5" for a in ANS]


def test_maj_at_k_exact_matches_enumeration():
    for k in range(1, len(ANS) + 1):
        assert maj_at_k(ANS, COR, k) == pytest.approx(brute_maj(ANS, COR, k), abs=1e-12), k


def test_maj_at_k_ties_go_to_the_answer_seen_first_and_none_does_not_vote():
    assert maj_at_k(["b", "a"], [False, True], 2) == 0.0
    assert maj_at_k(["a", "b"], [True, False], 2) == 1.0
    # subsets {0,1}: no vote (wrong); {0,2} and {1,2}: "a" (right)
    assert maj_at_k([None, None, "a"], [False, False, True], 2) == pytest.approx(2 / 3)
    assert maj_at_k([" a", "a "], [True, True], 2) == 1.0  # answers compared after strip


def test_maj_at_k_monte_carlo_is_seeded_and_exact_when_unambiguous():
    answers = [str(i % 3) for i in range(14)]
    correct = [a == "0" for a in answers]
    mc1 = maj_at_k(answers, correct, 6, draws=3000, seed=1, exact_limit=0)
    mc2 = maj_at_k(answers, correct, 6, draws=3000, seed=1, exact_limit=0)
    mc3 = maj_at_k(answers, correct, 6, draws=3000, seed=2, exact_limit=0)
    exact = maj_at_k(answers, correct, 6)
    assert mc1 == mc2
    assert mc1 != mc3
    assert abs(mc1 - exact) < 0.03 and exact == pytest.approx(brute_maj(answers, correct, 6))
    # 7 right answers of 8: any 5 candidates hold >= 4 of them -> always right, on every draw
    assert maj_at_k(["a"] * 7 + ["b"], [True] * 7 + [False], 5, draws=500, seed=3, exact_limit=0) == 1.0
    assert maj_at_k(["x"] * 20, [False] * 20, 10, draws=200, exact_limit=0) == 0.0


# --- accuracy intervals, cost ----------------------------------------------------------------------
def test_intervals():
    lo, hi = beta_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and 0.2 < lo < 0.3  # Beta(6, 6) is symmetric
    assert beta_interval(0, 10)[0] == pytest.approx(1 - 0.975 ** (1 / 11))  # Beta(1, 11) quantile
    assert bootstrap_interval([1.0] * 5) == (1.0, 1.0)
    vals = [0.0, 1.0, 1.0, 0.5, 1.0, 0.0]
    assert bootstrap_interval(vals, seed=4) == bootstrap_interval(vals, seed=4)
    mean, blo, bhi = accuracy_with_interval(vals, method="bootstrap")
    assert mean == pytest.approx(3.5 / 6) and blo < mean < bhi
    assert accuracy_with_interval([]) == (None, None, None)


def test_cost_per_correct():
    assert cost_per_correct([100, 200, 300], [True, False, True]) == 300.0
    assert cost_per_correct([100], [False]) is None
    assert cost_per_correct([100, 100], [None, True]) == 200.0


def test_summarize_table_averages_seeds_per_problem():
    rows = [row("1", seed=0, correct=True), row("1", seed=1, correct=False), row("2", correct=True),
            row("3", correct=None), row("1", config="bon n=4", correct=False, generated_tokens=300)]
    summ = {s["config"]: s for s in summarize_table(rows)}
    sc = summ["sc n=4"]
    assert sc["problems"] == 2 and sc["graded"] == 3 and sc["rows"] == 4
    assert sc["accuracy"] == pytest.approx(0.75)  # problem 1: 0.5, problem 2: 1.0
    assert sc["generated_tokens_per_correct"] == pytest.approx(150.0)  # 300 graded tokens / 2 correct
    assert sc["tokens_per_correct"] == pytest.approx(3 * 115 / 2)
    assert summ["bon n=4"]["accuracy"] == 0.0 and summ["bon n=4"]["generated_tokens_per_correct"] is None


def test_summarize_by_seed_keeps_seeds_apart_where_summarize_table_pools_them():
    rows = [row("1", seed=0, correct=True), row("2", seed=0, correct=False), row("1", seed=1, correct=False),
            row("2", seed=1, correct=None, generated_tokens=50)]
    per_seed = summarize_by_seed(rows)
    assert [(s["seed"], s["problems"], s["accuracy"]) for s in per_seed] == [(0, 2, 0.5), (1, 2, 0.0)]
    assert per_seed[1]["mean_generated_tokens"] == 75.0 and "acc_low" not in per_seed[0]
    (pooled,) = summarize_table(rows)
    assert pooled["rows"] == 4 and pooled["problems"] == 2 and pooled["accuracy"] == pytest.approx(0.25)


def test_passk_table_from_largest_pools():
    rows = [row("1", cand_correct=[True, False, False, False], cand_answers=["5", "7", "7", "8"]),
            row("1", config="sc n=2", cand_correct=[True, True], cand_answers=["5", "5"]),
            row("2", cand_correct=[True, True, False, None], cand_answers=["5", "5", "6", None])]
    t = {r["k"]: r for r in passk_table(rows)}
    assert sorted(t) == [1, 2, 4]
    assert t[1]["pass_at_k"] == pytest.approx((0.25 + 2 / 3) / 2) and t[1]["problems"] == 2
    assert t[4]["problems"] == 1 and t[4]["pass_at_k"] == 1.0 and t[4]["maj_at_k"] == 0.0
    assert t[2]["maj_at_k"] == pytest.approx((brute_maj(["5", "7", "7", "8"], [1, 0, 0, 0], 2) + 1.0) / 2)


# --- table io --------------------------------------------------------------------------------------
def test_load_table_reads_dir_jsonl_and_parquet(tmp_path):
    rows = [row("1"), row("2", correct=None, cand_correct=[True, None], cand_scores=[0.5, None])]
    (tmp_path / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    a, b, c = load_table(tmp_path), load_table(tmp_path / "table.jsonl"), load_table(tmp_path / "t.parquet")
    assert a == b
    assert [r["problem_id"] for r in c] == ["1", "2"] and c[1]["cand_correct"] == [True, None]
    assert c[1]["cand_answers"] is None and a[0]["budget_n"] == 4


def test_load_table_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    r = row("1")
    del r["budget_n"]
    bad.write_text(json.dumps(r) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl row 1.*budget_n"):
        load_table(bad)
    bad.write_text(json.dumps(row("1", correct="yes")) + "\n")
    with pytest.raises(ConfigError, match=r"correct='yes'"):
        load_table(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty holds no table\.jsonl"):
        load_table(tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        load_table(tmp_path / "nope.jsonl")


def test_rows_from_results_and_load_any(tmp_path):
    rec = {"problem_id": 3, "answer": "5", "reference": "5", "correct": True, "strategy": "self_consistency",
           "params": {"n": 2, "temperature": 0.7}, "seed": 1, "budget": {}, "engine": "scripted", "model": "m",
           "cost": {"prompt_tokens": 7, "generated_tokens": 40, "generations": 2, "verifier_prompt_tokens": 3,
                    "verifier_generated_tokens": 1, "wall_time_s": 0.2},
           "candidates": [{"answer": "5", "correct": True, "score": None},
                          {"answer": "4", "correct": False, "score": None}]}
    (r,) = rows_from_results([rec], dataset="gsm")
    assert r["config"] == "self_consistency n=2 temperature=0.7" and r["budget_n"] == 2
    # results files label every parameter; sweep rows leave the strategy's defaults out
    assert all_params_label("self_consistency", rec["params"]) == r["config"]
    assert config_label("self_consistency", rec["params"]) == "self_consistency n=2"
    assert r["verifier_tokens"] == 4 and r["cand_answers"] == ["5", "4"] and r["sample_accuracy"] == 0.5
    f = tmp_path / "gsm__self_consistency__m__s1__abc.jsonl"
    f.write_text(json.dumps(rec) + "\n")
    (loaded,) = load_any([f])
    assert loaded["dataset"] == "gsm" and loaded["problem_id"] == "3" and loaded["mean_score"] is None


# --- difficulty ------------------------------------------------------------------------------------
def test_oracle_and_predicted_difficulty_use_the_largest_pool():
    rows = [row("1", cand_correct=[True, False], cand_scores=[0.9, 0.1], sample_accuracy=0.5),
            row("1", config="big n=8", cand_correct=[True, False, False, False, None, None, None, None],
                cand_scores=[0.8, 0.6, 0.4, 0.2, 0.0, None, None, None], sample_accuracy=None),
            row("2", cand_correct=[True, True], cand_scores=[0.3, None, 0.5], sample_accuracy=1.0)]
    assert oracle_difficulty(rows) == {("d", "1"): 0.25, ("d", "2"): 1.0}
    assert predicted_difficulty(rows, m=4) == {("d", "1"): pytest.approx(0.5), ("d", "2"): pytest.approx(0.4)}
    assert predicted_difficulty(rows, m=1)[("d", "1")] == 0.8


def test_quantile_bins_equal_sizes_easiest_first_ties_by_problem_id():
    vals = {("d", f"p{i}"): v for i, v in enumerate([0.9, 0.5, 0.5, 0.5, 0.1, 0.0, 1.0, 0.3, 0.5, 0.7])}
    binning, assign = quantile_bins(vals, 5)
    # sorted: p6 1.0, p0 .9, p9 .7, p1 .5, p2 .5, p3 .5, p8 .5, p7 .3, p4 .1, p5 0 -> pairs
    assert assign == {("d", "p6"): 0, ("d", "p0"): 0, ("d", "p9"): 1, ("d", "p1"): 1, ("d", "p2"): 2,
                      ("d", "p3"): 2, ("d", "p8"): 3, ("d", "p7"): 3, ("d", "p4"): 4, ("d", "p5"): 4}
    assert binning.edges == pytest.approx((0.8, 0.5, 0.5, 0.2))
    assert [binning.bin_of(v) for v in (0.95, 0.8, 0.6, 0.5, 0.49, 0.2, 0.0)] == [0, 0, 1, 1, 3, 3, 4]
    assert quantile_bins(vals, 5) == (binning, assign)
    with pytest.raises(ConfigError, match="at least 5 problems"):
        quantile_bins({("d", "x"): 0.5}, 5)


def test_absolute_bins_thresholds():
    vals = {("d", str(v)): v for v in (1.0, 0.51, 0.5, 0.1, 0.09, 0.0)}
    binning, assign = absolute_bins(vals)
    assert [assign[("d", str(v))] for v in (1.0, 0.51, 0.5, 0.1, 0.09, 0.0)] == [0, 0, 1, 1, 2, 2]
    assert Binning.from_dict(binning.to_dict()) == binning
    with pytest.raises(ConfigError, match="non-increasing"):
        Binning.from_dict({"method": "quantile", "edges": [0.1, 0.5], "labels": ["a", "b", "c"]})
