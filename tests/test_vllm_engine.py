"""The in-process ``vllm`` engine on SmolLM2-135M (GGUF converted once to Hugging Face format).

Marked ``vllm``: run inside the vLLM venv (``scripts/test`` does); skipped where vLLM is missing.
One engine for the whole module (loading vLLM takes minutes on a shared CPU box).
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("vllm")

from ttscale.core.errors import EngineError
from ttscale.core.types import GenerationRequest
from ttscale.datasets.loaders import load_dataset
from ttscale.lab.runner import Runner
from ttscale.verifiers.math_answers import MathAnswers

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]

MSGS = ({"role": "user", "content": "Count from 1 to 20, separated by commas."},)


@pytest.fixture(scope="module")
def eng():
    from ttscale.engines.vllm_inproc import VLLMEngine

    e = VLLMEngine("smollm2-135m", max_model_len=1024, max_num_seqs=16, cpu_kv_cache_gb=1, enforce_eager=True)
    yield e
    asyncio.run(e.aclose())


async def test_generation_features(eng):
    assert eng.params_count and 1.0e8 < eng.params_count < 1.7e8  # FLOPs from the model config
    req = GenerationRequest(messages=MSGS, n=3, temperature=0.8, top_p=0.9, max_tokens=24, seed=7, logprobs=3)
    a = await eng.generate(req)
    assert len({c.text for c in a}) > 1  # seed + i per sample
    # seeded: one sample repeats exactly (the CPU build's batched samples can differ with the batch row)
    one = req.with_(n=1, logprobs=None)
    assert [c.text for c in await eng.generate(one)] == [c.text for c in await eng.generate(one)]
    b = await eng.generate(req)  # the prompt is cached now
    for c in a:
        assert c.completion_tokens == len(c.token_ids) == len(c.logprobs) > 0
        assert all(len(t.top) == 3 and t.token_id is not None for t in c.logprobs)
    # the repeated prompt is served from the prefix cache
    assert b[0].cached_prompt_tokens > 0 and b[0].prompt_tokens >= b[0].cached_prompt_tokens

    greedy = GenerationRequest(messages=MSGS, temperature=0.0, max_tokens=30)
    (full,) = await eng.generate(greedy)
    head = full.token_ids[:10]
    # continuing by ids gives the same text as one greedy run; the prefix is cached
    (cont,) = await eng.generate(greedy.with_(prefix=eng.detokenize(head), prefix_token_ids=head, max_tokens=20))
    assert eng.detokenize(head) + cont.text == full.text
    assert cont.cached_prompt_tokens >= 16
    (stopped,) = await eng.generate(greedy.with_(stop=("5",)))
    assert "5" not in stopped.text and full.text.startswith(stopped.text)

    # a monitor aborts the request: only a few tokens are produced
    seen: list[int] = []

    def monitor(tokens, text):
        seen.append(len(tokens))
        return len(tokens) >= 5

    (cut,) = await eng.generate(greedy.with_(max_tokens=200, monitor=monitor))
    assert cut.finish_reason == "cancelled" and 5 <= cut.completion_tokens < 40

    with pytest.raises(EngineError, match="max_model_len"):
        await eng.generate(GenerationRequest(raw_prompt="hello " * 1100, max_tokens=4))


async def test_cancelling_the_task_aborts_the_request(eng):
    task = asyncio.create_task(eng.generate(GenerationRequest(messages=MSGS, max_tokens=400, temperature=0.0)))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # the engine drops the request (vLLM's abort)
        if not eng._llm.output_processor.has_unfinished_requests():
            break
        await asyncio.sleep(0.1)
    assert not eng._llm.output_processor.has_unfinished_requests()


STRATEGIES = {
    "beam_search": {"n": 4, "beam_width": 2, "max_step_tokens": 24, "max_tokens": 48, "max_steps": 2},
    "budget_forcing": {"max_thinking_tokens": 24, "waits": 1, "max_answer_tokens": 16},
    "deepconf": {"n": 4, "warmup": 2, "batch": 2, "max_tokens": 32, "window": 8, "tail": 8, "top_k": 5},
    "self_consistency": {"n": 3, "max_tokens": 32},
    "best_of_n": {"n": 3, "max_tokens": 32, "verifier": "confidence", "logprobs": 3},
}


async def test_strategies_run_with_the_usual_results(eng, tmp_path):
    ds = load_dataset("default", limit=1)
    from ttscale.verifiers.base import make_verifier

    for name, params in STRATEGIES.items():
        runner = Runner(engine=eng, strategy=name, params=params, answers=MathAnswers(), progress=False,
                        make_verifier=lambda n: make_verifier(n, eng))
        out = tmp_path / f"{name}.jsonl"
        summary = await runner.run(ds.problems, out)
        assert summary.done_now == 1, name
        rec = json.loads(out.read_text().splitlines()[0])
        assert rec["engine"] == "vllm" and rec["strategy"] == name and rec["candidates"], name
        assert rec["cost"]["generated_tokens"] > 0 and rec["cost"]["flops"] > 0, name
        if name == "beam_search":
            assert rec["cost"]["cached_prompt_tokens"] > 0  # tree steps continue from cached prefixes
