"""Sequential and evolutionary strategies (revisions, budget_forcing, rsa) on the scripted engine:
exactly what each request holds, in which order, when the strategy stops and what it is charged;
plus one small end-to-end run each on the embedded SmolLM2 (``-m model``)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import ClassVar

import pytest

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Verifier
from ttscale.core.types import Completion, GenerationRequest
from ttscale.engines.scripted import ScriptedEngine, ScriptedReply
from ttscale.strategies.base import load_strategies
from ttscale.strategies.budget_forcing import CAP_PROMPT, Transcript
from ttscale.strategies.revisions import ATTEMPT_PROMPT, REVISE_PROMPT, chain_shape
from ttscale.strategies.rsa import AGGREGATE_PROMPT, REFINE_PROMPT
from ttscale.verifiers.math_answers import MathAnswers

from helpers import make_ctx

Q = "What is 2+3?"


class Table(Verifier):
    """Scores a candidate by its first word; records how many candidates it scored."""

    name = "table"

    def __init__(self, table):
        self.table = table
        self.scored = []

    async def score(self, problem, candidates, ctx):
        self.scored += [c.id for c in candidates]
        return [self.table[c.text.split()[0]] for c in candidates]


async def run(name, params, engine, *, budget=None, verifier=None, seed=0, system_prompt=None):
    entry = load_strategies().get(name)
    vs = {"table": verifier} if verifier else {}
    ctx = make_ctx(engine, MathAnswers(), budget=budget, verifiers=vs, seed=seed, system_prompt=system_prompt)
    out = await entry.target(ctx.problem, ctx, entry.make_params(params))
    return out, ctx


def user(req: GenerationRequest) -> str:
    return req.messages[-1]["content"]


# --- revisions -----------------------------------------------------------------------------------

REV_TEXTS = ["a1 \\boxed{5}", "b1 \\boxed{7}", "a2 \\boxed{5}", "b2 \\boxed{5}", "a3 \\boxed{8}", "b3 \\boxed{7}"]
REV_SCORES = {"a1": 0.1, "b1": 0.5, "a2": 0.2, "b2": 0.3, "a3": 0.85, "b3": 0.4}


def attempts(*texts: str, first: int = 1) -> str:
    return "\n\n".join(ATTEMPT_PROMPT.format(index=first + i, text=t) for i, t in enumerate(texts))


def test_chain_shape_follows_the_ratio():
    assert chain_shape(16, 1.0) == [4, 4, 4, 4]  # sqrt(N) x sqrt(N)
    assert chain_shape(16, 4.0) == [8, 8]  # 8 revisions per chain : 2 chains
    assert chain_shape(16, 0.25) == [2] * 8
    assert chain_shape(5, 1.0) == [3, 2]  # N is spent exactly
    assert chain_shape(4, 100.0) == [4] and chain_shape(4, 0.01) == [1, 1, 1, 1]


async def test_revisions_prompts_order_parents_and_weighted_selection():
    eng = ScriptedEngine({"p1": REV_TEXTS})
    v = Table(REV_SCORES)
    out, ctx = await run("revisions", {"n": 6, "ratio": 1.5, "verifier": "table"}, eng, verifier=v,
                         system_prompt="SYS")
    # 2 chains x 3 attempts: one request for both first attempts, then one request per chain per round
    assert [r.n for r in eng.calls] == [2, 1, 1, 1, 1]
    assert eng.calls[0].messages == ctx.messages()
    assert [user(r) for r in eng.calls[1:]] == [
        REVISE_PROMPT.format(problem=Q, attempts=attempts("a1 \\boxed{5}")),
        REVISE_PROMPT.format(problem=Q, attempts=attempts("b1 \\boxed{7}")),
        REVISE_PROMPT.format(problem=Q, attempts=attempts("a1 \\boxed{5}", "a2 \\boxed{5}")),
        REVISE_PROMPT.format(problem=Q, attempts=attempts("b1 \\boxed{7}", "b2 \\boxed{5}")),
    ]
    assert all(r.messages[0] == {"role": "system", "content": "SYS"} for r in eng.calls)
    by_id = {c.id: c for c in out.candidates}
    assert out.extra["chains"] == [[0, 2, 4], [1, 3, 5]]
    assert [by_id[i].parent for i in (0, 2, 4, 1, 3, 5)] == [None, 0, 2, None, 1, 3]
    assert [by_id[i].extra for i in (0, 2, 4)] == [{"chain": 0, "revision": r} for r in range(3)]
    assert out.extra["chain_answers"] == [["5", "5", "8"], ["7", "5", "7"]]
    assert out.extra["shape"] == {"chains": 2, "lengths": [3, 3]} and out.extra["rounds"] == 3
    # every attempt scored once; 7 = 0.5 + 0.4 beats 8 = 0.85 and 5 = 0.1 + 0.2 + 0.3
    assert sorted(v.scored) == [0, 1, 2, 3, 4, 5]
    assert out.answer == "7" and out.chosen.id == 1 and out.extra["weights"] == {"5": 0.6, "7": 0.9, "8": 0.85}
    assert out.extra["chain_best"] == [4, 1]  # within chain 0 the 8 (0.85) beats the 5s (0.3)
    assert ctx.meter.snapshot().generations == 6 and ctx.meter.snapshot().engine_calls == 5


async def test_revisions_select_best_and_majority():
    out, _ = await run("revisions", {"n": 6, "ratio": 1.5, "verifier": "table", "select": "best"},
                       ScriptedEngine({"p1": REV_TEXTS}), verifier=Table(REV_SCORES))
    assert out.answer == "8" and out.chosen.text == "a3 \\boxed{8}"
    # majority needs no verifier (none is configured: asking for one would raise)
    out, _ = await run("revisions", {"n": 6, "ratio": 1.5, "select": "majority"}, ScriptedEngine({"p1": REV_TEXTS}))
    assert out.answer == "5" and out.chosen.id == 0 and out.extra["votes"] == {"5": 3.0, "7": 2.0, "8": 1.0}


async def test_revisions_logprobs_reach_every_attempt_and_the_confidence_verifier():
    from ttscale.verifiers.confidence import ConfidenceParams, ConfidenceVerifier

    texts = [ScriptedReply("a1 \\boxed{5}", [-0.1, -0.1]), ScriptedReply("b1 \\boxed{7}", [-2.0, -2.0]),
             ScriptedReply("a2 \\boxed{7}", [-3.0, -3.0]), ScriptedReply("b2 \\boxed{5}", [-0.5, -0.5])]
    eng = ScriptedEngine({"p1": texts})
    v = ConfidenceVerifier(ConfidenceParams(mode="mean", window=8, top_k=1))
    out, _ = await run("revisions", {"n": 4, "verifier": "table", "logprobs": 3}, eng, verifier=v)
    assert [r.logprobs for r in eng.calls] == [3, 3, 3]  # the first request (n=2) and both revisions
    # confidence = -mean top-1 logprob; weighted: 7 (2.0 + 3.0) outweighs 5 (0.1 + 0.5)
    assert {c.text.split()[0]: c.score for c in out.candidates} == {"a1": 0.1, "b1": 2.0, "a2": 3.0, "b2": 0.5}
    assert out.answer == "7" and out.extra["weights"] == {"5": 0.6, "7": 5.0}
    with pytest.raises(ConfigError, match="logprobs must be >= 0"):
        load_strategies().get("revisions").make_params({"logprobs": -1})


async def test_revisions_history_window_and_prompt_override():
    texts = ["x1 \\boxed{1}", "x2 \\boxed{2}", "x3 \\boxed{3}", "x4 \\boxed{4}"]
    eng = ScriptedEngine({"p1": texts})
    out, _ = await run("revisions", {"n": 4, "ratio": 100, "history": 2, "select": "majority",
                                     "revise_prompt": "Q={problem} | {attempts} | again",
                                     "attempt_prompt": "[{index}] {text}"}, eng)
    assert [user(r) for r in eng.calls[1:]] == [
        f"Q={Q} | [1] x1 \\boxed{{1}} | again",
        f"Q={Q} | [1] x1 \\boxed{{1}}\n\n[2] x2 \\boxed{{2}} | again",
        f"Q={Q} | [2] x2 \\boxed{{2}}\n\n[3] x3 \\boxed{{3}} | again",  # only the 2 most recent
    ]
    assert out.extra["chains"] == [[0, 1, 2, 3]] and [c.parent for c in out.candidates] == [None, 0, 1, 2]


async def test_revisions_stop_gracefully_at_the_generation_budget():
    eng = ScriptedEngine({"p1": REV_TEXTS + REV_TEXTS})
    out, ctx = await run("revisions", {"n": 9, "select": "majority"}, eng, budget=Budget(max_generations=5))
    # 3 chains x 3: 3 first attempts, then chains 0 and 1 revise once and the budget is spent
    assert ctx.meter.snapshot().generations == 5
    assert [r.n for r in eng.calls] == [3, 1, 1]
    assert out.extra["chains"] == [[0, 3], [1, 4], [2]]
    assert out.extra["stopped_by_budget"] and ctx.meter.stopped_by_budget
    assert out.answer == "5" and len(out.candidates) == 5  # 5, 7, 5 + revisions 5, 8


async def test_revisions_clipped_first_request_makes_fewer_chains():
    eng = ScriptedEngine({"p1": REV_TEXTS})
    out, ctx = await run("revisions", {"n": 9, "select": "majority"}, eng, budget=Budget(max_generations=2))
    assert [r.n for r in eng.calls] == [2] and out.extra["chains"] == [[0], [1]]
    assert ctx.meter.snapshot().generations == 2 and out.answer == "5"


async def test_revisions_token_budget_is_shared_and_never_exceeded():
    eng = ScriptedEngine(lambda req, k: " ".join(["w"] * 10) + f" \\boxed{{{k}}}")
    out, ctx = await run("revisions", {"n": 4, "max_tokens": 20, "select": "majority"}, eng,
                         budget=Budget(max_generated_tokens=30))
    assert ctx.meter.snapshot().generated_tokens <= 30
    assert eng.calls[0].max_tokens == 15  # 30 tokens shared by the 2 first attempts
    assert ctx.meter.stopped_by_budget and out.candidates


class SlowFirstChain(ScriptedEngine):
    """Chain 0's revision requests take longer than chain 1's, so they finish last."""

    async def generate(self, req):
        if "a1" in user(req):
            await asyncio.sleep(0.05)
        return await super().generate(req)


async def test_revisions_ids_follow_chain_order_whatever_finishes_first():
    eng = SlowFirstChain({"p1": REV_TEXTS})
    out, _ = await run("revisions", {"n": 4, "select": "majority"}, eng)
    assert out.extra["chains"] == [[0, 2], [1, 3]]
    assert [c.parent for c in out.candidates] == [None, None, 0, 1]


@pytest.mark.parametrize("bad, match", [
    ({"n": 0}, "n must be >= 1"), ({"ratio": 0}, "ratio must be a positive"),
    ({"history": 0}, "history must be >= 1"), ({"revise_prompt": "{problem} {oops}"}, "revise_prompt="),
    ({"select": "vote"}, "select='vote'"),
])
def test_revisions_bad_params(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_strategies().get("revisions").make_params(bad)


# --- rsa -----------------------------------------------------------------------------------------

RSA_ANSWERS = [7, 7, 7, 7, 5, 7, 5, 9, 5, 7, 5, 9]  # by draw order: round 1, round 2, round 3


def rsa_engine(answers=RSA_ANSWERS):
    return ScriptedEngine(lambda req, k: f"m{k} \\boxed{{{answers[k % len(answers)]}}}")


def solutions(*texts: str) -> str:
    return "\n\n".join(f"Solution {i + 1}:\n{t}" for i, t in enumerate(texts))


async def test_rsa_rounds_aggregate_k_distinct_members_of_the_previous_population():
    eng = rsa_engine()
    out, ctx = await run("rsa", {"n": 4, "k": 2, "rounds": 3}, eng)
    assert [r.n for r in eng.calls] == [4] + [1] * 8
    assert eng.calls[0].messages == ctx.messages() and all(r.temperature == 1.0 for r in eng.calls)
    by_id = {c.id: c for c in out.candidates}
    assert len(by_id) == 12
    assert [r["population"] for r in out.extra["rounds"]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    for req, member in zip(eng.calls[1:], range(4, 12), strict=True):
        c = by_id[member]
        src = c.extra["sources"]
        prev = range(0, 4) if c.extra["round"] == 2 else range(4, 8)
        assert len(set(src)) == 2 and set(src) <= set(prev) and c.parent == src[0]
        assert user(req) == AGGREGATE_PROMPT.format(problem=Q, k=2, solutions=solutions(*(by_id[s].text for s in src)))
    # the answer is the majority of the last population (5, 7, 5, 9), not of earlier ones (all 7)
    assert out.answer == "5" and out.chosen.id == 8
    assert out.extra["votes"] == {"5": 2.0, "7": 1.0, "9": 1.0}
    assert ctx.meter.snapshot().generations == 12


async def test_rsa_draws_with_the_seeded_context_rng():
    a, _ = await run("rsa", {"n": 4, "k": 2, "rounds": 3}, rsa_engine())
    b, _ = await run("rsa", {"n": 4, "k": 2, "rounds": 3}, rsa_engine())
    srcs = lambda o: [c.extra["sources"] for c in o.candidates]  # noqa: E731
    assert srcs(a) == srcs(b)
    # the same draws as ctx.rng: one request seed, then the subsets, then one seed per member...
    rng = random.Random("0:p1")
    rng.randrange(2**31)
    expect = [rng.sample(range(4), 2) for _ in range(4)]
    assert srcs(a)[4:8] == expect
    others = [srcs((await run("rsa", {"n": 4, "k": 2, "rounds": 3}, rsa_engine(), seed=s))[0]) for s in (1, 2, 3)]
    assert any(o != srcs(a) for o in others)


async def test_rsa_k1_refines_with_the_refine_prompt():
    eng = rsa_engine()
    out, _ = await run("rsa", {"n": 2, "k": 1, "rounds": 2}, eng)
    by_id = {c.id: c for c in out.candidates}
    for req, member in zip(eng.calls[1:], (2, 3), strict=True):
        (s,) = by_id[member].extra["sources"]
        assert user(req) == REFINE_PROMPT.format(problem=Q, k=1, solutions=solutions(by_id[s].text))


async def test_rsa_rounds_1_is_majority_of_the_samples():
    eng = rsa_engine([3, 4, 4, 3, 4])
    out, _ = await run("rsa", {"n": 5, "k": 2, "rounds": 1}, eng)
    assert len(eng.calls) == 1 and out.answer == "4" and out.chosen.id == 1


async def test_rsa_budget_cuts_a_round_and_answers_from_what_exists():
    eng = rsa_engine()
    out, ctx = await run("rsa", {"n": 4, "k": 2, "rounds": 3}, eng, budget=Budget(max_generations=6))
    assert ctx.meter.snapshot().generations == 6 and len(eng.calls) == 3
    last = out.extra["rounds"][-1]
    assert last["round"] == 2 and last["population"] == [4, 5, 2, 3] and last["carried"] == [2, 3]
    assert out.extra["stopped_by_budget"]
    assert out.answer == "7" and out.extra["votes"] == {"5": 1.0, "7": 3.0}  # answers 5, 7 + carried 7, 7


@pytest.mark.parametrize("bad, match", [
    ({"n": 2, "k": 3}, "k=3 must be <= n=2"), ({"rounds": 0}, "rounds must be >= 1"),
    ({"aggregate_prompt": "{problem} {x}"}, "aggregate_prompt="),
])
def test_rsa_bad_params(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_strategies().get("rsa").make_params(bad)


# --- budget forcing --------------------------------------------------------------------------------


def thinker(segments: list[str], answer: str = "so \\boxed{5}"):
    """Thinking requests (stop </think>) get ``segments`` in order; the answer request gets ``answer``."""
    state = {"i": 0}

    def script(req: GenerationRequest, k: int) -> str:
        if "</think>" not in req.stop:
            return answer
        s = segments[min(state["i"], len(segments) - 1)]
        state["i"] += 1
        return s

    return script


async def test_budget_forcing_inserts_exactly_the_configured_waits():
    eng = ScriptedEngine(thinker(["t0 a b</think> answer 3", "t1 a b</think> 4", "t2 a b</think> 5"]))
    out, ctx = await run("budget_forcing", {"waits": 2, "max_thinking_tokens": 100, "max_answer_tokens": 7}, eng)
    assert [r.prefix for r in eng.calls] == [
        "<think>\n",
        "<think>\nt0 a b\nWait",
        "<think>\nt0 a b\nWaitt1 a b\nWait",
        "<think>\nt0 a b\nWaitt1 a b\nWaitt2 a b</think>",
    ]
    assert [r.max_tokens for r in eng.calls] == [100, 97, 94, 7]  # thinking budget left; own answer cap
    assert [r.stop for r in eng.calls] == [("</think>",)] * 3 + [()]
    assert all(r.prefix_token_ids is None and r.messages == ctx.messages() for r in eng.calls)
    (c,) = out.candidates
    assert c.text == eng.calls[-1].prefix + "so \\boxed{5}" and c.text.count("Wait") == 2
    assert out.answer == "5" and c.completion_tokens == 11
    assert out.extra["waits"] == 2 and out.extra["thinking_tokens"] == 9 and out.extra["answer_tokens"] == 2
    assert [s["then"] for s in out.extra["segments"]] == ["wait", "wait", "answer"] and not out.extra["capped"]
    assert ctx.meter.snapshot().generated_tokens == 11 and ctx.meter.snapshot().generations == 4


async def test_budget_forcing_forces_the_final_answer_at_the_thinking_cap():
    long = " ".join(f"x{i}" for i in range(30))
    eng = ScriptedEngine(thinker(["t0 a b c</think>", long], answer="42"))
    out, _ = await run("budget_forcing", {"waits": 5, "max_thinking_tokens": 10}, eng)
    assert [r.max_tokens for r in eng.calls[:2]] == [10, 6]
    answer_req = eng.calls[2]
    assert answer_req.prefix == "<think>\nt0 a b c\nWait" + " ".join(f"x{i}" for i in range(6)) + \
        CAP_PROMPT.format(close="</think>")
    assert answer_req.prefix.endswith("\n</think>\n\nFinal Answer:")
    assert out.extra["thinking_tokens"] == 10 and out.extra["capped"] and out.extra["waits"] == 1
    assert out.answer == "42"


@pytest.mark.parametrize("cap", [1, 3, 7, 12])
async def test_budget_forcing_never_exceeds_the_thinking_cap(cap):
    eng = ScriptedEngine(thinker(["a b c d e</think>", "f g</think>", "h i j k l m n o p q r s"]))
    out, ctx = await run("budget_forcing", {"waits": 3, "max_thinking_tokens": cap}, eng)
    assert out.extra["thinking_tokens"] <= cap
    assert sum(s["tokens"] for s in out.extra["segments"]) == out.extra["thinking_tokens"]
    assert ctx.meter.snapshot().generated_tokens == out.extra["thinking_tokens"] + out.extra["answer_tokens"]


async def test_budget_forcing_min_thinking_tokens_and_custom_delimiters():
    eng = ScriptedEngine(lambda req, k: "ok \\boxed{1}" if not req.stop else "p q r<|im_start|>answer more")
    out, _ = await run("budget_forcing", {
        "waits": 3, "min_thinking_tokens": 5, "think_open": "<|im_start|>think\n",
        "think_close": "<|im_start|>answer", "wait_prompt": " Hmm, wait", "open_thinking": True}, eng)
    # 3 tokens < 5: one Wait; 6 tokens >= 5: the answer, although 2 more Waits were allowed
    assert out.extra["waits"] == 1 and len(eng.calls) == 3
    assert eng.calls[1].prefix == "<|im_start|>think\np q r Hmm, wait"
    assert eng.calls[2].prefix == "<|im_start|>think\np q r Hmm, waitp q r<|im_start|>answer"
    assert out.answer == "1"


async def test_budget_forcing_without_opening_the_thinking_block():
    eng = ScriptedEngine(thinker(["<think> a b</think>"]))
    out, _ = await run("budget_forcing", {"waits": 0, "open_thinking": False}, eng)
    assert [r.prefix for r in eng.calls] == ["", "<think> a b</think>"] and out.extra["waits"] == 0


async def test_budget_forcing_stops_at_the_generation_budget_and_answers_from_the_thinking():
    eng = ScriptedEngine(thinker(["so 2+3 = 5</think>"]))
    out, ctx = await run("budget_forcing", {"waits": 4}, eng, budget=Budget(max_generations=2))
    assert len(eng.calls) == 2 and ctx.meter.snapshot().generations == 2
    assert out.extra["waits"] == 2 and out.extra["stopped_by_budget"] and out.extra["answer_tokens"] == 0
    assert out.answer == "5" and out.candidates[0].text == "<think>\nso 2+3 = 5\nWaitso 2+3 = 5\nWait"


async def test_budget_forcing_empty_answer_phase_answers_from_the_thinking():
    eng = ScriptedEngine(thinker(["so the answer is 7</think>"], answer=""))
    out, _ = await run("budget_forcing", {"waits": 0}, eng)
    assert out.candidates[0].text == "<think>\nso the answer is 7</think>" and out.answer == "7"


async def test_budget_forcing_token_budget_clips_thinking_then_skips_the_answer():
    eng = ScriptedEngine(thinker(["a b c</think>", " ".join(["w"] * 20)]))
    out, ctx = await run("budget_forcing", {"waits": 1, "max_thinking_tokens": 100}, eng,
                         budget=Budget(max_generated_tokens=8))
    assert [r.max_tokens for r in eng.calls] == [8, 5]
    assert ctx.meter.snapshot().generated_tokens == 8 and out.extra["capped"] and out.extra["stopped_by_budget"]


EOS = 0


class CharIdEngine(ScriptedEngine):
    """Scripted engine with token ids = characters, like llama.cpp: a stop string's tokens are
    streamed (text trimmed), an end of turn streams an EOS id; records what it was asked to tokenise."""

    supports_token_ids = True

    def __init__(self, script):
        super().__init__(script)
        self.tokenized: list[str] = []
        self._raw: list[str] = []

    def tokenize(self, text, *, special=False):
        self.tokenized.append(text)
        return tuple(ord(ch) for ch in text)

    def detokenize(self, ids):
        return "".join("<eos>" if i == EOS else chr(i) for i in ids)

    def _reply(self, req):
        r = super()._reply(req)
        self._raw.append(r.text)
        return r

    async def generate(self, req):
        self._raw = []
        out = await super().generate(req)
        res = []
        for c, raw in zip(out, self._raw, strict=True):
            ids = [ord(ch) for ch in c.text]
            hit = next((s for s in req.stop if s in raw), None)
            if c.finish_reason == "stop":
                ids += [ord(ch) for ch in hit] if hit else [EOS]
            res.append(replace(c, token_ids=tuple(ids)))
        return res


async def test_budget_forcing_continues_from_the_models_token_ids():
    # segment 1 closes with </think> (suppressed: Wait), segment 2 ends its turn (EOS: suppressed),
    # segment 3 closes with </think> on the model's own tokens (kept), then the answer
    eng = CharIdEngine(thinker(["t0 a</think>", "t1 b", "t2 c</think>"]))
    out, _ = await run("budget_forcing", {"waits": 2}, eng)
    assert [r.prefix for r in eng.calls] == [
        "<think>\n", "<think>\nt0 a\nWait", "<think>\nt0 a\nWaitt1 b\nWait", "<think>\nt0 a\nWaitt1 b\nWaitt2 c</think>"]
    for r in eng.calls[1:]:
        assert r.prefix_token_ids == tuple(ord(ch) for ch in r.prefix)  # the exact ids of the text, no EOS
    # only inserted text was tokenised, never what the model wrote (its ids were reused)
    assert set(eng.tokenized) == {"", "<think>\n", "\nWait"}
    assert out.extra["token_ids"] and out.extra["retokenised_chars"] == 0
    assert out.candidates[0].token_ids == (*(ord(ch) for ch in out.candidates[0].text), EOS)


async def test_budget_forcing_appends_the_close_after_an_end_of_turn_in_token_mode():
    eng = CharIdEngine(thinker(["t0 5"]))
    out, _ = await run("budget_forcing", {"waits": 0}, eng)
    assert out.extra["segments"] == [{"tokens": 2, "finish": "stop", "then": "answer"}]
    assert eng.calls[1].prefix == "<think>\nt0 5</think>"
    assert eng.calls[1].prefix_token_ids == tuple(ord(ch) for ch in "<think>\nt0 5</think>")
    assert "</think>" in eng.tokenized


class Pieces:
    """Tokenizer whose token 2 is ' sea' (a stop string 'ea' falls inside it)."""

    supports_token_ids = True
    VOCAB: ClassVar[dict[int, str]] = {1: "The", 2: " sea", 3: " s", 4: "Wait"}

    def tokenize(self, text, *, special=False):
        inv = {v: k for k, v in self.VOCAB.items()}
        return (inv[text],) if text in inv else ()

    def detokenize(self, ids):
        return "".join(self.VOCAB[i] for i in ids)


async def test_transcript_retokenises_only_a_token_split_by_the_stop_string():
    ctx = make_ctx(ScriptedEngine({}), MathAnswers())
    ctx.engine = Pieces()
    tr = Transcript(ctx)
    kept = await tr.add_model(Completion(text="The s", token_ids=(1, 2)), keep="ea")
    assert kept  # the model's own tokens hold the stop string: kept as produced
    assert tr.text == "The sea" and tr.ids == [1, 2]
    tr2 = Transcript(ctx)
    assert not await tr2.add_model(Completion(text="The s", token_ids=(1, 2)))
    assert tr2.text == "The s" and tr2.ids == [1, 3] and tr2.retokenised_chars == 2


@pytest.mark.parametrize("bad, match", [
    ({"max_thinking_tokens": 0}, "max_thinking_tokens must be >= 1"),
    ({"min_thinking_tokens": 50, "max_thinking_tokens": 10}, "min_thinking_tokens=50"),
    ({"waits": -1}, "waits must be >= 0"), ({"think_close": ""}, "think_close must not be empty"),
    ({"cap_prompt": "{close} {answer}"}, "cap_prompt="),
])
def test_budget_forcing_bad_params(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_strategies().get("budget_forcing").make_params(bad)


# --- end to end on the embedded SmolLM2 ------------------------------------------------------------


@pytest.mark.model
async def test_revisions_end_to_end(embedded_small):
    out, ctx = await run("revisions", {"n": 2, "max_tokens": 24, "select": "majority"}, embedded_small,
                         budget=Budget(max_generated_tokens=40))
    cost = ctx.meter.snapshot()
    assert 0 < cost.generated_tokens <= 40 and cost.generations == 2 and cost.prompt_tokens > 0
    assert [c.parent for c in out.candidates] == [None, out.candidates[0].id]


@pytest.mark.model
async def test_rsa_end_to_end(embedded_small):
    out, ctx = await run("rsa", {"n": 2, "k": 2, "rounds": 2, "max_tokens": 16}, embedded_small,
                         budget=Budget(max_generated_tokens=60))
    cost = ctx.meter.snapshot()
    assert 0 < cost.generated_tokens <= 60 and cost.generations == 4
    assert len(out.extra["rounds"]) == 2 and all(c.extra["round"] in (1, 2) for c in out.candidates)


@pytest.mark.model
async def test_budget_forcing_end_to_end(embedded_small):
    out, ctx = await run("budget_forcing", {"max_thinking_tokens": 24, "waits": 1, "max_answer_tokens": 8},
                         embedded_small, budget=Budget(max_generated_tokens=100))
    cost = ctx.meter.snapshot()
    assert out.extra["token_ids"] and out.extra["thinking_tokens"] <= 24 and out.extra["answer_tokens"] <= 8
    assert cost.generated_tokens == out.extra["thinking_tokens"] + out.extra["answer_tokens"] > 0
    assert out.candidates[0].text.startswith("<think>\n")
