"""Adaptive stopping: the pure rules on hand-made counts, the strategies on scripted and replayed
samples, the ensemble MILP and the ensemble engine."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from scipy.special import betainc

from ttscale.core.budget import Budget
from ttscale.core.protocols import answer_options
from ttscale.engines.ensemble import EnsembleEngine
from ttscale.engines.replay import ReplayEngine
from ttscale.engines.scripted import ScriptedEngine, ScriptedReply
from ttscale.lab.ensemble_weights import ensemble_accuracy, fit_ensemble_weights
from ttscale.strategies.base import load_strategies
from ttscale.strategies.stopping import (
    ac_probability,
    adaptive_consistency_stop,
    bayes_factor,
    best_of_infinity_stop,
    length_weights,
    majority_decided,
    margin_stop,
    mc_rng,
    options_min_samples,
    weighted_votes,
)

from helpers import make_ctx, write_recorded


class StrAnswers:
    """Answers are equal when their strings are (MathAnswers may not be importable yet)."""

    def extract(self, text):
        return None

    async def group(self, answers):
        ids: dict[str, int] = {}
        return [None if a is None else ids.setdefault(a, len(ids)) for a in answers]


# --- Adaptive-Consistency -----------------------------------------------------------------------


def test_ac_probability_closed_form():
    assert ac_probability(3, 0) == pytest.approx(1 - 0.5**4)  # 0.9375
    assert ac_probability(4, 0) == pytest.approx(1 - 0.5**5)  # 0.96875
    assert ac_probability(5, 4) == pytest.approx(1 - betainc(6, 5, 0.5))
    assert ac_probability(2, 2) == pytest.approx(0.5)


def test_ac_stops_only_when_confident_or_capped():
    assert not adaptive_consistency_stop([3])  # 0.9375 < 0.95
    d = adaptive_consistency_stop([4])
    assert d.stop and d.reason == "confident"
    assert not adaptive_consistency_stop([5, 4])
    assert not adaptive_consistency_stop([8, 3])  # 1 - I(9, 4) = 0.927
    assert adaptive_consistency_stop([8, 3]).stat == pytest.approx(1 - betainc(9, 4, 0.5))
    assert adaptive_consistency_stop([9, 2]).stop  # 0.989
    d = adaptive_consistency_stop([5, 4], 40)
    assert d.stop and d.reason == "max_samples"
    assert not adaptive_consistency_stop([4], min_samples=5)
    assert not adaptive_consistency_stop([], 3)  # no answer yet: nothing to be confident about


# --- Best-of-infinity ---------------------------------------------------------------------------


def test_bayes_factor_unanimous_matches_beta_and_stops_at_three():
    # one answer + the unseen bucket: Dirichlet(n+1, 1.3), p = P(Beta(n+1, 1.3) > 1/2), K = 2
    for n, exact in ((2, 9.23), (3, 19.14)):
        p = 1 - betainc(n + 1, 1.3, 0.5)
        assert 2 * p / (1 - p) == pytest.approx(exact, abs=0.01)
        assert bayes_factor([n], rng=0, draws=20000) == pytest.approx(exact, rel=0.1)
    rng = mc_rng(0, "p")
    assert not best_of_infinity_stop([2], rng=rng)  # BF ~ 9 < 10
    d = best_of_infinity_stop([3], rng=rng)
    assert d.stop and d.reason == "confident" and d.stat >= 10
    assert best_of_infinity_stop([1], rng=0, threshold=3).stop  # BF ~ 4 >= 3


def test_bayes_factor_tie_is_zero_and_does_not_stop():
    assert bayes_factor([4, 4]) == 0.0
    assert bayes_factor([2, 2, 1]) == 0.0
    assert bayes_factor([]) == 0.0
    assert not best_of_infinity_stop([4, 4], rng=0)
    assert best_of_infinity_stop([4, 4], 100, rng=0).reason == "max_samples"


def test_bayes_factor_seeded_and_without_unseen_bucket():
    assert bayes_factor([6, 1], rng=np.random.default_rng(5)) == bayes_factor([6, 1], rng=np.random.default_rng(5))
    assert math.isinf(bayes_factor([3], unseen=0.0))  # a lone answer with no unseen bucket
    assert bayes_factor([6, 1], rng=1) > bayes_factor([4, 3], rng=1)


# --- ttscale's rule -----------------------------------------------------------------------------


def test_margin_rule():
    assert not margin_stop([2], tokens=[10])  # min_samples 3
    assert margin_stop([3], tokens=[10]).stop  # unanimous 3
    assert not margin_stop([3, 1], tokens=[300, 10], short_bonus=1)  # lead 2, leader longer: needs 2.5
    assert margin_stop([3, 1], tokens=[30, 100], short_bonus=1).stop  # lead 2, leader shorter: needs 1.5
    assert not margin_stop([3, 1], tokens=[30, 100])  # no bonus by default (length weights replace it)
    assert not margin_stop([3, 1], short_bonus=1)  # without token counts the plain margin applies
    assert not margin_stop([5, 4], tokens=[5, 400])  # lead 1 never enough with margin 2.5
    d = margin_stop([5, 4], 24)
    assert d.stop and d.reason == "max_samples"
    assert margin_stop([2.7, 0.2], 4).stop and not margin_stop([2.6, 0.2], 4)  # weighted votes: lead 2.5 vs 2.4


def test_length_weights_favour_short_traces_and_are_capped():
    # answered mean = (10 + 40 + 10) / 3 = 20; the unanswered sample weighs 0 and is not in the mean
    assert length_weights([0, 1, 0, None], [10, 40, 10, 999]) == pytest.approx([2.0, 0.5, 2.0, 0.0])
    assert length_weights([0, 1, 0, None], [10, 40, 10, 999], gamma=0) == [1.0, 1.0, 1.0, 0.0]
    assert length_weights([0, 0, 1], [1, 100, 100]) == pytest.approx([2.0, 201 / 300, 201 / 300])  # capped at 2
    assert length_weights([None], [5]) == [0.0]
    assert weighted_votes([0, 1, 0, None], [2.0, 0.5, 2.0, 0.0]) == [4.0, 0.5]
    # unanimous samples always reach a weighted lead of k after k samples, whatever their lengths
    for toks in ([1, 100, 100], [50, 50, 50], [1, 1, 500], [7, 300, 2]):
        assert sum(length_weights([0, 0, 0], toks)) >= 3 - 1e-9


def test_options_min_samples():
    assert [options_min_samples(k) for k in (0, 1, 2, 4, 10, 100)] == [1, 1, 7, 4, 3, 2]
    for k in (2, 3, 4, 5, 10):  # a unanimous run of that many uniform guesses has chance <= 2%
        n = options_min_samples(k)
        assert k ** (1 - n) <= 0.02 < k ** (2 - n)


def test_answer_options_reads_the_declared_count():
    class Choice(StrAnswers):
        options = 4

    class Bad(StrAnswers):
        options = -1

    assert answer_options(Choice()) == 4 and answer_options(StrAnswers()) == 0
    with pytest.raises(TypeError, match="Bad: options must be a count >= 0, got -1"):
        answer_options(Bad())


# --- strategies ---------------------------------------------------------------------------------


def scripted(answers, lengths=None):
    def script(req, k):
        n = lengths[k] if lengths else 5
        return ScriptedReply(" ".join(["w"] * n), answer=answers[k])

    return ScriptedEngine(script)


async def run(name, params, eng, budget=None):
    entry = load_strategies().get(name)
    ctx = make_ctx(eng, StrAnswers(), budget=budget)
    out = await entry.target(ctx.problem, ctx, entry.make_params(params))
    return out, ctx


async def test_adaptive_consistency_exact_sample_counts():
    out, ctx = await run("adaptive_consistency", {}, scripted(["5"] * 50))
    assert out.answer == "5" and out.extra["samples"] == 4 and out.extra["stop_reason"] == "confident"
    assert ctx.meter.snapshot().generations == 4
    # 7, then 5 x 5 (after "7": [1,1] ... [5,1] at 6 samples: 1 - I(6,2) = 0.9375; [6,1] = 0.965)
    out, _ = await run("adaptive_consistency", {}, scripted(["7"] + ["5"] * 50))
    assert out.answer == "5" and out.extra["samples"] == 7
    # alternating answers never settle: the cap stops it
    out, _ = await run("adaptive_consistency", {"max_samples": 11}, scripted(["7", "5"] * 30))
    assert out.extra == {**out.extra, "samples": 11, "stop_reason": "max_samples"} and out.answer == "7"
    # with a cap of 10, 5-4 after 9 is decided: a 5-5 tie would go to "7", seen first
    out, _ = await run("adaptive_consistency", {"max_samples": 10}, scripted(["7", "5"] * 30))
    assert out.extra == {**out.extra, "samples": 9, "stop_reason": "decided"} and out.answer == "7"


def test_majority_decided_is_exact_under_first_seen_ties():
    assert majority_decided([2], 2)  # 2 left: a new answer can only tie, and a tie goes to the leader
    assert not majority_decided([2], 3)
    assert not majority_decided([1, 1], 2)
    assert majority_decided([3, 1], 2) and not majority_decided([3, 1], 3)  # 3-3 goes to the leader, seen first
    assert not majority_decided([1, 3], 2)  # 3-3 would go to the first-seen rival
    assert majority_decided([1, 3], 1)
    assert not majority_decided([], 0) and not majority_decided([0.0], 0)
    assert majority_decided([1], 0)


def test_decided_stop_returns_the_full_budget_answer_for_fewer_samples():
    """Property: with the Beta test switched off (threshold 1), stopping when the majority is decided
    gives exactly the first-seen-tie majority over all ``max_samples``, on random answer streams."""
    rng = np.random.default_rng(0)
    saved = 0
    for _ in range(400):
        m = int(rng.integers(2, 9))
        stream = [int(x) for x in rng.choice(3, size=m, p=[0.6, 0.3, 0.1])]
        counts: dict[int, int] = {}
        k = 0
        while k < m:
            counts[stream[k]] = counts.get(stream[k], 0) + 1
            k += 1
            if adaptive_consistency_stop(list(counts.values()), k, threshold=1.0, max_samples=m):
                break
        full: dict[int, int] = {}
        for a in stream:
            full[a] = full.get(a, 0) + 1
        want = max(full, key=lambda a: (full[a], -stream.index(a)))
        got = max(counts, key=lambda a: (counts[a], -stream.index(a)))
        assert got == want
        saved += m - k
    assert saved > 300  # and it does stop early, often


async def test_adaptive_consistency_small_cap_stops_when_decided():
    # at most 4 in waves of 2: the Beta test cannot fire, but 2 agreeing samples settle a 4-sample vote
    eng = scripted(["5"] * 10)
    out, ctx = await run("adaptive_consistency", {"max_samples": 4, "batch": 2}, eng)
    assert (out.answer, out.extra["samples"], out.extra["stop_reason"]) == ("5", 2, "decided")
    assert [c.n for c in eng.calls] == [2] and ctx.meter.snapshot().generations == 2
    out, _ = await run("adaptive_consistency", {"max_samples": 4, "batch": 2}, scripted(["5", "7", "7", "5"]))
    assert (out.answer, out.extra["samples"], out.extra["stop_reason"]) == ("5", 4, "max_samples")
    out, _ = await run("adaptive_consistency", {"max_samples": 4, "batch": 1}, scripted(["7", "5", "7", "5"]))
    assert (out.answer, out.extra["samples"], out.extra["stop_reason"]) == ("7", 3, "decided")
    # 5, 7, 7: a fourth "5" would tie 2-2 and win as the first seen, so it must draw the fourth
    out, _ = await run("adaptive_consistency", {"max_samples": 4, "batch": 1}, scripted(["5", "7", "7", "7"]))
    assert (out.answer, out.extra["samples"], out.extra["stop_reason"]) == ("7", 4, "max_samples")
    out, _ = await run("adaptive_consistency", {"max_samples": 4, "batch": 2, "min_samples": 4},
                       scripted(["5"] * 10))
    assert out.extra["samples"] == 4


async def test_adaptive_consistency_batches_and_budget():
    eng = scripted(["5"] * 50)
    out, _ = await run("adaptive_consistency", {"batch": 3}, eng)
    assert out.extra["samples"] == 6 and [c.n for c in eng.calls] == [3, 3]
    out, _ = await run("adaptive_consistency", {}, scripted(["7", "5"] * 30), budget=Budget(max_generations=5))
    assert out.extra["samples"] == 5 and out.extra["stop_reason"] == "budget" and out.answer == "7"


async def test_best_of_infinity_unanimous_stops_at_three():
    out, _ = await run("best_of_infinity", {}, scripted(["5"] * 50))
    assert out.answer == "5" and out.extra["samples"] == 3 and out.extra["stat"] >= 10
    out, _ = await run("best_of_infinity", {"threshold": 3}, scripted(["5"] * 50))
    assert out.extra["samples"] == 1
    out, _ = await run("best_of_infinity", {"max_samples": 12}, scripted(["7", "5"] * 30))
    assert out.extra["samples"] == 12 and out.extra["stop_reason"] == "max_samples"


async def test_adaptive_margin_uses_lengths():
    answers = ["5", "7", "5", "5", "7", "5"] + ["5"] * 20
    # "5" traces short (5 tokens, "7" 50): at 3 samples mean = 20, "5" weighs 2 x 2 (capped), "7" 0.4
    out, _ = await run("adaptive_margin", {}, scripted(answers, [5, 50, 5, 5, 50] + [5] * 21))
    assert out.answer == "5" and out.extra["samples"] == 3
    # "5" traces long, "7" short: "7" votes count double, "5" ones about 0.5-0.9; the lead first
    # reaches 2.5 at 10 samples (8 x "5" = 6.56 vs 2 x "7" = 4.0)
    long_five = [50, 5, 50, 50, 5, 50] + [50] * 20
    out, _ = await run("adaptive_margin", {}, scripted(answers, long_five))
    assert out.answer == "5" and out.extra["samples"] == 10
    assert out.extra["votes"]["5"] == pytest.approx(6.56, abs=1e-3)
    # plain votes with the short-trace bonus (the earlier rule): lead 2 at 4 samples, "5" short -> stop
    out, _ = await run("adaptive_margin", {"length_weight": 0, "short_bonus": 1},
                       scripted(answers, [5, 50, 5, 5, 50] + [5] * 21))
    assert out.answer == "5" and out.extra["samples"] == 4
    out, _ = await run("adaptive_margin", {"length_weight": 0, "short_bonus": 1}, scripted(answers, long_five))
    assert out.extra["samples"] == 7  # "5" long: needs a plain lead of 2.5, i.e. 3 (5-2)


async def test_adaptive_margin_waits_longer_when_options_are_declared():
    class Choice(StrAnswers):
        options = 4

    eng = scripted(["B"] * 30)
    entry = load_strategies().get("adaptive_margin")
    ctx = make_ctx(eng, Choice())
    out = await entry.target(ctx.problem, ctx, entry.make_params({}))
    assert out.answer == "B" and out.extra["samples"] == 4  # 3 agreeing guesses among 4 options: 1/16
    out, _ = await run("adaptive_margin", {"options": 2}, scripted(["B"] * 30))
    assert out.extra["samples"] == 7
    out, _ = await run("adaptive_margin", {}, scripted(["B"] * 30))
    assert out.extra["samples"] == 3


async def test_strategies_on_replay_engine(tmp_path):
    path = write_recorded(tmp_path / "rec.jsonl", n_problems=3, n_samples=60)
    for name in ("adaptive_consistency", "best_of_infinity", "adaptive_margin"):
        eng = ReplayEngine.from_file(path)
        entry = load_strategies().get(name)
        from ttscale.core.types import Problem

        ctx = make_ctx(eng, StrAnswers(), problem=Problem(id="0", prompt="q"))
        out = await entry.target(ctx.problem, ctx, entry.make_params({"max_samples": 40}))
        assert out.answer == "10"  # problem 0 is 90% gold "10"
        assert ctx.meter.snapshot().generations == out.extra["samples"] <= 40
        assert ctx.meter.snapshot().generated_tokens == sum(c.completion_tokens for c in out.candidates)


# --- ensemble -----------------------------------------------------------------------------------


def test_milp_fit_finds_known_optimum():
    # model A solves p1, p2; model B solves p3; only a mix solves p4 (A and B favour different
    # wrong answers there). With w the weight of A:
    a = {"1": ({"x": 8, "y": 2}, "x"), "2": ({"x": 6, "z": 4}, "x"), "3": ({"q": 9, "r": 1}, "r"),
         "4": ({"g": 4, "w": 6}, "g")}
    b = {"1": ({"y": 10}, "x"), "2": ({"z": 10}, "x"), "3": ({"r": 9, "q": 1}, "r"),
         "4": ({"g": 4, "v": 6}, "g")}
    # mixture w on A: p1 needs 0.8w > 0.2w + (1-w) -> w > 0.625; p2: 0.6w > 0.4w + (1-w) -> w > 5/6;
    # p3: 0.1w + 0.9(1-w) > 0.9w + 0.1(1-w) -> w < 0.5; p4: 0.4 > 0.6w and 0.4 > 0.6(1-w) -> 1/3 < w < 2/3
    # at most 2 of 4: p1 + p4 (0.625 < w < 2/3), p3 + p4 (1/3 < w < 1/2) or p1 + p2 (w > 5/6)
    fit = fit_ensemble_weights([a, b])
    assert fit.solved == 2 and fit.problems == 4
    assert ensemble_accuracy([a, b], fit.weights) == pytest.approx(0.5)
    assert ensemble_accuracy([a, b], [1.0, 0.0]) == pytest.approx(0.5)  # p1, p2
    w = fit.weights[0]
    assert 0.625 < w < 2 / 3 or 1 / 3 < w < 0.5 or w > 5 / 6


def test_milp_fit_on_one_split_applied_to_another(tmp_path):
    f1 = write_recorded(tmp_path / "a.jsonl", n_problems=6, n_samples=40, seed=1)
    f2 = write_recorded(tmp_path / "b.jsonl", n_problems=6, n_samples=40, seed=2)
    fit = fit_ensemble_weights([f1, f2], ids={"0", "2", "4"})
    assert fit.problems == 3 and abs(sum(fit.weights) - 1) < 1e-9
    assert 0.0 <= ensemble_accuracy([f1, f2], fit.weights, ids={"1", "3", "5"}) <= 1.0


async def test_ensemble_engine_mixes_engines_reproducibly():
    a = ScriptedEngine(lambda req, k: ScriptedReply("a", answer="A"))
    b = ScriptedEngine(lambda req, k: ScriptedReply("b b", answer="B"))
    from ttscale.core.types import GenerationRequest

    req = GenerationRequest(raw_prompt="q", n=200, problem_id="p", run_seed=3)
    ens = EnsembleEngine([a, b], [0.8, 0.2])
    out = await ens.generate(req)
    assert len(out) == 200 and [c.answer_hint for c in out] == ["AB"[k] for k in ens.drawn]
    assert 0.7 < sum(c.answer_hint == "A" for c in out) / 200 < 0.9
    ens2 = EnsembleEngine([a, b], [0.8, 0.2])
    out2 = await asyncio.gather(ens2.generate(req.with_(n=120)), asyncio.sleep(0))
    assert ens2.drawn == ens.drawn[:120] and len(out2[0]) == 120
    only_b = EnsembleEngine([a, b], [0.0, 1.0])
    assert {c.answer_hint for c in await only_b.generate(req.with_(n=10))} == {"B"}
