"""TURN temperature: the turning point of log-entropy, tempered top-k entropy, one estimate per run."""

import asyncio
import math

import pytest

from ttscale.core.errors import ConfigError
from ttscale.core.types import Completion, Problem, TokenLogprob
from ttscale.engines.scripted import ScriptedEngine
from ttscale.strategies.turn import (
    DEFAULT_GRID,
    choose_temperature,
    resolve_temperature,
    tempered_entropy,
    turning_point,
)
from ttscale.verifiers.math_answers import MathAnswers

from helpers import make_ctx


def test_turning_point_is_where_log_entropy_turns_from_concave_to_convex():
    grid = [round(0.1 * i, 2) for i in range(1, 16)]
    # log H = (t - 0.75)^3: second derivative 6 (t - 0.75) is negative below 0.75, positive above
    entropy = [math.exp((t - 0.75) ** 3) for t in grid]
    assert turning_point(grid, entropy) == 0.8
    assert choose_temperature(grid, entropy, offset=0.1) == 0.9
    assert choose_temperature(grid, entropy, offset=5.0) == 1.5  # clipped to the grid
    # convex everywhere (log H = e^(3t)): no concave part, so the sharpest upturn, the last interior point
    convex = [math.exp(math.exp(3 * t)) for t in grid]
    assert turning_point(grid, convex) == 1.4
    with pytest.raises(ConfigError):
        turning_point([0.5, 1.0], [1.0, 2.0])


def test_tempered_entropy_of_a_two_token_distribution():
    pos = TokenLogprob("a", math.log(0.9), top=(("a", math.log(0.9)), ("b", math.log(0.1))))
    h1 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert tempered_entropy(pos, 1.0) == pytest.approx(h1)
    # t = 2 flattens the distribution: q ∝ p^(1/2)
    qa, qb = math.sqrt(0.9), math.sqrt(0.1)
    qa, qb = qa / (qa + qb), qb / (qa + qb)
    assert tempered_entropy(pos, 2.0) == pytest.approx(-(qa * math.log(qa) + qb * math.log(qb)))
    assert tempered_entropy(pos, 0.5) < h1 < tempered_entropy(pos, 2.0)
    assert tempered_entropy(TokenLogprob("a", -0.1, top=(("a", -0.1),)), 1.0) == 0.0


class TwoTokenEngine(ScriptedEngine):
    """Every generated word has top-2 logprobs (0.9, 0.1)."""

    async def generate(self, req):
        outs = await super().generate(req)
        pos = TokenLogprob("w", math.log(0.9), top=(("w", math.log(0.9)), ("v", math.log(0.1))))
        return [Completion(text=c.text, finish_reason=c.finish_reason, completion_tokens=c.completion_tokens,
                           prompt_tokens=c.prompt_tokens, logprobs=(pos,) * c.completion_tokens) for c in outs]


async def test_one_estimate_per_engine_and_model_charged_to_the_first_problem():
    eng = TwoTokenEngine(lambda req, k: "one two three")
    ctx1 = make_ctx(eng, MathAnswers(), problem=Problem(id="a", prompt="q1"))
    ctx2 = make_ctx(eng, MathAnswers(), problem=Problem(id="b", prompt="q2"))
    t1, t2 = await asyncio.gather(resolve_temperature(ctx1, "turn"), resolve_temperature(ctx2, "turn"))
    (ex1,) = [e for e in ctx1.trace if e["event"] == "turn"]
    (ex2,) = [e for e in ctx2.trace if e["event"] == "turn"]
    expected = [tempered_entropy(TokenLogprob("w", 0.0, top=(("w", math.log(0.9)), ("v", math.log(0.1)))), t)
                for t in DEFAULT_GRID]
    assert t1 == t2 == choose_temperature(DEFAULT_GRID, expected)
    assert ex1["entropy"] == pytest.approx(expected, abs=1e-6)
    assert [ex1["measured_on_this_problem"], ex2["measured_on_this_problem"]] == [True, False]
    probes = [c for c in eng.calls]
    assert sorted(c.temperature for c in probes) == sorted(DEFAULT_GRID)
    assert all(c.logprobs == 20 and c.n == 2 for c in probes)
    assert ctx1.meter.snapshot().generated_tokens == 3 * 2 * len(DEFAULT_GRID)
    assert ctx2.meter.snapshot().generated_tokens == 0
    assert await resolve_temperature(ctx2, 0.3) == 0.3


async def test_turn_without_logprobs_is_a_clear_error():
    class NoLogprobs(ScriptedEngine):
        async def generate(self, req):
            return [Completion(text=c.text, finish_reason=c.finish_reason, completion_tokens=c.completion_tokens,
                               prompt_tokens=c.prompt_tokens) for c in await super().generate(req)]

    ctx = make_ctx(NoLogprobs(lambda req, k: "x y"), MathAnswers())
    with pytest.raises(ConfigError, match="logprobs"):
        await resolve_temperature(ctx, "turn")


async def test_sampling_strategies_accept_temperature_turn_and_sample_at_the_estimate():
    from ttscale.strategies.base import load_strategies

    reg = load_strategies()
    for name in ("self_consistency", "best_of_n", "weighted_best_of_n", "adaptive_consistency",
                 "adaptive_margin", "best_of_infinity"):
        assert reg.get(name).make_params({"temperature": "turn"}).temperature == "turn"
        assert reg.get(name).make_params({"temperature": "0.4"}).temperature == 0.4
    with pytest.raises(ConfigError):
        reg.get("self_consistency").make_params({"temperature": "hot"})
    eng = TwoTokenEngine(lambda req, k: "so \\boxed{5}")
    ctx = make_ctx(eng, MathAnswers())
    entry = reg.get("self_consistency")
    out = await entry.target(ctx.problem, ctx, entry.make_params({"n": 3, "temperature": "turn"}))
    (turn,) = [e for e in ctx.trace if e["event"] == "turn"]
    final = [c for c in eng.calls if c.logprobs is None]
    assert [c.temperature for c in final] == [turn["temperature"]] and final[0].n == 3
    assert out.answer == "5"
