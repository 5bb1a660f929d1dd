"""K-fold cross-validation and bootstrap intervals of the compute-optimal policy (scripted tables, no model)."""

import json
import sys

import pytest

from ttscale.core.errors import ConfigError
from ttscale.lab.html_report import build_html
from ttscale.lab.policy import fit_policy
from ttscale.lab.policy_cv import bootstrap_policy, ratio_interval_text, split_folds

BUDGETS = (1, 2, 4, 8)


def _row(i: int, easy: bool, strat: str, n: int, ok: bool) -> dict:
    pool = [True] * 7 + [False] if easy else [False] * 7 + [True]  # pass@1 7/8 vs 1/8
    score = 0.9 if easy else 0.2
    return {
        "sweep": "k", "dataset": "d", "problem_id": f"p{i:03d}", "engine": "scripted", "model": "m",
        "strategy": strat, "params": json.dumps({"n": n}), "config": f"{strat} n={n}", "budget_n": n,
        "seed": 0, "derived_from": "", "correct": ok, "answer": "1" if ok else "0", "reference": "1",
        "generated_tokens": 100 * n, "prompt_tokens": 10, "verifier_tokens": 0, "generations": n,
        "flops": None, "wall_time_s": 0.1, "cand_correct": pool[:n], "cand_scores": [score] * n,
        "cand_answers": ["1" if c else "0" for c in pool[:n]], "sample_accuracy": sum(pool[:n]) / n,
        "mean_score": score,
    }


def known_table(n_problems: int = 60) -> list[dict]:
    """Half easy, half hard. best_of_n: easy right at every n; hard right only at n = 8, plus at n = 4 on
    every third hard id. beam_search (n >= 2): wrong on easy, right on 4 of 5 hard problems. The
    ideal policy: easy -> best_of_n n=1, hard -> beam_search n=2 from B = 2 on; accuracy 0.5, 0.9, 0.9, 0.9
    (budget 8: best_of_n n=8 on hard, 1.0)."""
    rows = []
    for i in range(n_problems):
        easy = i < n_problems // 2
        for n in BUDGETS:
            rows.append(_row(i, easy, "best_of_n", n, easy or n == 8 or (n == 4 and i % 3 == 0)))
            if n >= 2:
                rows.append(_row(i, easy, "beam_search", n, not easy and i % 5 != 0))
    return rows


def test_k_fold_partition_deterministic_by_seed():
    keys = [("d", f"p{i:03d}") for i in range(23)]
    for k in (2, 3, 5, 23):
        folds = split_folds(keys, k, seed=7)
        assert sorted(p for f in folds for p in f) == keys and len(folds) == k
        assert max(map(len, folds)) - min(map(len, folds)) <= 1
        assert split_folds(reversed(keys), k, seed=7) == folds
    assert split_folds(keys, 5, seed=7) != split_folds(keys, 5, seed=8)


@pytest.mark.parametrize("difficulty", ["oracle", "predicted"])
def test_five_fold_on_a_known_table(difficulty):
    pol = fit_policy(known_table(), difficulty=difficulty, bins="absolute", folds=5, seed=1)
    assert pol["fit"]["folds"] == 5 and "5-fold" in pol["fit"]["cv"] and pol["fit"]["difficulty"] == difficulty
    ch = {(e["bin"], e["budget"]): e["config"] for e in pol["table"]}
    assert [ch[(0, B)] for B in BUDGETS] == ["best_of_n n=1"] * 4
    assert [ch[(1, B)] for B in BUDGETS] == ["best_of_n n=1", "beam_search n=2", "beam_search n=2",
                                             "best_of_n n=8"]  # hard problems: pass@1 1/8, score 0.2
    cv = {c["budget"]: c for c in pol["cv_curve"]}
    assert [cv[B]["accuracy"] for B in BUDGETS] == pytest.approx([0.5, 0.9, 0.9, 1.0])
    assert all(len(cv[B]["fold_accuracies"]) == 5 for B in BUDGETS)
    # best-of-N: 0.5, 0.5, 2/3 (10 of the 30 hard ids are multiples of 3), 1.0: the policy's 0.9 at
    # B = 2 lies 70% of the way from 2/3 to 1.0, reached at 4 * 2**0.7 generations
    bm = {m["budget"]: m for m in pol["bon_match"]}
    assert bm[2]["match_budget"] == pytest.approx(4 * 2 ** 0.7) and bm[2]["ratio"] == pytest.approx(2 * 2 ** 0.7)
    assert bm[8]["ratio"] == pytest.approx(1.0)
    lo, hi = bm[2]["ratio_low"], bm[2]["ratio_high"]
    assert 1.0 < lo <= bm[2]["ratio"] <= hi and bm[2]["ratio_undefined"] == 0  # the interval excludes 1
    assert cv[2]["boot_low"] <= 0.9 <= cv[2]["boot_high"] and cv[2]["boot_high"] - cv[2]["boot_low"] > 0.05
    assert [b["budget"] for b in pol["bootstrap"]] == list(BUDGETS)


def _width(pol, budget, low, high):
    b = next(x for x in pol["bootstrap"] if x["budget"] == budget)
    return b[high] - b[low]


def test_bootstrap_contains_the_point_estimate_and_narrows_with_more_problems():
    small = fit_policy(known_table(30), bins="absolute", seed=0)
    big = fit_policy(known_table(300), bins="absolute", seed=0)
    for pol in (small, big):
        for c, m in zip(pol["cv_curve"], pol["bon_match"], strict=True):
            assert c["boot_low"] <= c["accuracy"] <= c["boot_high"]
            assert m["ratio_low"] <= m["ratio"] <= m["ratio_high"]
    for key in (("accuracy_low", "accuracy_high"), ("ratio_low", "ratio_high")):
        assert _width(big, 2, *key) < _width(small, 2, *key) / 2
    assert fit_policy(known_table(30), bins="absolute", seed=0) == small  # seeded
    assert fit_policy(known_table(30), bins="absolute", seed=0, bootstrap=0)["bootstrap"] == []


def test_ratio_interval_open_ended_when_best_of_n_never_reaches():
    rows = [r for r in known_table(40) if not (r["strategy"] == "best_of_n" and r["budget_n"] == 8)]
    pol = fit_policy(rows, bins="absolute", seed=0, bootstrap=500)
    m = {x["budget"]: x for x in pol["bon_match"]}[2]  # policy 0.9, best-of-N at most 0.6
    assert m["ratio"] is None and m["ratio_low"] is None and m["ratio_high"] is None
    und = m["ratio_undefined"]
    assert und > 0.975 * 500 and ratio_interval_text(m) == (
        f"undefined (best-of-N never reaches it on {und} of 500 resamples)")
    half = {**m, "ratio_low": 1.5, "ratio_high": None, "ratio_undefined": 80}
    assert ratio_interval_text(half) == ">= 1.50x (open-ended; best-of-N never reaches it on 80 of 500 resamples)"
    assert ratio_interval_text({"budget": 2}) == "-"


def test_bootstrap_function_direct_and_bad_values():
    pol = fit_policy(known_table(20), bins="absolute", bootstrap=0)
    assert "boot_low" not in pol["cv_curve"][0] and "ratio_low" not in pol["bon_match"][0]
    assert bootstrap_policy({}, {}, {}, [], BUDGETS, resamples=200) == []
    with pytest.raises(ConfigError, match="--bootstrap 5: give 0"):
        fit_policy(known_table(20), bins="absolute", bootstrap=5)
    with pytest.raises(ConfigError, match="--folds 21: more folds than the 20 problems"):
        fit_policy(known_table(20), bins="absolute", folds=21)


@pytest.mark.parametrize("args,message", [
    (["--folds", "1"], "error: --folds 1: cross-validation needs at least 2 folds"),
    (["--folds", "61"], "error: --folds 61: more folds than the 60 problems with a difficulty value"),
    (["--bootstrap", "-3"], "error: --bootstrap -3: give 0 (no intervals) or at least 100 resamples"),
    (["--bootstrap", "50"], "error: --bootstrap 50: give 0 (no intervals) or at least 100 resamples"),
])
def test_cli_bad_folds_and_bootstrap_one_error_line(tmp_path, monkeypatch, capsys, args, message):
    from ttscale.cli import main

    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in known_table()))
    monkeypatch.setattr(sys, "argv", ["ttscale", "fit-policy", str(table), "--out", str(tmp_path / "p.json"),
                                      *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(message)
    assert not (tmp_path / "p.json").exists()


def test_cli_prints_intervals_and_html_shows_them(tmp_path, monkeypatch, capsys):
    from ttscale.cli import main

    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in known_table()))
    out = tmp_path / "p.json"
    monkeypatch.setattr(sys, "argv", ["ttscale", "fit-policy", str(table), "--out", str(out), "--bins", "absolute",
                                      "--folds", "4", "--bootstrap", "300", "--seed", "2"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        main()
    printed = capsys.readouterr().out
    assert exc.value.code == 0, printed
    pol = json.loads(out.read_text())
    assert pol["fit"]["folds"] == 4 and pol["fit"]["bootstrap"]["resamples"] == 300
    m = {x["budget"]: x for x in pol["bon_match"]}[2]
    line = (f"best-of-N to match the policy at N=2: {m['match_budget']:.1f} generations ({m['ratio']:.2f}x); "
            f"ratio 95% interval [{m['ratio_low']:.2f}x, {m['ratio_high']:.2f}x]")
    assert line in printed and "4-fold CV" in printed and "95% bootstrap" in printed
    assert "bootstrap over problems, 300 resamples, seed 2" in printed
    page = build_html(known_table(), policy=pol)
    assert "4-fold CV" in page and "ratio 95% bootstrap interval" in page
    assert f"[{m['ratio_low']:.2f}×, {m['ratio_high']:.2f}×]" in page
    cv2 = {c["budget"]: c for c in pol["cv_curve"]}[2]
    assert f"[{100 * cv2['boot_low']:.1f}%, {100 * cv2['boot_high']:.1f}%]" in page
