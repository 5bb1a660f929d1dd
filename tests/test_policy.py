import json

import pytest

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.core.policy import load_policy, lookup
from ttscale.core.protocols import Verifier
from ttscale.core.types import Problem
from ttscale.engines.scripted import ScriptedEngine
from ttscale.lab.flops import budget_multiple_to_match, budget_to_reach, flops_exchange_rate
from ttscale.lab.policy import bon_match, fit_policy, save_policy, split_folds
from ttscale.strategies.base import load_strategies
from ttscale.verifiers.math_answers import MathAnswers

from helpers import make_ctx


def make_rows(n_problems: int = 40, models=("m",)) -> list[dict]:
    """A sweep table with a known answer. Easy problems p00-p19 (pass@1 10..15/16, scores ~0.9):
    majority is right from n=4 on, best_of_n on 70% of them. Hard problems p20-p39 (pass@1 0..3/16,
    scores ~0.2): majority always wrong, best_of_n n=4 right on even ids, n=16 always right.
    n=1 configurations are right only on easy even ids."""
    rows = []
    for model in models:
        for i in range(n_problems):
            easy = i < n_problems // 2
            c = (10 + i % 6) if easy else (i % 4)
            pool = [j < c for j in range(16)]
            score = (0.9 - (i % 5) * 0.01) if easy else (0.2 + (i % 5) * 0.01)
            answers = ["42" if ok else str(100 + j % 3) for j, ok in enumerate(pool)]
            for strat in ("majority", "best_of_n"):
                for n in (1, 4, 16):
                    if n == 1:
                        ok = easy and i % 2 == 0
                    elif strat == "majority":
                        ok = easy
                    else:
                        ok = (i % 10 < 7) if easy else (i % 2 == 0 if n == 4 else True)
                    params = {"n": n} if strat == "majority" else {"n": n, "verifier": "table"}
                    rows.append({
                        "sweep": "t", "dataset": "d", "problem_id": f"p{i:02d}", "engine": "scripted",
                        "model": model, "strategy": strat, "params": json.dumps(params, sort_keys=True),
                        "config": f"{strat} n={n}", "budget_n": n, "seed": 0, "derived_from": "",
                        "correct": ok, "answer": "42" if ok else "7", "reference": "42",
                        "generated_tokens": 100 * n, "prompt_tokens": 10, "verifier_tokens": 0,
                        "generations": n, "flops": None, "wall_time_s": 0.1, "cand_correct": pool[:n],
                        "cand_scores": [score] * n, "cand_answers": answers[:n],
                        "sample_accuracy": sum(pool[:n]) / n, "mean_score": score,
                    })
    return rows


def choices(policy):
    return {(e["bin"], e["budget"]): e["config"] for e in policy["table"]}


# --- FLOPs and matching ----------------------------------------------------------------------------
def test_flops_exchange_rate_published_values():
    assert [round(flops_exchange_rate(14, r), 2) for r in (0.16, 0.79, 22)] == [257.75, 63.37, 15.77]
    assert flops_exchange_rate(1, 5) == 1.0
    with pytest.raises(ValueError):
        flops_exchange_rate(14, 0)


def test_budget_to_reach_interpolates_in_log_budget():
    curve = [(16, 0.8), (1, 0.4), (4, 0.6)]
    assert budget_to_reach(curve, 0.3) == 1.0
    assert budget_to_reach(curve, 0.6) == pytest.approx(4.0)
    assert budget_to_reach(curve, 0.7) == pytest.approx(8.0)  # halfway in log between 4 and 16
    assert budget_to_reach(curve, 0.5) == pytest.approx(2.0)
    assert budget_to_reach(curve, 0.81) is None
    assert budget_multiple_to_match([(1, 0.3), (8, 0.6)], 0.45) == pytest.approx(8 ** 0.5)


def test_bon_match_ratio_uses_best_bon_curve():
    policy_curve = [{"budget": 4, "accuracy": 0.7}, {"budget": 16, "accuracy": 0.9}, {"budget": 1, "accuracy": 0.3}]
    fixed = {
        "best_of_n": [{"budget": 1, "accuracy": 0.3}, {"budget": 4, "accuracy": 0.5}, {"budget": 64, "accuracy": 0.9}],
        "weighted_best_of_n": [{"budget": 4, "accuracy": 0.6}, {"budget": 16, "accuracy": 0.8}],
        "majority": [{"budget": 1, "accuracy": 0.95}],
    }
    out = {m["budget"]: m for m in bon_match(policy_curve, fixed)}
    assert out[4]["strategy"] == "weighted_best_of_n"
    assert out[4]["match_budget"] == pytest.approx(8.0) and out[4]["ratio"] == pytest.approx(2.0)
    assert out[16]["strategy"] == "best_of_n"  # only best_of_n reaches 0.9, at 64
    assert out[16]["match_budget"] == pytest.approx(64.0) and out[16]["ratio"] == pytest.approx(4.0)
    assert out[1]["match_budget"] == 1.0 and out[1]["ratio"] == 1.0
    assert bon_match([{"budget": 4, "accuracy": 0.99}], fixed)[0]["ratio"] is None


# --- fitting ---------------------------------------------------------------------------------------
def test_split_folds_is_seeded_and_a_partition():
    keys = [("d", f"p{i:02d}") for i in range(11)]
    a, b = split_folds(keys, 2, seed=3)
    assert [a, b] == split_folds(list(reversed(keys)), 2, seed=3)
    assert sorted(a + b) == keys and len(a) == 6 and len(b) == 5
    assert split_folds(keys, 2, seed=4) != [a, b]
    five = split_folds(keys, 5, seed=3)
    assert five == split_folds(list(reversed(keys)), 5, seed=3)  # order of input does not matter
    assert sorted(p for f in five for p in f) == keys  # a partition: every key once
    assert [len(f) for f in five] == [3, 2, 2, 2, 2] and all(f == sorted(f) for f in five)
    assert split_folds(keys, 5, seed=4) != five
    assert [len(f) for f in split_folds(keys, 11)] == [1] * 11
    with pytest.raises(ConfigError, match="--folds 12: more folds than the 11 problems"):
        split_folds(keys, 12)
    with pytest.raises(ConfigError, match="--folds 1: cross-validation needs at least 2 folds"):
        split_folds(keys, 1)


def test_policy_absolute_bins_majority_on_easy_best_of_n_on_hard():
    pol = fit_policy(make_rows(), bins="absolute")
    ch = choices(pol)
    assert ch[(0, 4)] == ch[(0, 16)] == "majority n=4"  # tie with n=16 -> smaller budget
    assert ch[(1, 4)] == ch[(2, 4)] == "best_of_n n=4"
    assert ch[(1, 16)] == ch[(2, 16)] == "best_of_n n=16"
    entry = next(e for e in pol["table"] if e["bin"] == 0 and e["budget"] == 16)
    assert entry["strategy"] == "self_consistency" and entry["params"] == {"n": 4}  # majority runs as SC
    assert entry["table_strategy"] == "majority" and entry["train_accuracy"] == 1.0
    # held-out choices are the ideal ones: 20 easy right; hard: even ids at N=4, all at N=16
    cv = {c["budget"]: c for c in pol["cv_curve"]}
    assert cv[4]["accuracy"] == pytest.approx(0.75) and cv[16]["accuracy"] == pytest.approx(1.0)
    assert cv[16]["mean_generated_tokens"] == pytest.approx((20 * 400 + 20 * 1600) / 40)
    fixed = {c["budget"]: c["accuracy"] for c in pol["fixed_curves"]["best_of_n"]}
    assert fixed == {1: 0.25, 4: pytest.approx(0.6), 16: pytest.approx(0.85)}
    bm = {m["budget"]: m for m in pol["bon_match"]}
    assert bm[4]["ratio"] == pytest.approx(4 ** 0.6 / 1)  # 0.75 lies 60% of the way from 0.6 to 0.85
    assert bm[4]["match_budget"] == pytest.approx(4 ** 1.6)
    assert bm[16]["match_budget"] is None
    assert pol["binning"]["edges"] == [0.5, 0.1]
    # predicted edges live on the verifier's scale: the oracle's shares (20/10/10) cut the score ranks;
    # scores tied at 0.22 straddle the second cut and all go to the easier bin
    assert pol["predicted_binning"]["method"] == "quantile"
    assert pol["predicted_binning"]["edges"] == pytest.approx([0.55, 0.22])
    assert pol["predicted_binning"]["labels"] == pol["binning"]["labels"]
    assert {b: sum(1 for *_, x in pol["problem_bins"] if x == b) for b in range(3)} == {0: 20, 1: 10, 2: 10}


def test_matched_bins_on_a_confidence_scale():
    from ttscale.lab.difficulty import matched_bins

    conf = {"a": 6.0, "b": 5.5, "c": 5.0, "d": 4.5, "e": 4.0}  # DeepConf-like, not in [0, 1]
    b = matched_bins(conf, [1, 3, 1], ["easy", "medium", "hard"])
    assert b.edges == (5.75, 4.25)
    assert [b.bin_of(v) for v in conf.values()] == [0, 1, 1, 1, 2]
    empty_top = matched_bins(conf, [0, 4, 1], ["easy", "medium", "hard"])
    assert [empty_top.bin_of(v) for v in conf.values()] == [1, 1, 1, 1, 2]
    empty_bottom = matched_bins(conf, [2, 3, 0], ["easy", "medium", "hard"])
    assert [empty_bottom.bin_of(v) for v in conf.values()] == [0, 0, 1, 1, 1]


def test_policy_quantile_bins_and_predicted_edges():
    pol = fit_policy(make_rows(), bins="quantile", seed=0)
    ch = choices(pol)
    for b in (0, 1):  # the 16 easiest problems are all easy ones
        assert ch[(b, 4)] == ch[(b, 16)] == "majority n=4"
    for b in (3, 4):  # the 16 hardest are all hard ones
        assert ch[(b, 4)] == "best_of_n n=4" and ch[(b, 16)] == "best_of_n n=16"
    assert len(pol["binning"]["edges"]) == 4 and pol["fit"]["problems"] == 40
    # predicted edges: ranks on the mean score, 8 problems per bin
    pe = pol["predicted_binning"]["edges"]
    assert pe == sorted(pe, reverse=True) and pe[0] == pytest.approx(0.885) and pe[3] == pytest.approx(0.215)
    assert fit_policy(make_rows(), bins="quantile", seed=0) == pol
    pp = fit_policy(make_rows(), difficulty="predicted", bins="absolute")
    assert pp["predicted_binning"] == pp["binning"] and choices(pp)[(0, 16)] == "majority n=4"


def test_policy_fit_errors():
    rows = make_rows(models=("a", "b"))
    with pytest.raises(ConfigError, match="several models"):
        fit_policy(rows)
    assert fit_policy(rows, model="b", bins="absolute")["fit"]["model"] == "b"
    no_scores = [{**r, "cand_scores": [None] * len(r["cand_scores"])} for r in make_rows()]
    with pytest.raises(ConfigError, match="verifier score"):
        fit_policy(no_scores)
    assert fit_policy(no_scores, require_predicted=False)["predicted_binning"] is None


def test_policy_file_roundtrip_and_lookup(tmp_path):
    pol = fit_policy(make_rows(), bins="absolute")
    path = save_policy(pol, tmp_path / "policy.json")
    back = load_policy(path)
    assert back == json.loads(json.dumps(pol))
    assert lookup(back, 0, 10)["config"] == "majority n=4" and lookup(back, 0, 10)["budget"] == 4
    assert lookup(back, None, 100)["config"] == "best_of_n n=16"
    with pytest.raises(ConfigError, match="below the policy's smallest budget"):
        lookup(back, 0, 0)
    (tmp_path / "x.json").write_text('{"kind": "other"}')
    with pytest.raises(ConfigError, match=r"x\.json: field kind='other'"):
        load_policy(tmp_path / "x.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "missing.json")


# --- compute_optimal strategy ----------------------------------------------------------------------
class FirstWordVerifier(Verifier):
    name = "table"

    def __init__(self, table):
        self.table = table
        self.calls = 0

    async def score(self, problem, candidates, ctx):
        self.calls += 1
        return [self.table[c.text.split()[0]] for c in candidates]


SCORES = {"easy": 0.9, "hard": 0.2, "good": 0.95, "bad": 0.1}


async def dispatch(tmp_path, texts, budget=16, run_budget=None):
    path = save_policy(fit_policy(make_rows(), bins="absolute"), tmp_path / "policy.json")
    eng = ScriptedEngine({"q": texts})
    v = FirstWordVerifier(SCORES)
    ctx = make_ctx(eng, MathAnswers(), problem=Problem(id="q", prompt="Q?", answer="5"),
                   verifiers={"table": v}, budget=run_budget)
    entry = load_strategies().get("compute_optimal")
    params = entry.make_params({"policy": str(path), "budget": budget, "probe_n": 2, "verifier": "table"})
    out = await entry.target(ctx.problem, ctx, params)
    return out, ctx, eng


async def test_compute_optimal_easy_problem_dispatches_majority(tmp_path):
    texts = ["easy \\boxed{5}", "easy \\boxed{5}", "good \\boxed{5}", "bad \\boxed{7}", "good \\boxed{5}",
             "bad \\boxed{7}"]
    out, ctx, eng = await dispatch(tmp_path, texts)
    assert out.extra["predicted_difficulty"] == pytest.approx(0.9) and out.extra["difficulty_bin"] == 0
    assert out.extra["dispatched"] == {"strategy": "self_consistency", "params": {"n": 4}, "budget": 16}
    assert out.answer == "5" and out.extra["votes"] == {"5": 2.0, "7": 2.0}  # tie -> first seen
    assert [c.extra.get("role") for c in out.candidates] == ["probe", "probe", None, None, None, None]
    assert [r.n for r in eng.calls] == [2, 4]
    assert ctx.meter.snapshot().generations == 6  # the probes are charged


async def test_compute_optimal_hard_problem_dispatches_best_of_n(tmp_path):
    texts = ["hard \\boxed{1}", "hard \\boxed{2}", "bad \\boxed{7}", "good \\boxed{5}", "bad \\boxed{7}",
             "bad \\boxed{7}"]
    out, ctx, eng = await dispatch(tmp_path, texts, budget=5)
    # 0.2 is below the predicted edge 0.22 between medium and hard (see the absolute-bins test)
    assert out.extra["difficulty_bin"] == 2 and out.extra["predicted_difficulty"] == pytest.approx(0.2)
    assert out.extra["dispatched"] == {"strategy": "best_of_n", "params": {"n": 4, "verifier": "table"},
                                       "budget": 4}
    assert out.answer == "5" and out.chosen.text == "good \\boxed{5}" and out.chosen.score == 0.95
    assert ctx.meter.snapshot().generations == 6 and [r.n for r in eng.calls] == [2, 4]


async def test_compute_optimal_probes_spend_the_run_budget(tmp_path):
    # the 2 probes spend a 2-generation budget: the dispatched strategy gets nothing
    out, ctx, eng = await dispatch(tmp_path, ["good \\boxed{5}"], run_budget=Budget(max_generations=2))
    assert out.extra["difficulty_bin"] == 0 and out.extra["probe_scores"] == [0.95, 0.95]
    assert out.answer is None and ctx.meter.snapshot().generations == 2 and len(eng.calls) == 1


async def test_compute_optimal_without_probes_uses_overall_choice(tmp_path):
    path = save_policy(fit_policy(make_rows(), bins="absolute"), tmp_path / "policy.json")
    eng = ScriptedEngine({"p1": ["good \\boxed{5}"]})
    ctx = make_ctx(eng, MathAnswers(), verifiers={"table": FirstWordVerifier(SCORES)},
                   budget=Budget(max_generations=1))
    ctx.meter.generations = 1  # budget already spent: no probe can be drawn
    entry = load_strategies().get("compute_optimal")
    out = await entry.target(ctx.problem, ctx, entry.make_params({"policy": str(path), "verifier": "table"}))
    assert out.extra["difficulty_bin"] is None and out.extra["predicted_difficulty"] is None
    assert out.extra["dispatched"]["strategy"] == "best_of_n" and out.extra["dispatched"]["params"]["n"] == 16
    assert out.answer is None and eng.calls == []


async def test_compute_optimal_errors(tmp_path):
    entry = load_strategies().get("compute_optimal")
    eng = ScriptedEngine({"p1": ["a \\boxed{1}"]})
    ctx = make_ctx(eng, MathAnswers())
    with pytest.raises(ConfigError, match="policy is required"):
        await entry.target(ctx.problem, ctx, entry.make_params({}))
    with pytest.raises(ConfigError, match="cannot be read"):
        await entry.target(ctx.problem, ctx, entry.make_params({"policy": str(tmp_path / "none.json")}))
    no_scores = [{**r, "cand_scores": [None] * len(r["cand_scores"])} for r in make_rows()]
    path = save_policy(fit_policy(no_scores, require_predicted=False), tmp_path / "p.json")
    with pytest.raises(ConfigError, match="predicted_binning is null"):
        await entry.target(ctx.problem, ctx, entry.make_params({"policy": str(path)}))
    with pytest.raises(ConfigError, match="probe_n must be >= 1"):
        entry.make_params({"policy": str(path), "probe_n": 0})
