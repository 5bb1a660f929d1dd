"""self_verify (Sample, Scrutinize and Scale) and pessimistic_verification (Heimdall) on the
scripted engine: what is sent, in which order, how votes become a choice, and what is charged."""

import math
from collections import defaultdict

import pytest

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.engines.scripted import ScriptedEngine
from ttscale.strategies.base import load_strategies
from ttscale.strategies.pessimistic_verification import penalty
from ttscale.strategies.self_verify import parse_verdict, parse_winner
from ttscale.verifiers.math_answers import MathAnswers

from helpers import make_ctx

PROMPTS = {"verify_prompt": "V {solution}"}


def scripted(sols, votes, compares=()):
    """Solutions for the first (policy) request, then per-solution verification replies (keyed by
    the solution's first word) and comparison replies in order."""
    used: dict[str, int] = defaultdict(int)
    comp = iter(compares)

    def script(req, k):
        c = req.messages[-1]["content"]
        if c.startswith("V "):
            key = c.split()[1]
            used[key] += 1
            return votes[key][used[key] - 1]
        if c.startswith("C "):
            return next(comp)
        return sols[k]

    return ScriptedEngine(script)


async def run(name, params, eng, budget=None):
    entry = load_strategies().get(name)
    ctx = make_ctx(eng, MathAnswers(), budget=budget)
    out = await entry.target(ctx.problem, ctx, entry.make_params(params))
    return out, ctx


def words(*texts):
    return sum(len(t.split()) for t in texts)


# --------------------------------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize("text, vote", [
    ("Verdict: yes", 1.0),
    ("**Verdict:** No", 0.0),
    ("The steps look correct. Verdict: incorrect", 0.0),
    ("Verdict: yes. On second thought, verdict: no", 0.0),
    ("Score: 7/10", 0.7),
    ("score = 8", 0.8),
    ("Score: 85", 0.85),
    ("Score: 0.3", 0.3),
    ("The answer is correct.", 1.0),
    ("<think>no no no</think> Yes.", 1.0),
    ("<think>still thinking", None),
    ("I am not sure", None),
])
def test_parse_verdict(text, vote):
    assert parse_verdict(text) == pytest.approx(vote) if vote is not None else parse_verdict(text) is None


@pytest.mark.parametrize("text, winner", [
    ("Winner: B", "B"),
    ("**Winner:** Solution A", "A"),
    ("Solution B is the better one.", "B"),
    ("Winner: A ... no wait. Winner: B", "B"),
    ("neither of them", None),
    ("winner: a bit unclear", None),
])
def test_parse_winner(text, winner):
    assert parse_winner(text) == winner


# --------------------------------------------------------------------------------------------------
# self_verify

SV = {**PROMPTS, "compare_prompt": "C {a} | {b}"}


async def test_self_verify_votes_then_pairwise_tie_break():
    sols = ["a \\boxed{7}", "b \\boxed{5}", "c \\boxed{5}"]
    votes = {"a": ["Verdict: yes", "Verdict: yes"], "b": ["Score: 9/10", "Verdict: yes"],
             "c": ["Verdict: no", "I am not sure"]}
    compares = ["Winner: B", "I think Solution A is right. Winner: A"]
    eng = scripted(sols, votes, compares)
    out, ctx = await run("self_verify", {**SV, "k": 3, "k_verif": 2, "k_tie": 2}, eng)
    sent = [c.messages[-1]["content"] for c in eng.calls]
    assert sent == [
        "What is 2+3?",
        "V a \\boxed{7}", "V b \\boxed{5}", "V c \\boxed{5}",
        "C a \\boxed{7} | b \\boxed{5}",  # a and b are tied (1.0 and 0.95); c (0.25) is not
        "C b \\boxed{5} | a \\boxed{7}",  # second comparison: order swapped
    ]
    assert [c.n for c in eng.calls] == [3, 2, 2, 2, 1, 1]
    assert [c.max_tokens for c in eng.calls] == [1024, 256, 256, 256, 256, 256]
    assert [c.temperature for c in eng.calls] == [0.7] * 6
    # b wins both comparisons despite its lower score
    assert out.answer == "5" and out.chosen.id == 1
    assert out.extra["scores"] == pytest.approx([1.0, 0.95, 0.25])
    assert out.extra["votes"] == [[1.0, 1.0], [pytest.approx(0.9), 1.0], [0.0, None]]
    assert out.extra["tied"] == [0, 1]
    assert out.extra["comparisons"] == [{"a": 0, "b": 1, "winner": 1}, {"a": 1, "b": 0, "winner": 1}]
    assert out.extra["wins"] == {"0": 0, "1": 2}
    assert out.candidates[2].extra["votes"] == [0.0, None] and out.candidates[2].score == 0.25
    cost = ctx.meter.snapshot()
    assert (cost.generations, cost.engine_calls, cost.generated_tokens) == (3, 1, words(*sols))
    assert cost.verifier_calls == 5
    assert cost.verifier_generated_tokens == words(*votes["a"], *votes["b"], *votes["c"], *compares)
    assert cost.verifier_prompt_tokens == 3 * 3 + 2 * 6


async def test_self_verify_no_comparison_when_tied_answers_agree_or_k_tie_is_zero():
    sols = ["a \\boxed{5}", "b \\boxed{5}", "c \\boxed{7}"]
    votes = {"a": ["yes"], "b": ["yes"], "c": ["no"]}
    eng = scripted(sols, votes)
    out, _ = await run("self_verify", {**SV, "k": 3, "k_verif": 1}, eng)
    assert len(eng.calls) == 4 and out.chosen.id == 0 and out.extra["comparisons"] == []
    assert out.extra["tied"] == [0, 1]

    votes = {"a": ["yes"], "b": ["no"], "c": ["yes"]}
    eng = scripted(sols, votes)
    out, _ = await run("self_verify", {**SV, "k": 3, "k_verif": 1, "k_tie": 0}, eng)
    assert len(eng.calls) == 4 and out.extra["tied"] == [0, 2] and out.answer == "5"


async def test_self_verify_unreadable_comparisons_fall_back_to_score():
    sols = ["a \\boxed{7}", "b \\boxed{5}"]
    votes = {"a": ["Score: 0.97"], "b": ["Score: 1"]}
    eng = scripted(sols, votes, ["hmm", "dunno"])
    out, _ = await run("self_verify", {**SV, "k": 2, "k_verif": 1}, eng)
    assert out.extra["wins"] == {"1": 0, "0": 0} and out.answer == "5"
    assert [c["winner"] for c in out.extra["comparisons"]] == [None, None]


async def test_self_verify_budget_clips_policy_not_verifier():
    sols = ["a \\boxed{7}", "b \\boxed{5}", "c \\boxed{5}"]
    votes = {"a": ["Verdict: yes"] * 4, "b": ["Verdict: no"] * 4}
    eng = scripted(sols, votes)
    out, ctx = await run("self_verify", {**SV, "k": 3, "k_verif": 4}, eng, budget=Budget(max_generations=2))
    assert eng.calls[0].n == 2 and len(out.candidates) == 2 and out.answer == "7"
    cost = ctx.meter.snapshot()
    assert cost.generations == 2 and cost.verifier_calls == 2 and cost.verifier_generated_tokens == 16
    assert ctx.meter.stopped_by_budget is False


def test_self_verify_bad_parameters():
    entry = load_strategies().get("self_verify")
    for values, msg in [
        ({"k_verif": 0}, "k_verif must be >= 1, got 0"),
        ({"tie_margin": 2}, "tie_margin must be in \\[0, 1\\], got 2.0"),
        ({"k_tie": -1}, "k_tie must be >= 0, got -1"),
        ({"verify_prompt": "{problem} {answer}"}, "verify_prompt may use only the placeholders"),
        ({"compare_prompt": "{a}"}, None),  # fewer placeholders are fine
    ]:
        if msg is None:
            entry.make_params(values)
            continue
        with pytest.raises(ConfigError, match=msg):
            entry.make_params(values)


# --------------------------------------------------------------------------------------------------
# pessimistic_verification

PV_SOLS = ["a \\boxed{7}", "b \\boxed{5}", "c \\boxed{5}", "d no answer"]
PV_VOTES = {"a": ["Verdict: yes"] * 2, "b": ["Verdict: yes", "Verdict: no"], "c": ["Verdict: yes"] * 2,
            "d": ["Verdict: yes"] * 2}


async def test_pessimistic_small_alpha_keeps_the_best_mean():
    eng = scripted(PV_SOLS, PV_VOTES)
    out, ctx = await run("pessimistic_verification", {**PROMPTS, "n": 4, "m": 2, "alpha": 0.5}, eng)
    assert [c.messages[-1]["content"] for c in eng.calls] == ["What is 2+3?", *(f"V {s}" for s in PV_SOLS)]
    assert [c.n for c in eng.calls] == [4, 2, 2, 2, 2]
    p1, p2 = 0.5 * math.log(8) / 3, 0.5 * math.log(8) / 5
    assert out.extra["answers"] == {
        "7": {"support": 1, "mean": 1.0, "penalty": pytest.approx(p1), "value": pytest.approx(1 - p1),
              "candidates": [0]},
        "5": {"support": 2, "mean": 0.75, "penalty": pytest.approx(p2), "value": pytest.approx(0.75 - p2),
              "candidates": [1, 2]},
    }
    assert out.answer == "7" and out.chosen.id == 0
    cost = ctx.meter.snapshot()
    assert cost.generations == 4 and cost.verifier_calls == 4 and cost.verifier_generated_tokens == 16


async def test_pessimistic_large_alpha_prefers_support():
    eng = scripted(PV_SOLS, PV_VOTES)
    out, _ = await run("pessimistic_verification", {**PROMPTS, "n": 4, "m": 2, "alpha": 2.0}, eng)
    # 7: 1 - 2 ln8/3 = -0.386 ; 5: 0.75 - 2 ln8/5 = -0.082 -> 5, its best-voted member c
    assert out.answer == "5" and out.chosen.id == 2
    eng = scripted(PV_SOLS, PV_VOTES)
    out, _ = await run("pessimistic_verification", {**PROMPTS, "n": 4, "m": 2, "alpha": 0.0}, eng)
    assert out.answer == "7" and out.extra["answers"]["5"]["penalty"] == 0.0


async def test_pessimistic_budget_and_no_answers():
    eng = scripted(PV_SOLS, PV_VOTES)
    out, ctx = await run("pessimistic_verification", {**PROMPTS, "n": 4, "m": 2}, eng,
                         budget=Budget(max_generations=2))
    assert out.extra["n"] == 2 and len(eng.calls) == 3
    assert out.extra["answers"]["7"]["penalty"] == pytest.approx(penalty(0.5, 2, 2, 1))
    assert ctx.meter.snapshot().generations == 2
    eng = scripted(["d no answer", "d none either"], {"d": ["Verdict: yes"] * 4})
    out, _ = await run("pessimistic_verification", {**PROMPTS, "n": 2, "m": 2}, eng)
    assert out.answer is None and out.chosen is None and len(out.candidates) == 2
    assert out.extra["answers"] == {}


def test_penalty_form_and_bad_parameters():
    assert penalty(1.0, 8, 4, 1) == pytest.approx(math.log(32) / 5)
    assert penalty(1.0, 8, 4, 4) == pytest.approx(math.log(32) / 17)
    assert penalty(1.0, 1, 1, 1) == 0.0
    entry = load_strategies().get("pessimistic_verification")
    with pytest.raises(ConfigError, match="m must be >= 1, got 0"):
        entry.make_params({"m": 0})
    with pytest.raises(ConfigError, match=r"alpha must be >= 0, got -1\.0"):
        entry.make_params({"alpha": -1})


# --------------------------------------------------------------------------------------------------
# end to end on the tiny embedded model


@pytest.mark.model
@pytest.mark.parametrize("name, params", [
    ("self_verify", {"k": 2, "k_verif": 1, "k_tie": 1, "max_tokens": 24, "verify_max_tokens": 8}),
    ("pessimistic_verification", {"n": 2, "m": 1, "max_tokens": 24, "verify_max_tokens": 8}),
])
async def test_end_to_end_on_embedded(embedded_small, name, params):
    entry = load_strategies().get(name)
    ctx = make_ctx(embedded_small, MathAnswers(), budget=Budget(max_generated_tokens=48))
    out = await entry.target(ctx.problem, ctx, entry.make_params(params))
    cost = ctx.meter.snapshot()
    assert len(out.candidates) >= 1 and 0 < cost.generated_tokens <= 48
    assert cost.verifier_calls >= len(out.candidates) and cost.verifier_generated_tokens > 0
    assert all(c.score is not None for c in out.candidates)
