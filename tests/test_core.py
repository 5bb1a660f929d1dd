from dataclasses import dataclass
from typing import Literal

import pytest

from ttscale.core.budget import Budget, CostMeter
from ttscale.core.errors import BudgetExhausted, ConfigError
from ttscale.core.registry import Registry, param
from ttscale.core.types import Candidate, Completion, Cost, GenerationRequest, Problem, Result
from ttscale.engines.scripted import ScriptedEngine
from ttscale.verifiers.math_answers import MathAnswers

from helpers import make_ctx


def test_problem_needs_text_and_renders_chat():
    with pytest.raises(ValueError, match="neither messages nor a prompt"):
        Problem(id="x")
    p = Problem(id="x", prompt="Q?")
    assert p.chat("SYS") == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Q?"}]
    assert p.question == "Q?"


def test_result_roundtrip():
    c = Candidate(text="t", answer="5", id=3, score=0.5, step_scores=(0.1, 0.5), correct=True)
    r = Result("p", "5", c, (c,), Cost(generated_tokens=7), "s", {"n": 1}, 0, correct=True)
    back = Result.from_dict(r.to_dict())
    assert back.chosen == c.with_(extra={}) and back.cost.generated_tokens == 7 and back.correct


def test_budget_clips_generations_and_tokens():
    m = CostMeter(Budget(max_generations=5, max_generated_tokens=100))
    assert m.clip(8, 50) == (5, 20)  # 5 samples share the 100 tokens
    m.charge_policy([Completion("a", completion_tokens=30)] * 3)
    assert m.remaining_generations() == 2 and m.remaining_tokens() == 10
    assert m.clip(4, 50) == (2, 5)
    m.charge_policy([Completion("a", completion_tokens=5)] * 2)
    with pytest.raises(BudgetExhausted):
        m.clip(1, 10)
    assert m.stopped_by_budget


def test_budget_rejects_nonpositive_caps():
    with pytest.raises(ValueError, match="max_generations"):
        Budget(max_generations=0)


def test_flops_from_params_count():
    m = CostMeter(params_count=1e9)
    m.charge_policy([Completion("a", completion_tokens=10, prompt_tokens=5)])
    m.charge_verifier(3, 2)
    assert m.snapshot().flops == 2 * 1e9 * 20


@dataclass(frozen=True)
class _P:
    n: int = param(4, "samples")
    t: float = param(0.5, "temp")
    mode: Literal["a", "b"] = param("a", "mode")
    flag: bool = param(False, "flag")
    cap: int | None = param(None, "cap")


def test_registry_converts_and_rejects():
    reg: Registry[object] = Registry("strategy")
    reg.register("x", _P, "demo")(object())
    e = reg.get("x")
    p = e.make_params({"n": "8", "t": "0.9", "mode": "b", "flag": "true", "cap": "none"})
    assert p == _P(8, 0.9, "b", True, None)
    with pytest.raises(ConfigError, match="has no parameter bogus; known: cap, flag, mode, n, t"):
        e.make_params({"bogus": 1})
    with pytest.raises(ConfigError, match="n='eight' is not a valid int"):
        e.make_params({"n": "eight"})
    with pytest.raises(ConfigError, match="mode='c' is not one of a, b"):
        e.make_params({"mode": "c"})
    with pytest.raises(ConfigError, match="unknown strategy 'y'; available: x"):
        reg.get("y")
    assert [d["name"] for d in e.describe()] == ["n", "t", "mode", "flag", "cap"]


async def test_context_charges_policy_and_clips_to_budget():
    eng = ScriptedEngine({"p1": ["one two three \\boxed{5}"]})
    ctx = make_ctx(eng, MathAnswers(), budget=Budget(max_generations=3))
    cands = await ctx.sample(5, max_tokens=10)
    assert len(cands) == 3 and all(c.answer == "5" for c in cands)
    assert eng.calls[0].n == 3 and eng.calls[0].problem_id == "p1" and eng.calls[0].seed is not None
    cost = ctx.meter.snapshot()
    assert cost.generations == 3 and cost.generated_tokens == 12 and cost.engine_calls == 1
    with pytest.raises(BudgetExhausted):
        await ctx.sample(1)


async def test_context_seeds_are_reproducible_per_problem_and_seed():
    seeds = []
    for _ in range(2):
        eng = ScriptedEngine({"p1": ["x"]})
        ctx = make_ctx(eng, MathAnswers(), seed=7)
        await ctx.generate(GenerationRequest(messages=ctx.messages()))
        seeds.append(eng.calls[0].seed)
    assert seeds[0] == seeds[1]
