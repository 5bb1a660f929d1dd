"""DeepConf and DeepPrune on the scripted engine: exact filtering, thresholds, cuts and pruning.

The scripted engine's tokens are words and its ``TokenLogprob.top`` holds only the token itself, so
a word's confidence is C = −logprob: a word scripted with logprob −2 has confidence 2 (the formula
with k = 1; "confident" here simply means a larger C).
"""

from __future__ import annotations

import math

import pytest

from ttscale.core.errors import ConfigError
from ttscale.core.types import TokenLogprob
from ttscale.engines.scripted import ScriptedEngine, ScriptedReply
from ttscale.strategies.base import load_strategies
from ttscale.strategies.deepconf import WindowMonitor, confidence, token_confidence
from ttscale.strategies.deepprune import DeepPruneParams, run_deepprune
from ttscale.strategies.judges import (
    AnswerSoFarJudge,
    EmbeddingJudge,
    LLMEquivalenceJudge,
    NgramJudge,
    jaccard,
    ngrams,
    p_yes,
)
from ttscale.verifiers.math_answers import MathAnswers

from helpers import make_ctx


def reply(conf: list[float], answer: str) -> ScriptedReply:
    """A trace of len(conf) words whose token confidences are ``conf``."""
    words = [f"w{i}" for i in range(len(conf) - 1)] + [f"\\boxed{{{answer}}}"]
    return ScriptedReply(" ".join(words), logprobs=[-c for c in conf], answer=answer)


async def run(name, params, script):
    eng = ScriptedEngine(script)
    entry = load_strategies().get(name)
    ctx = make_ctx(eng, MathAnswers(symbolic=False))
    out = await entry.target(ctx.problem, ctx, entry.make_params(params))
    return out, ctx, eng


def toks(conf):
    return [TokenLogprob(f"t{i}", -c, top=((f"t{i}", -c),)) for i, c in enumerate(conf)]


# --- confidence helpers ---------------------------------------------------------------------------


def test_token_confidence_is_minus_mean_of_top_k():
    t = TokenLogprob("a", -0.1, top=(("a", -0.1), ("b", -2.0), ("c", -3.9)))
    assert token_confidence(t, 3) == pytest.approx(2.0)
    assert token_confidence(t, 1) == pytest.approx(0.1)
    assert token_confidence(TokenLogprob("a", -0.7), 20) == pytest.approx(0.7)  # no alternatives


def test_trace_measures():
    c = [1, 1, 1, 4, 4, 4, 1, 1, 1, 1]
    lp = toks(c)
    assert confidence(lp, "mean", window=3) == pytest.approx(1.9)
    assert confidence(lp, "lowest_window", window=3) == pytest.approx(1.0)
    assert confidence(lp, "tail", tail=4) == pytest.approx(1.0)
    assert confidence(lp, "lowest_window", window=64) == pytest.approx(1.9)  # short trace: one window
    assert confidence(None, "mean") is None


def test_window_monitor_fires_on_first_full_window_below_threshold_incrementally():
    c = [2, 2, 2, 2, 0.5, 0.5, 0.5, 2, 2]
    lp = toks(c)
    m = WindowMonitor(threshold=1.75, window=3, top_k=20)
    assert m(lp[:2]) is False  # no full window yet
    assert m(lp[:3]) is False and m.lowest == pytest.approx(2.0)
    assert m(lp[:4]) is False
    assert m(lp[:6]) is True  # fed two tokens at once: the window ending at token 5 is (2+2+.5)/3
    assert m.stopped_at == 5
    # a window below the threshold that is not full does not fire
    m2 = WindowMonitor(threshold=1.75, window=3)
    assert m2(toks([0.1, 0.1])) is False


# --- DeepConf offline -----------------------------------------------------------------------------


async def test_deepconf_offline_keeps_top_eta_and_weights_by_confidence():
    replies = [reply([2.0] * 4, "7"), reply([0.5] * 4, "5"), reply([0.6] * 4, "5"),
               reply([1.5] * 4, "5"), reply([1.2] * 4, "7")]
    out, _, eng = await run("deepconf", {"mode": "offline", "n": 5, "eta": 60, "measure": "mean"},
                              lambda req, k: replies[k])
    # plain majority would say 5 (3 votes to 2); the top 60% = 3 traces by confidence are 0, 3, 4
    assert out.extra["kept_ids"] == [0, 3, 4]
    assert out.extra["votes"] == {"7": pytest.approx(3.2), "5": pytest.approx(1.5)}
    assert out.answer == "7" and out.chosen.id == 0
    assert eng.calls[0].logprobs == 20 and eng.calls[0].n == 5
    assert [c.score for c in out.candidates] == pytest.approx([2.0, 0.5, 0.6, 1.5, 1.2])


async def test_deepconf_offline_eta_90_keeps_all_but_the_least_confident():
    replies = [reply([2.0] * 4, "7"), reply([0.5] * 4, "5"), reply([0.6] * 4, "5"),
               reply([1.5] * 4, "5"), reply([1.2] * 4, "7"),
               reply([0.9] * 4, "5"), reply([0.8] * 4, "5"), reply([1.0] * 4, "7"),
               reply([1.1] * 4, "7"), reply([0.7] * 4, "5")]
    out, _, _ = await run("deepconf", {"mode": "offline", "n": 10, "eta": 90, "measure": "mean"},
                          lambda req, k: replies[k])
    assert out.extra["kept_ids"] == [0, 2, 3, 4, 5, 6, 7, 8, 9]  # trace 1 (0.5) dropped
    # 7: 2.0+1.2+1.0+1.1 = 5.3; 5: 0.6+1.5+0.9+0.8+0.7 = 4.5
    assert out.answer == "7" and out.extra["votes"]["7"] == pytest.approx(5.3)


# --- DeepConf online ------------------------------------------------------------------------------

# warm-up lowest-window confidences 2, 1, 3, 1.5 -> 50th percentile = 1.75
WARM = [reply([2.0] * 5, "7"), reply([1.0] * 5, "5"), reply([3.0] * 5, "7"), reply([1.5] * 5, "5")]
CUT = reply([2, 2, 2, 2, 0.5, 0.5, 0.5, 2, 2, 2], "5")  # first full window below 1.75 ends at token 5
KEEP = reply([2.0] * 8, "5")
ONLINE = [*WARM, CUT, KEEP]
PARAMS = {"mode": "online", "n": 6, "warmup": 4, "eta": 50, "window": 3, "batch": 2, "consensus": None}


async def test_deepconf_online_threshold_and_real_early_stop():
    out, ctx, eng = await run("deepconf", PARAMS, lambda req, k: ONLINE[k])
    assert out.extra["threshold"] == pytest.approx(1.75)
    cut = out.candidates[4]
    assert cut.finish_reason == "cancelled" and cut.completion_tokens == 5 and cut.extra["stopped_early"]
    assert out.candidates[5].completion_tokens == 8 and out.candidates[5].finish_reason == "stop"
    assert out.extra["stopped_early"] == 1
    # every token generated is charged, and no more: 4 x 5 warm-up + 5 (cut) + 8
    assert ctx.meter.snapshot().generated_tokens == 33
    # voters: warm-up traces 0 (2.0) and 2 (3.0) and trace 5 (2.0); traces 1, 3 are below s, 4 was cut
    assert out.extra["voters"] == 3 and out.extra["pool"] == 5
    assert out.extra["votes"] == {"7": pytest.approx(5.0), "5": pytest.approx(2.0)}
    assert out.answer == "7"  # plain majority over all six would say 5
    # post-warm-up traces are single-sample requests, each with its own monitor
    assert [c.n for c in eng.calls] == [4, 1, 1] and eng.calls[1].monitor is not eng.calls[2].monitor


async def test_deepconf_online_without_early_stop_generates_everything_same_vote():
    early, ctx_e, _ = await run("deepconf", PARAMS, lambda req, k: ONLINE[k])
    full, ctx_f, eng = await run("deepconf", {**PARAMS, "early_stop": False}, lambda req, k: ONLINE[k])
    assert all(c.monitor is None for c in eng.calls)
    assert ctx_f.meter.snapshot().generated_tokens == 20 + 10 + 8
    assert full.candidates[4].completion_tokens == 10 and full.extra["stopped_early"] == 0
    assert full.answer == early.answer and full.extra["votes"] == early.extra["votes"]
    assert full.extra["pool"] == early.extra["pool"] == 5  # the uncut trace 4 is rejected all the same
    assert ctx_e.meter.snapshot().generated_tokens < ctx_f.meter.snapshot().generated_tokens


async def test_deepconf_online_consensus_stop_after_warmup():
    same = [reply([2.0] * 5, "7")] * 8
    out, ctx, _ = await run("deepconf", {**PARAMS, "n": 8, "consensus": 0.95}, lambda req, k: same[k])
    assert out.extra["stop_reason"] == "consensus" and ctx.meter.snapshot().generations == 4
    assert out.answer == "7"


async def test_deepconf_online_consensus_is_measured_on_the_pool_not_the_filtered_voters():
    # eta=10: s = 90th percentile of (2, 1, 3, 1.5) = 2.7, so only warm-up trace 2 would vote (share 1),
    # but the pool (all four warm-up traces) splits 7: 5.0 / 5: 2.5 -> share 2/3 < 0.95: go on
    out, ctx, _ = await run("deepconf", {**PARAMS, "eta": 10, "consensus": 0.95}, lambda req, k: ONLINE[k])
    assert out.extra["threshold"] == pytest.approx(2.7)
    assert ctx.meter.snapshot().generations == 6 and out.extra["stop_reason"] == "n"
    assert out.extra["voters"] == 1 and out.answer == "7"


async def test_deepconf_online_consensus_off_runs_to_n():
    same = [reply([2.0] * 5, "7")] * 8
    out, ctx, _ = await run("deepconf", {**PARAMS, "n": 8}, lambda req, k: same[k])
    assert out.extra["stop_reason"] == "n" and ctx.meter.snapshot().generations == 8


# --- DeepPrune ------------------------------------------------------------------------------------

PREFIXES = [
    "so x is 12 then more words \\boxed{12}",   # answer so far 12
    "thus we get 12 and later \\boxed{12}",      # 12 -> joins cluster 0
    "first compute 7 then \\boxed{7}",           # 7 -> new cluster
    "so x is 12 and \\boxed{5}",                 # 12 -> joins cluster 0
    "we need to think about it",                 # no answer so far -> new cluster
]
CONTINUATIONS = {"so x is 12": ("more words \\boxed{12}", "12"),
                 "thus we get 12": ("and later \\boxed{12}", "12"),
                 "first compute 7 then": ("\\boxed{7}", "7"),
                 "we need to think": ("about it \\boxed{7}", "7")}


def prune_script(req, k):
    if req.prefix:
        text, ans = CONTINUATIONS[req.prefix]
        return ScriptedReply(text, answer=ans)
    return PREFIXES[k]


async def prune(params, judge=None, script=prune_script, engine_cls=ScriptedEngine):
    eng = engine_cls(script)
    ctx = make_ctx(eng, MathAnswers(symbolic=False))
    p = load_strategies().get("deepprune").make_params(params)
    out = await run_deepprune(ctx, p, judge)
    return out, ctx, eng


async def test_answer_so_far_judge_prunes_and_continues_survivors():
    out, ctx, eng = await prune({"n": 5, "prefix_tokens": 4, "max_tokens": 20})
    assert out.extra["clusters"] == [3, 1, 1] and out.extra["pruned"] == 2 and out.extra["survivors"] == 3
    assert eng.calls[0].n == 5 and eng.calls[0].max_tokens == 4
    cont = eng.calls[1:]
    assert sorted(c.prefix for c in cont) == ["first compute 7 then", "so x is 12", "we need to think"]
    assert all(c.max_tokens == 16 and c.messages == eng.calls[0].messages for c in cont)
    # cluster sizes weigh the votes: 12 (3) beats 7 (1 + 1)
    assert out.answer == "12" and out.extra["votes"] == {"12": 3.0, "7": 2.0}
    # pruned traces cost their 4-word prefix only: 5 x 4 + (3 + 1 + 3) continuation words
    assert ctx.meter.snapshot().generated_tokens == 27
    pruned = [c for c in out.candidates if c.extra.get("pruned")]
    assert [c.text for c in pruned] == ["thus we get 12", "so x is 12"] and all(c.answer is None for c in pruned)
    first = out.candidates[0]
    assert first.text.startswith("so x is 12") and first.completion_tokens == 7 and first.parent == 0


async def test_deepprune_unweighted_vote_counts_survivors():
    out, _, _ = await prune({"n": 5, "prefix_tokens": 4, "max_tokens": 20, "weighted": False})
    assert out.answer == "7" and out.extra["votes"] == {"12": 1.0, "7": 2.0}


async def test_deepprune_keep_per_cluster_carries_extra_members():
    def script(req, k):
        if req.prefix:
            return ScriptedReply("\\boxed{12}", answer="12") if "12" in req.prefix else prune_script(req, k)
        return PREFIXES[k]

    out, _, eng = await prune({"n": 5, "prefix_tokens": 4, "max_tokens": 20, "keep_per_cluster": 2},
                              script=script)
    assert out.extra["survivors"] == 4 and out.extra["pruned"] == 1
    assert "thus we get 12" in [c.prefix for c in eng.calls[1:]]
    assert out.extra["votes"]["12"] == pytest.approx(3.0)  # two survivors share the cluster's 3 votes


async def test_deepprune_passes_prefix_token_ids_when_the_engine_gives_them():
    class WithIds(ScriptedEngine):
        async def generate(self, req):
            out = await super().generate(req)
            return [c.__class__(**{**c.__dict__, "token_ids": tuple(range(c.completion_tokens))}) for c in out]

    out, _, eng = await prune({"n": 5, "prefix_tokens": 4, "max_tokens": 20}, engine_cls=WithIds)
    assert all(c.prefix_token_ids == (0, 1, 2, 3) for c in eng.calls[1:])
    assert out.candidates[0].token_ids == (0, 1, 2, 3, 0, 1, 2)


async def test_deepprune_complete_prefix_is_not_continued():
    def script(req, k):
        return ["\\boxed{3}", "so \\boxed{3}", "a b c d e f"][k] if not req.prefix else ScriptedReply("g \\boxed{4}", answer="4")

    out, _, eng = await prune({"n": 3, "prefix_tokens": 4, "max_tokens": 10}, script=script)
    assert out.extra["clusters"] == [2, 1] and out.extra["continued"] == 1
    assert [c.prefix for c in eng.calls[1:]] == ["a b c d"]
    assert out.extra["votes"] == {"3": 2.0, "4": 1.0} and out.answer == "3"


async def test_ngram_judge_jaccard_of_word_trigrams():
    assert ngrams("A b c d", 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert jaccard(ngrams("a b c d e"), ngrams("a b c d f")) == pytest.approx(0.5)
    texts = ["a b c d e x", "a b c d f y", "p q r s t u"]

    def script(req, k):
        return texts[k] if not req.prefix else ScriptedReply("\\boxed{1}", answer="1")

    out, _, _ = await prune({"n": 3, "prefix_tokens": 5, "judge": "ngram", "threshold": 0.5}, script=script)
    assert out.extra["clusters"] == [2, 1]  # "a b c d e" vs "a b c d f": 2/4 = 0.5
    out, _, _ = await prune({"n": 3, "prefix_tokens": 5, "judge": "ngram", "threshold": 0.6}, script=script)
    assert out.extra["clusters"] == [1, 1, 1]
    ctx = make_ctx(ScriptedEngine({}), MathAnswers(symbolic=False))
    assert await NgramJudge().similarity("x y z", "x y z", ctx) == 1.0
    assert await AnswerSoFarJudge().similarity("so 4/2", "it is 2", ctx) == 0.0  # string normalisation only


async def test_llm_judge_charges_verifier_tokens_and_prunes_on_yes():
    def script(req, k):
        content = req.messages[-1]["content"]
        if "same final answer" in content:
            a = content.split("Student A (partial):\n")[1].split("\n\nStudent B")[0]
            b = content.split("Student B (partial):\n")[1].split("\n\nWill")[0]
            same = ("12" in a) == ("12" in b)
            return ScriptedReply("yes" if same else "no", logprobs=[-0.1])
        return prune_script(req, k)

    out, ctx, eng = await prune({"n": 5, "prefix_tokens": 4, "max_tokens": 20, "judge": "llm"}, script=script)
    # 1: vs 0 yes; 2: vs 0 no (new); 3: vs 0 yes; 4: vs 0 no, vs 2 yes ("7" and "think" both lack 12)
    assert out.extra["judge_calls"] == 5 and out.extra["clusters"] == [3, 2]
    judge_calls = [c for c in eng.calls if c.max_tokens == 1]
    assert len(judge_calls) == 5 and all(c.logprobs == 20 and c.temperature == 0.0 for c in judge_calls)
    cost = ctx.meter.snapshot()
    assert cost.verifier_calls == 5 and cost.verifier_generated_tokens == 5
    assert cost.verifier_prompt_tokens > 0
    assert cost.generated_tokens == 5 * 4 + 3 + 1  # policy tokens exclude the judge's


def test_p_yes_from_alternatives():
    t = TokenLogprob("Yes", -0.2, top=(("Yes", -0.2), (" no", -1.8), ("maybe", -3.0)))
    assert p_yes("Yes", [t]) == pytest.approx(math.exp(-0.2) / (math.exp(-0.2) + math.exp(-1.8)))
    assert p_yes("no", None) == 0.0 and p_yes("yes", None) == 1.0


async def test_llm_judge_can_use_another_engine():
    judge_eng = ScriptedEngine(lambda req, k: ScriptedReply("no", logprobs=[-0.1]))
    out, ctx, eng = await prune({"n": 5, "prefix_tokens": 4, "max_tokens": 20}, judge=LLMEquivalenceJudge(judge_eng))
    assert len(judge_eng.calls) == out.extra["judge_calls"] == 10  # never equal: 0+1+2+3+4 comparisons
    assert out.extra["clusters"] == [1, 1, 1, 1, 1] and ctx.meter.snapshot().verifier_calls == 10
    assert all(c.max_tokens != 1 for c in eng.calls)


def test_embedding_judge_without_its_dependency_says_what_to_install():
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="sentence-transformers"):
            EmbeddingJudge()
    else:  # pragma: no cover - only where the optional dependency is installed
        pytest.skip("sentence-transformers is installed")


def test_deepprune_params_validation():
    with pytest.raises(ValueError):
        DeepPruneParams(prefix_tokens=0)
    with pytest.raises(ConfigError):
        load_strategies().get("deepprune").make_params({"judge": "telepathy"})
    with pytest.raises(ConfigError):
        load_strategies().get("deepconf").make_params({"eta": 0})
