import pytest

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Verifier
from ttscale.engines.scripted import ScriptedEngine
from ttscale.strategies.base import load_strategies
from ttscale.strategies.voting import aggregate_steps
from ttscale.verifiers.math_answers import MathAnswers

from helpers import make_ctx

TEXTS = [
    "a \\boxed{7}", "b \\boxed{5}", "c \\boxed{5}", "d \\boxed{7}", "e \\boxed{\\frac{10}{2}}", "f no answer",
]


class LengthVerifier(Verifier):
    """Scores a candidate by a fixed table keyed on its first word (deterministic)."""

    name = "table"

    def __init__(self, table):
        self.table = table

    async def score(self, problem, candidates, ctx):
        return [self.table[c.text.split()[0]] for c in candidates]

    async def score_steps(self, problem, candidates, ctx):
        return [[0.9, self.table[c.text.split()[0]]] for c in candidates]


async def run(name, params, verifier=None, budget=None, texts=TEXTS):
    eng = ScriptedEngine({"p1": texts})
    entry = load_strategies().get(name)
    vs = {"table": verifier} if verifier else {}
    ctx = make_ctx(eng, MathAnswers(), budget=budget, verifiers=vs)
    out = await entry.target(ctx.problem, ctx, entry.make_params(params))
    return out, ctx, eng


async def test_self_consistency_majority_over_equivalent_answers():
    out, ctx, _ = await run("self_consistency", {"n": 6})
    # 5, 5 and 10/2 are one class (3 votes) against 7 (2 votes); "no answer" does not vote
    assert out.answer == "5" and out.chosen.text == "b \\boxed{5}"
    assert out.extra["votes"] == {"7": 2.0, "5": 3.0}
    assert ctx.meter.snapshot().generations == 6


async def test_self_consistency_tie_goes_to_first_seen():
    out, _, _ = await run("self_consistency", {"n": 4})  # 7,5,5,7 -> tie, 7 first
    assert out.answer == "7"


async def test_self_consistency_respects_budget():
    out, ctx, eng = await run("self_consistency", {"n": 6}, budget=Budget(max_generations=3))
    assert len(out.candidates) == 3 and eng.calls[0].n == 3 and out.answer == "5"
    assert ctx.meter.snapshot().generations == 3


async def test_best_of_n_picks_highest_score():
    v = LengthVerifier({"a": 0.2, "b": 0.3, "c": 0.1, "d": 0.95, "e": 0.5, "f": 0.99})
    out, _, _ = await run("best_of_n", {"n": 5, "verifier": "table"}, v)
    assert out.answer == "7" and out.chosen.text == "d \\boxed{7}" and out.chosen.score == 0.95


async def test_weighted_best_of_n_sums_scores_per_answer():
    v = LengthVerifier({"a": 0.2, "b": 0.3, "c": 0.1, "d": 0.35, "e": 0.5, "f": 0.99})
    out, _, _ = await run("weighted_best_of_n", {"n": 6, "verifier": "table"}, v)
    # 5-class: 0.3+0.1+0.5 = 0.9 > 7-class 0.55; chosen = best member of the 5-class
    assert out.answer == "\\frac{10}{2}" and out.chosen.text.startswith("e")
    assert out.extra["weights"] == {"7": 0.55, "5": 0.9}


async def test_weighted_best_of_n_with_step_scores_min():
    v = LengthVerifier({"a": 0.95, "b": 0.3, "c": 0.1, "d": 0.97, "e": 0.2, "f": 0.99})
    out, _, _ = await run("weighted_best_of_n", {"n": 6, "verifier": "table", "aggregate": "min"}, v)
    # min(0.9, s): 7-class 0.9+0.9 = 1.8 > 5-class 0.3+0.1+0.2 = 0.6
    assert out.answer == "7" and out.chosen.step_scores == (0.9, 0.95)


async def test_best_of_n_without_verifier_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown verifier 'table'"):
        await run("best_of_n", {"n": 2, "verifier": "table"})


def test_aggregate_steps():
    assert aggregate_steps([0.5, 0.8, 0.4], "last") == 0.4
    assert aggregate_steps([0.5, 0.8, 0.4], "min") == 0.4
    assert aggregate_steps([0.5, 0.8], "prod") == pytest.approx(0.4)
    assert aggregate_steps([], "last") == 0.0


def test_every_strategy_lists_parameters():
    names = load_strategies().names()
    assert {"self_consistency", "best_of_n", "weighted_best_of_n"} <= set(names)
    for e in load_strategies().entries():
        assert e.summary and all(f["help"] for f in e.describe())
