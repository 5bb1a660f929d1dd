"""PRM/ORM step formats and label-token reading with a fake tokenizer and a fake model (no
weights, no torch); the HTTP reward model against a FastAPI stub; PMI scores with a fake scorer."""

from __future__ import annotations

import asyncio
import math
import re
import socket
import threading
import time
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi import FastAPI, Request

from ttscale.core.errors import ConfigError
from ttscale.core.types import Candidate, Problem
from ttscale.engines.scripted import ScriptedEngine
from ttscale.verifiers.math_answers import MathAnswers
from ttscale.verifiers.pmi import PMIParams, PMIVerifier, can_score_text, token_grammar
from ttscale.verifiers.prm import PRMFormat, PRMParams, PRMVerifier, guess_family, load_hf

from helpers import make_ctx

_PIECES = re.compile(r"<\|\w+\|>|<extra_0>|ки|\n|\+|-|[^\s+\-<]+|<")


class FakeTok:
    """Word-level tokenizer: specials, step tags, '+', '-' and newlines are single tokens."""

    bos_token = "<|bos|>"
    pad_token_id = 0
    eos_token_id = 0

    def __init__(self):
        self.vocab = {"<pad>": 0, "<|bos|>": 1}

    def _id(self, piece):
        return self.vocab.setdefault(piece, len(self.vocab))

    def encode(self, text, add_special_tokens=False):
        ids = [self._id(p) for p in _PIECES.findall(text)]
        return ([1] if add_special_tokens else []) + ids

    def convert_tokens_to_ids(self, tok):
        return self._id(tok)

    def apply_chat_template(self, msgs, tokenize=True, add_generation_prompt=False):
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in msgs)
        if add_generation_prompt:
            text += "<|assistant|>"
        return self.encode(text) if tokenize else text

    def piece(self, i):
        return {v: k for k, v in self.vocab.items()}[i]


def fake_forward(tok, table, width=2, log=None):
    """Outputs [T, width] per sequence: ``table[piece]`` at positions whose token is that piece
    (or, with ``shift``, the piece after it); zeros elsewhere."""

    def forward(batch, columns):
        if log is not None:
            log.append((len(batch), columns))
        outs = []
        for ids in batch:
            rows = []
            for i, t in enumerate(ids):
                key = tok.piece(t)
                nxt = tok.piece(ids[i + 1]) if i + 1 < len(ids) else None
                rows.append(list(table.get(key, table.get(("next", nxt), [0.0] * width))))
            outs.append(rows)
        return outs

    return forward


def cand(steps, i=0):
    return Candidate(text="\n\n".join(steps), steps=tuple(steps), id=i)


P = Problem(id="p1", prompt="What is 2+3?", answer="5")


def ctx():
    return make_ctx(ScriptedEngine({"p1": ["x"]}), MathAnswers())


async def test_qwen_prm_format_and_scores():
    tok = FakeTok()
    fmt = PRMFormat("qwen", tok)
    e = fmt.encode("What is 2+3?", ["Add them.", "\\boxed{5}"])
    text = "".join(tok.piece(i) for i in e.ids)
    assert "<|system|>Pleasereasonstepbystep" in text and text.count("<extra_0>") == 2
    assert [tok.piece(e.ids[p]) for p in e.positions] == ["<extra_0>", "<extra_0>"]
    v = PRMVerifier(fmt, fake_forward(tok, {"<extra_0>": [0.0, math.log(3)]}))
    scores = await v.score_steps(P, [cand(["Add them.", "\\boxed{5}"]), cand(["one"], 1)], ctx())
    assert scores == [pytest.approx([0.75, 0.75]), pytest.approx([0.75])]


async def test_math_shepherd_format_and_label_tokens():
    tok = FakeTok()
    fmt = PRMFormat("math_shepherd", tok)
    e = fmt.encode("Q?", ["a", "b"])
    text = " ".join(tok.piece(i) for i in e.ids)
    assert text == "<|bos|> Q? Step 1: a ки \n Step 2: b ки"
    assert [tok.piece(e.ids[p]) for p in e.positions] == ["ки", "ки"]
    assert [tok.piece(c) for c in fmt.columns] == ["+", "-"]
    log = []
    v = PRMVerifier(fmt, fake_forward(tok, {"ки": [math.log(4), 0.0]}, log=log))
    assert await v.score_steps(P, [cand(["a", "b"])], ctx()) == [pytest.approx([0.8, 0.8])]
    assert log == [(1, fmt.columns)]  # the model is asked only for the +/- columns


async def test_rlhflow_reads_before_each_assistant_plus():
    tok = FakeTok()
    fmt = PRMFormat("rlhflow", tok)
    e = fmt.encode("Q?", ["a", "b", "c"])
    assert [tok.piece(e.ids[p + 1]) for p in e.positions] == ["+", "+", "+"]
    assert [tok.piece(e.ids[p]) for p in e.positions] == ["<|assistant|>"] * 3
    first_user = e.ids[: e.positions[0]]
    assert " ".join(tok.piece(i) for i in first_user) == "<|user|> Q? a \n"
    v = PRMVerifier(fmt, fake_forward(tok, {("next", "+"): [0.0, 0.0]}))
    assert await v.score_steps(P, [cand(["a", "b", "c"])], ctx()) == [pytest.approx([0.5] * 3)]


async def test_skywork_value_head_at_step_tokens():
    tok = FakeTok()
    fmt = PRMFormat("skywork", tok)
    e = fmt.encode("Q?", ["a b", "c"])
    assert " ".join(tok.piece(i) for i in e.ids) == "<|bos|> Q? \n a b \n c \n"
    assert e.positions == [5, 7] and all(tok.piece(e.ids[p]) == "\n" for p in e.positions)
    v = PRMVerifier(fmt, fake_forward(tok, {"\n": [2.0]}, width=1))
    got = await v.score_steps(P, [cand(["a b", "c"])], ctx())
    assert got == [pytest.approx([1 / (1 + math.exp(-2))] * 2)]


async def test_orm_scores_whole_solutions_and_prefixes():
    tok = FakeTok()
    fmt = PRMFormat("orm", tok)
    e = fmt.encode("Q?", ["a", "b"])
    assert e.positions == [len(e.ids) - 1]
    v = PRMVerifier(fmt, fake_forward(tok, {"\n": [0.0]}, width=1))
    assert await v.score(P, [cand(["a", "b"])], ctx()) == [0.5]
    assert await v.score_steps(P, [cand(["a", "b"])], ctx()) == [[0.5, 0.5]]


async def test_concurrent_problems_share_batches():
    tok = FakeTok()
    fmt = PRMFormat("qwen", tok)
    log = []
    v = PRMVerifier(fmt, fake_forward(tok, {"<extra_0>": [0.0, 0.0]}, log=log), batch_size=8, wait_ms=20)
    res = await asyncio.gather(*(v.score_steps(P, [cand(["a"], i), cand(["b"], i + 10)], ctx()) for i in range(3)))
    assert res == [[[0.5], [0.5]]] * 3
    assert [b for b, _ in log] == [6] and v.forward_calls == 1


async def test_batches_split_and_truncation():
    tok = FakeTok()
    fmt = PRMFormat("qwen", tok)
    log = []
    v = PRMVerifier(fmt, fake_forward(tok, {"<extra_0>": [0.0, 0.0]}, log=log), batch_size=2, wait_ms=0,
                    max_length=4)
    got = await v.score_steps(P, [cand(["a", "b", "c"], i) for i in range(5)], ctx())
    assert [b for b, _ in log] == [2, 2, 1]
    # only the last 4 tokens are kept ("<extra_0> c <extra_0> \n"): 2 tags read, the first repeated
    assert got == [[0.5, 0.5, 0.5]] * 5


def test_family_guess_and_missing_torch():
    assert guess_family("Qwen/Qwen2.5-Math-PRM-7B") == "qwen"
    assert guess_family("peiyi9979/math-shepherd-mistral-7b-prm") == "math_shepherd"
    assert guess_family("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data") == "rlhflow"
    assert guess_family("Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B") == "skywork"
    with pytest.raises(ConfigError, match="family"):
        guess_family("gpt2")
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'ttscale\[prm\]'"):
            load_hf(PRMParams())


# --- HTTP reward model ------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def reward_stub():
    app = FastAPI()
    seen: list[tuple[str, dict]] = []

    def steps_of(text):
        return text.count("<extra_0>")

    @app.post("/pooling")
    async def pooling(req: Request):
        body = await req.json()
        seen.append(("/pooling", body))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"index": i, "object": "pooling",
                 "data": [[0.2, 0.8] if "good" in part else [0.9, 0.1]
                          for part in x.split("<extra_0>")[:steps_of(x)]]}
                for i, x in enumerate(inputs)]
        return {"data": data}

    @app.post("/classify")
    async def classify(req: Request):
        body = await req.json()
        seen.append(("/classify", body))
        return {"data": [{"index": i, "label": "x", "probs": [0.6, 0.4] if "bad" in x else [0.3, 0.7],
                          "num_classes": 2} for i, x in enumerate(body["input"])]}

    @app.post("/v1/score")
    async def score(req: Request):
        body = await req.json()
        seen.append(("/v1/score", body))
        return {"data": [{"index": i, "score": 0.25 * (i + 1)} for i, _ in enumerate(body["text_2"])]}

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.should_exit = True
        th.join(5)


async def test_http_reward_pooling_step_scores():
    from ttscale.verifiers.reward_http import RewardHTTPParams, RewardHTTPVerifier

    with reward_stub() as (url, seen):
        v = RewardHTTPVerifier(RewardHTTPParams(url=url, model="prm", endpoint="pooling", template="{question}\n\n{steps}"))
        c = ctx()
        got = await v.score_steps(P, [cand(["good a", "bad b"]), cand(["good c"], 1)], c)
        assert got == [pytest.approx([0.8, 0.1]), pytest.approx([0.8])]
        path, body = seen[-1]
        assert path == "/pooling" and body["model"] == "prm" and len(body["input"]) == 2
        assert body["input"][0].endswith("good a<extra_0>bad b<extra_0>") and "What is 2+3?" in body["input"][0]
        assert c.meter.snapshot().verifier_calls == 1
        assert await v.score(P, [cand(["good a", "bad b"])], c) == [pytest.approx(0.1)]
        await v.aclose()


async def test_http_reward_classify_and_score_endpoints():
    from ttscale.verifiers.reward_http import RewardHTTPParams, RewardHTTPVerifier

    with reward_stub() as (url, seen):
        v = RewardHTTPVerifier(RewardHTTPParams(url=url, model="rm", endpoint="classify", template="{question}\n\n{steps}"))
        got = await v.score_steps(P, [cand(["good a", "bad b"])], ctx())
        assert got == [pytest.approx([0.7, 0.4])]  # each prefix as a solution, P(last label)
        assert seen[-1][0] == "/classify" and len(seen[-1][1]["input"]) == 2
        v2 = RewardHTTPVerifier(RewardHTTPParams(url=url, model="rm", endpoint="score"))
        assert await v2.score(P, [cand(["a"]), cand(["b"], 1)], ctx()) == [0.25, 0.5]
        assert seen[-1][1]["text_1"] == "What is 2+3?"
        await v.aclose()
        await v2.aclose()


async def test_http_reward_errors_are_clear():
    from ttscale.core.errors import EngineError
    from ttscale.verifiers.reward_http import RewardHTTPParams, RewardHTTPVerifier

    v = RewardHTTPVerifier(RewardHTTPParams(url=f"http://127.0.0.1:{_free_port()}", model="m", max_retries=0))
    with pytest.raises(EngineError, match=r"127\.0\.0\.1"):
        await v.score_steps(P, [cand(["a"])], ctx())
    await v.aclose()
    with pytest.raises(ValueError):
        RewardHTTPParams(url="")


# --- PMI --------------------------------------------------------------------------------------
class ScoringEngine(ScriptedEngine):
    """Scores text: each word costs -1, or -0.25 when it appears in the user message."""

    def __init__(self):
        super().__init__({"p1": ["x"]})
        self.scored = []

    async def score_text(self, req, text):
        user = " ".join(m["content"] for m in req.messages if m["role"] == "user")
        self.scored.append((user, req.prefix, text))
        return [-0.25 if w in user.split() else -1.0 for w in text.split()]


async def test_pmi_from_score_text():
    eng = ScoringEngine()
    c = make_ctx(eng, MathAnswers(), problem=Problem(id="p1", prompt="add two and three"))
    v = PMIVerifier(None, PMIParams(squash="none"))
    steps = ("two plus three", "is five")
    got = await v.score_steps(c.problem, [cand(steps)], c)
    # step 1: with the question -0.75 - 0.25 ... per token: (-1.5 - -3) / 3 = 0.5; step 2: 0
    assert got == [pytest.approx([0.5, 0.0])]
    assert ("add two and three", "two plus three\n\n", "is five") in eng.scored
    assert ("", "two plus three\n\n", "is five") in eng.scored
    last = await PMIVerifier(None, PMIParams()).score_last_steps(c.problem, [cand(steps)], c)
    assert last == [pytest.approx(0.5)]  # sigmoid(0)
    assert c.meter.snapshot().verifier_calls > 0


async def test_pmi_needs_text_scoring():
    eng = ScriptedEngine({"p1": ["x"]})
    assert not can_score_text(eng)
    with pytest.raises(ConfigError, match="score given text"):
        await PMIVerifier().score_steps(P, [cand(["a"])], make_ctx(eng, MathAnswers()))
    assert token_grammar([5, 17]) == "root ::= <[5]> <[17]>"


@pytest.mark.model
@pytest.mark.timeout(300)
def test_pmi_on_embedded_llamacpp(embedded_small):
    """Grammar-forced scoring on llama.cpp: forced ids come back with finite logprobs."""
    from ttscale.core.types import GenerationRequest
    from ttscale.verifiers.pmi import llamacpp_score_text

    eng = embedded_small
    assert can_score_text(eng)
    req = GenerationRequest(messages=({"role": "user", "content": "What is 2+3?"},), prefix="Let me add.\n\n")

    async def go():
        return await llamacpp_score_text(eng, req, "2 + 3 = 5.")

    lps, n_prompt = asyncio.run(go())
    assert len(lps) == len(eng.tokenize("2 + 3 = 5.")) and all(x <= 0 and math.isfinite(x) for x in lps)
    assert n_prompt > 5
