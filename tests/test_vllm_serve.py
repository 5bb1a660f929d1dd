"""The ``openai`` engine against a real ``vllm serve`` (CPU build) on loopback, SmolLM2-135M.

Marked ``vllm``: run inside the vLLM venv (``scripts/test`` does); skipped where vLLM is missing.
One server for the module; the last test restarts it under a running request.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("vllm")

from ttscale.core.types import GenerationRequest
from ttscale.datasets.loaders import load_dataset
from ttscale.engines.openai import OpenAIEngine, OpenAIParams
from ttscale.engines.openai_tokens import OpenAITokenIdEngine
from ttscale.engines.vllm_server import VLLMServer
from ttscale.lab.runner import Runner
from ttscale.verifiers.base import make_verifier
from ttscale.verifiers.math_answers import MathAnswers

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]

MODEL = "smollm2"
MSGS = ({"role": "user", "content": "Count from 1 to 20, separated by commas."},)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = VLLMServer("smollm2-135m", name=MODEL, log=tmp_path_factory.mktemp("vllm") / "serve.log",
                     max_model_len=1024, max_num_seqs=16, extra_args=["--enforce-eager"])
    try:
        yield srv.start()
    finally:
        srv.stop()


async def test_chat_completions_n_logprobs_and_token_ids(server):
    url = f"{server.root}/v1"
    plain = OpenAIEngine(MODEL, OpenAIParams(base_url=url))
    ids_eng = OpenAITokenIdEngine(MODEL, OpenAIParams(base_url=url))
    try:
        chat = await plain.generate(GenerationRequest(messages=MSGS, n=3, max_tokens=16, seed=3, logprobs=2))
        assert len(chat) == 3 and all(c.text and c.completion_tokens > 0 for c in chat)
        assert all(len(t.top) == 2 for t in chat[0].logprobs)
        (raw,) = await plain.generate(GenerationRequest(raw_prompt="1, 2, 3,", max_tokens=8, temperature=0.0))
        assert raw.text.strip().startswith("4")

        # token ids: chat rendered by /tokenize, sent as ids to /v1/completions, ids returned
        greedy = GenerationRequest(messages=MSGS, temperature=0.0, max_tokens=30)
        (g_chat,) = await plain.generate(greedy)
        (full,) = await ids_eng.generate(greedy)
        assert full.text == g_chat.text and full.token_ids and len(full.token_ids) == full.completion_tokens
        head = full.token_ids[:10]
        prefix = await asyncio.to_thread(ids_eng.detokenize, head)
        (cont,) = await ids_eng.generate(greedy.with_(prefix=prefix, prefix_token_ids=head, max_tokens=20))
        assert prefix + cont.text == full.text
        assert cont.cached_prompt_tokens > 0  # the server's prefix cache served the shared prompt
        assert await asyncio.to_thread(ids_eng.tokenize, prefix) == head
        seeded = GenerationRequest(messages=MSGS, n=3, max_tokens=12, seed=5)
        assert len({c.text for c in await ids_eng.generate(seeded)}) > 1  # child i gets seed + i
        one = seeded.with_(n=1)  # one seeded sample repeats (batched ones can differ with the batch row)
        assert [c.text for c in await ids_eng.generate(one)] == [c.text for c in await ids_eng.generate(one)]
    finally:
        await plain.aclose()
        await ids_eng.aclose()


async def test_closing_the_stream_stops_generation(server):
    eng = OpenAIEngine(MODEL, OpenAIParams(base_url=f"{server.root}/v1"))
    before = server.metric("vllm:generation_tokens_total")
    try:
        (c,) = await eng.generate(GenerationRequest(messages=MSGS, temperature=0.0, max_tokens=600, logprobs=1,
                                                    monitor=lambda toks, text: len(toks) >= 5))
    finally:
        await eng.aclose()
    assert c.finish_reason == "cancelled" and c.completion_tokens < 40
    await asyncio.sleep(3)
    assert server.metric("vllm:num_requests_running") == 0
    produced = server.metric("vllm:generation_tokens_total") - before
    assert produced < 100  # the server stopped, far short of max_tokens=600


STRATEGIES = {
    "beam_search": {"n": 4, "beam_width": 2, "max_step_tokens": 24, "max_tokens": 48, "max_steps": 2},
    "budget_forcing": {"max_thinking_tokens": 24, "waits": 1, "max_answer_tokens": 16},
    "deepconf": {"n": 4, "warmup": 2, "batch": 2, "max_tokens": 32, "window": 8, "tail": 8, "top_k": 5},
    "self_consistency": {"n": 3, "max_tokens": 32},
    "best_of_n": {"n": 3, "max_tokens": 32, "verifier": "confidence", "logprobs": 3},
}


async def test_strategies_through_the_server(server, tmp_path):
    eng = OpenAITokenIdEngine(MODEL, OpenAIParams(base_url=f"{server.root}/v1"))
    ds = load_dataset("default", limit=1)
    try:
        for name, params in STRATEGIES.items():
            runner = Runner(engine=eng, strategy=name, params=params, answers=MathAnswers(), progress=False,
                            make_verifier=lambda n: make_verifier(n, eng))
            out = tmp_path / f"{name}.jsonl"
            assert (await runner.run(ds.problems, out)).done_now == 1, name
            rec = json.loads(out.read_text().splitlines()[0])
            assert rec["engine"] == "openai" and rec["strategy"] == name and rec["candidates"], name
            assert rec["cost"]["generated_tokens"] > 0, name
            if name == "beam_search":
                assert rec["cost"]["cached_prompt_tokens"] > 0
    finally:
        await eng.aclose()


async def test_retries_across_a_server_restart(server):
    eng = OpenAIEngine(MODEL, OpenAIParams(base_url=f"{server.root}/v1", max_retries=200, backoff_s=0.5))
    eng.backoff_max_s = 3.0
    try:
        server.stop()
        server.proc = None
        task = asyncio.create_task(eng.generate(GenerationRequest(messages=MSGS, max_tokens=8, temperature=0.0)))
        await asyncio.sleep(2)
        assert not task.done()  # retrying while the server is down
        server.start(wait=False)
        (c,) = await asyncio.wait_for(task, timeout=900)
        assert c.text and eng.requests_sent > 1
    finally:
        await eng.aclose()
