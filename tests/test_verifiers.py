import json
import math
from dataclasses import replace

import numpy as np
import pytest

from ttscale.core.budget import CostMeter
from ttscale.core.confidence import score_confidences, token_confidences, trace_confidence, window_means
from ttscale.core.context import Context
from ttscale.core.errors import ConfigError
from ttscale.core.types import Candidate, Problem, TokenLogprob
from ttscale.core.yes_no import parse_yes_no, yes_probability
from ttscale.engines.scripted import ScriptedEngine, ScriptedReply
from ttscale.verifiers import load_verifiers, make_verifier
from ttscale.verifiers.answer_check import AnswerCheck
from ttscale.verifiers.confidence import ConfidenceVerifier
from ttscale.verifiers.llm_judge import LLMJudge
from ttscale.verifiers.math_answers import MathAnswers


def make_context(engine, answer="5"):
    return Context(problem=Problem(id="p", prompt="What is 2+3?", answer=answer), engine=engine,
                   answers=MathAnswers(), meter=CostMeter())


def words(req):
    return sum(len(m["content"].split()) for m in req.messages)


class JudgeEngine(ScriptedEngine):
    """A scripted engine whose first-token logprobs carry a chosen top-k list.

    ``top_for(request)`` gives the top list for a request asking for logprobs (None = leave the
    scripted engine's own one-entry list); ``text`` is the reply text."""

    def __init__(self, top_for, text="Yes"):
        super().__init__(lambda req, k: text)
        self.top_for = top_for

    async def generate(self, req):
        out = await super().generate(req)
        top = self.top_for(req) if req.logprobs else None
        if top is None:
            return out
        return [replace(c, logprobs=(TokenLogprob(top[0][0], top[0][1], top=tuple(top)), *(c.logprobs or ())[1:]))
                for c in out]


def cands(*texts):
    return [Candidate(text=t, id=i, steps=tuple(s for s in t.split("\n\n") if s)) for i, t in enumerate(texts)]


# ----------------------------------------------------------------------------------------------------
# registry


def test_registered_verifiers():
    assert {"answer_check", "llm_judge", "confidence"} <= set(load_verifiers().names())
    eng = ScriptedEngine({})
    assert isinstance(make_verifier("answer_check", eng), AnswerCheck)
    judge = make_verifier("llm_judge", eng, {"max_tokens": "32"})
    assert isinstance(judge, LLMJudge) and judge.engine is eng and judge.params.max_tokens == 32
    assert isinstance(make_verifier("confidence", eng, {"mode": "tail", "tail": "8"}), ConfidenceVerifier)
    with pytest.raises(ConfigError, match="mode='median' is not one of"):
        make_verifier("confidence", eng, {"mode": "median"})
    with pytest.raises(ConfigError, match="window must be >= 1"):
        make_verifier("confidence", eng, {"window": 0})
    with pytest.raises(ConfigError, match="prompt template may use only"):
        make_verifier("llm_judge", eng, {"prompt": "{question}"})


# ----------------------------------------------------------------------------------------------------
# answer_check


async def test_answer_check_scores_against_reference():
    eng = ScriptedEngine({})
    ctx = make_context(eng)
    cs = [Candidate(text="", answer=a, id=i) for i, a in enumerate(["5", "\\frac{10}{2}", "4", None, "5.0"])]
    assert await AnswerCheck().score(ctx.problem, cs, ctx) == [1.0, 1.0, 0.0, 0.0, 1.0]
    scored = await Context(problem=ctx.problem, engine=eng, answers=MathAnswers(), meter=CostMeter(),
                           verifiers={"answer_check": AnswerCheck()}).score(cs)
    assert [c.score for c in scored] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert ctx.meter.verifier_calls == 0 and eng.calls == []


async def test_answer_check_with_a_plain_answer_space():
    class Strings:
        def extract(self, text):
            return text

        async def group(self, answers):
            seen = {}
            return [None if a is None else seen.setdefault(a, len(seen)) for a in answers]

    eng = ScriptedEngine({})
    ctx = Context(problem=Problem(id="p", prompt="q", answer="b"), engine=eng, answers=Strings(), meter=CostMeter())
    cs = [Candidate(text="", answer=a) for a in ["a", "b", None]]
    assert await AnswerCheck().score(ctx.problem, cs, ctx) == [0.0, 1.0, 0.0]


async def test_answer_check_needs_a_reference():
    ctx = make_context(ScriptedEngine({}), answer=None)
    with pytest.raises(ConfigError, match=r"needs a reference answer.*problem 'p'"):
        await AnswerCheck().score(ctx.problem, [Candidate(text="x", answer="5")], ctx)


# ----------------------------------------------------------------------------------------------------
# llm_judge


def test_yes_probability_arithmetic():
    t = TokenLogprob("Yes", -0.1, top=(("Yes", -0.1), ("No", -2.3)))
    assert yes_probability(t) == pytest.approx(math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.3)))
    variants = TokenLogprob("Maybe", -0.1, top=(("Maybe", -0.1), ("Yes", -0.5), (" yes", -1.0), ("NO", -2.0),
                                                 ("\u0120no", -3.0), ("Yesterday", -0.2)))
    py, pn = math.exp(-0.5) + math.exp(-1.0), math.exp(-2.0) + math.exp(-3.0)
    assert yes_probability(variants) == pytest.approx(py / (py + pn))
    assert yes_probability(TokenLogprob("<think>", -0.01, top=(("<think>", -0.01),))) is None
    # the sampled token counts even when the top list leaves it out
    assert yes_probability(TokenLogprob("No", -0.2, top=(("Yes", -0.2),))) == pytest.approx(0.5)


@pytest.mark.parametrize("text, score", [
    ("Yes", 1.0), (" no.", 0.0), ("**Yes**, it is.", 1.0), ("The solution is incorrect.", 0.0),
    ("<think>is it? yes</think>No", 0.0), ("<think>hmm, yes", 0.5), ("Perhaps.", 0.5), ("", 0.5),
])
def test_parse_yes_no(text, score):
    assert parse_yes_no(text) == score


async def test_llm_judge_scores_from_first_token_logprobs():
    eng = JudgeEngine(lambda req: (("Yes", -0.1), ("No", -2.3)) if "good" in req.messages[0]["content"]
                      else (("No", -0.1), ("Yes", -2.3)))
    ctx = make_context(eng)
    judge = make_verifier("llm_judge", eng)
    scores = await judge.score(ctx.problem, cands("a good solution", "a bad one"), ctx)
    p = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.3))
    assert scores == pytest.approx([p, 1 - p])
    assert len(eng.calls) == 2
    for req in eng.calls:
        assert (req.max_tokens, req.temperature, req.logprobs, req.n) == (1, 0.0, 20, 1)
        content = req.messages[0]["content"]
        assert req.messages[0]["role"] == "user" and "What is 2+3?" in content
        assert content.endswith("Is this solution correct? Answer Yes or No.")
    assert "a good solution" in eng.calls[0].messages[0]["content"] or "a good solution" in eng.calls[1].messages[0]["content"]
    # verifier tokens are charged to the verifier counters, the policy's stay at zero
    m = ctx.meter
    assert m.verifier_calls == 2 and m.verifier_generated_tokens == 2
    assert m.verifier_prompt_tokens == sum(words(r) for r in eng.calls)
    cost = m.snapshot()
    assert cost.generated_tokens == 0 and cost.prompt_tokens == 0 and cost.generations == 0


async def test_llm_judge_falls_back_to_text_when_logprobs_have_no_verdict():
    eng = JudgeEngine(lambda req: (("<think>", -0.01), ("Okay", -5.0)), text="No, step 2 is wrong.")
    ctx = make_context(eng)
    judge = LLMJudge(params=make_verifier("llm_judge", eng, {"max_tokens": 64}).params)
    assert await judge.score(ctx.problem, cands("x"), ctx) == [0.0]
    assert [(r.max_tokens, r.logprobs) for r in eng.calls] == [(1, 20), (64, None)]
    assert eng.calls[1].temperature == 0.0
    # both requests are charged: 1 token, then the 5 words of the reply
    assert ctx.meter.verifier_calls == 2 and ctx.meter.verifier_generated_tokens == 1 + 5


async def test_llm_judge_without_logprobs_support_parses_text():
    eng = ScriptedEngine(lambda req, k: ["Yes.", "Not sure."][k % 2])
    eng.supports_logprobs = False
    ctx = make_context(eng)
    scores = await LLMJudge(eng).score(ctx.problem, cands("s1"), ctx)
    assert scores == [1.0]
    scores = await LLMJudge(eng).score(ctx.problem, cands("s2"), ctx)
    assert scores == [0.5]
    assert all(r.logprobs is None and r.max_tokens == 16 for r in eng.calls)


async def test_llm_judge_plain_scripted_engine_reads_the_sampled_token():
    # the scripted engine's top list holds only the sampled word: P(yes) is then 1 or 0
    eng = ScriptedEngine(lambda req, k: ScriptedReply("No, wrong", logprobs=[-0.7]))
    ctx = make_context(eng)
    assert await LLMJudge().score(ctx.problem, cands("x"), ctx) == [0.0]
    assert len(eng.calls) == 1


async def test_llm_judge_score_steps_asks_per_prefix():
    # P(yes) = 0.9 while fewer than 3 steps are shown, 0.2 once the third step is
    def top(req):
        c = req.messages[0]["content"]
        n = c.count("Step ")  # "Step 1: ...", "Step 2: ...", ...
        return (("Yes", math.log(0.9 if n < 3 else 0.2)), ("No", math.log(0.1 if n < 3 else 0.8)))

    eng = JudgeEngine(top)
    ctx = make_context(eng)
    cs = cands("first step\n\nsecond step\n\nthird step", "only step")
    out = await LLMJudge().score_steps(ctx.problem, cs, ctx)
    assert [len(s) for s in out] == [3, 1]
    assert out[0] == pytest.approx([0.9, 0.9, 0.2]) and out[1] == pytest.approx([0.9])
    assert len(eng.calls) == 4 and ctx.meter.verifier_calls == 4
    prompts = sorted(r.messages[0]["content"] for r in eng.calls)
    assert all(p.endswith("Is the last step correct? Answer Yes or No.") for p in prompts)
    last = next(p for p in prompts if "Step 3: third step" in p)
    assert "Step 1: first step" in last and "Step 2: second step" in last
    # through the context: step scores are attached
    ctx2 = make_context(JudgeEngine(top))
    ctx2.verifiers["llm_judge"] = LLMJudge()
    scored = await ctx2.score_steps(cs)
    assert scored[0].step_scores == pytest.approx((0.9, 0.9, 0.2))
    # last steps only: one query per candidate, every step shown
    eng3 = JudgeEngine(top)
    ctx3 = make_context(eng3)
    assert await LLMJudge().score_last_steps(ctx3.problem, cs, ctx3) == pytest.approx([0.2, 0.9])
    assert len(eng3.calls) == 2 and ctx3.meter.verifier_calls == 2
    assert "Step 1: first step" in eng3.calls[0].messages[0]["content"]


async def test_llm_judge_custom_prompt_and_own_engine(tmp_path):
    script = tmp_path / "judge.json"
    script.write_text(json.dumps({"p": ["Yes"]}))
    policy = ScriptedEngine({})
    judge = make_verifier("llm_judge", policy, {"engine": f"scripted:{script}",
                                                "prompt": "Q: {problem}\nA: {solution}\nRight?"})
    assert judge.engine is not policy
    ctx = make_context(policy)
    assert await judge.score(ctx.problem, cands("five"), ctx) == [1.0]
    assert policy.calls == [] and judge.engine.calls[0].messages[0]["content"] == "Q: What is 2+3?\nA: five\nRight?"
    await judge.aclose()
    with pytest.raises(ConfigError, match="unknown engine 'nope'"):
        make_verifier("llm_judge", policy, {"engine": "nope:m"})


# ----------------------------------------------------------------------------------------------------
# confidence


def lp(*vals):
    """Tokens whose top-k lists are exactly ``vals`` (the first is the sampled token)."""
    return TokenLogprob("t", vals[0], top=tuple((f"t{j}", v) for j, v in enumerate(vals)))


def test_token_confidences():
    toks = [lp(-0.1, -2.0, -3.0), lp(-1.0), TokenLogprob("x", -0.5)]
    assert token_confidences(toks).tolist() == pytest.approx([5.1 / 3, 1.0, 0.5])
    assert token_confidences(toks, top_k=2).tolist() == pytest.approx([1.05, 1.0, 0.5])
    assert token_confidences([lp(-float("inf"), 0.0)]).tolist() == pytest.approx([9999.0 / 2])
    assert token_confidences([]).shape == (0,)


def test_window_means():
    assert window_means([1, 2, 3, 4, 5], 2).tolist() == pytest.approx([1.5, 2.5, 3.5, 4.5])
    assert window_means([1, 2, 3, 4, 5], 5).tolist() == pytest.approx([3.0])
    assert window_means([1, 2, 3, 4, 5], 2048).tolist() == pytest.approx([3.0])  # short trace: one window
    assert window_means([], 4).shape == (0,)
    rng = np.random.default_rng(0)
    x = rng.random(500)
    ref = [x[i:i + 37].mean() for i in range(500 - 37 + 1)]
    assert window_means(x, 37) == pytest.approx(ref)


def test_trace_scores():
    c = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert score_confidences(c, "mean") == pytest.approx(3.0)
    assert score_confidences(c, "tail", tail=2) == pytest.approx(4.5)
    assert score_confidences(c, "tail", tail=100) == pytest.approx(3.0)
    assert score_confidences(c, "lowest_window", window=2) == pytest.approx(1.5)
    assert score_confidences(c, "bottom10", window=2) == pytest.approx(1.5)  # 4 windows -> lowest 1
    # 20 windows of 1 token: the lowest 10% = the two lowest
    assert score_confidences([float(v) for v in range(20, 0, -1)], "bottom10", window=1) == pytest.approx(1.5)
    assert score_confidences([], "mean") == 0.0
    with pytest.raises(ConfigError, match="not one of"):
        score_confidences(c, "median")
    toks = [lp(-v) for v in c]
    assert trace_confidence(toks, "lowest_window", window=3) == pytest.approx(2.0)
    assert trace_confidence(toks, "mean") == pytest.approx(3.0)


async def test_confidence_verifier_on_sampled_candidates():
    eng = ScriptedEngine(lambda req, k: [ScriptedReply("a b c \\boxed{5}", logprobs=[-0.5, -1.0, -1.5, -2.0]),
                                         ScriptedReply("d \\boxed{4}", logprobs=[-0.1, -0.3])][k % 2])
    ctx = make_context(eng)
    cs = await ctx.sample(2, logprobs=20)
    v = make_verifier("confidence", eng, {"mode": "mean"})
    assert await v.score(ctx.problem, cs, ctx) == pytest.approx([1.25, 0.2])
    v = make_verifier("confidence", eng, {"mode": "lowest_window", "window": 2})
    assert await v.score(ctx.problem, cs, ctx) == pytest.approx([0.75, 0.2])
    v = make_verifier("confidence", eng, {"mode": "tail", "tail": 1})
    assert await v.score(ctx.problem, cs, ctx) == pytest.approx([2.0, 0.3])
    assert ctx.meter.verifier_calls == 0


async def test_confidence_needs_logprobs():
    ctx = make_context(ScriptedEngine({}))
    with pytest.raises(ConfigError, match=r"sample with logprobs, e\.g\. --param logprobs=20"):
        await ConfidenceVerifier().score(ctx.problem, [Candidate(text="x")], ctx)
