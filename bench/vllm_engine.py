"""vLLM through ttscale: raw vLLM batched throughput vs the ``vllm`` engine vs ``openai`` -> ``vllm serve``.

One model (default ``smollm2-135m``, its GGUF converted once). One workload: ``--prompts`` chat
prompts x ``--n`` seeded samples of up to ``--max-tokens`` tokens, all submitted at once.

1. In-process: one :class:`~ttscale.engines.vllm_inproc.VLLMEngine`. "raw" submits the workload
   straight to its ``AsyncLLM`` (same token-id prompts, same sampling parameters and seeds, final
   outputs only); "inproc" runs it through ``VLLMEngine.generate``. Both see the same samples, so
   the same token counts; the prefix cache is reset before every timed pass, passes alternate,
   and each side's best of ``--repeats`` counts.
2. HTTP: the engine is closed (one vLLM at a time), ``vllm serve`` is started on loopback and the
   workload runs through the ``openai`` engine with ``token_ids=true`` (the server's prefix cache
   reset through ``/reset_prefix_cache`` where the server offers it).
3. Beam search (``n=4, beam_width=2``, the rest at its defaults: :data:`BEAM`) on ``--beam-problems``
   problems of the default dataset, on each engine: prefix hit rate = cached prompt tokens / prompt
   tokens over the run's results.

Prints ``RESULT inproc_vs_raw=<ratio> http_vs_raw=<ratio> beam_prefix_hit=<fraction>`` (the lower of
the two engines' beam hit rates). Goals: >= 0.9, >= 0.8, >= 0.9.

Usage (in the vLLM venv): python bench/vllm_engine.py [--model smollm2-135m] [--prompts 8] [--n 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ttscale.core.types import GenerationRequest
from ttscale.datasets.loaders import load_dataset
from ttscale.lab.runner import Runner
from ttscale.verifiers.base import make_verifier
from ttscale.verifiers.math_answers import MathAnswers

QUESTIONS = [f"Write a short story about the number {i}, then explain why {i} is interesting." for i in range(64)]


def requests(args: argparse.Namespace) -> list[GenerationRequest]:
    return [GenerationRequest(messages=({"role": "user", "content": q},), n=args.n, temperature=0.8,
                              max_tokens=args.max_tokens, seed=1000 + i)
            for i, q in enumerate(QUESTIONS[: args.prompts])]


async def through(engine: Any, reqs: list[GenerationRequest]) -> tuple[int, float]:
    t0 = time.perf_counter()
    outs = await asyncio.gather(*(engine.generate(r) for r in reqs))
    return sum(c.completion_tokens for o in outs for c in o), time.perf_counter() - t0


async def raw_vllm(eng: Any, reqs: list[GenerationRequest]) -> tuple[int, float]:
    """The same samples submitted straight to the engine's AsyncLLM on its own loop."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    llm = eng._llm
    jobs = [(eng.prompt_ids(r), r, r.seed + i, f"raw-{k}-{i}") for k, r in enumerate(reqs) for i in range(r.n)]

    async def one(ids: tuple[int, ...], r: GenerationRequest, seed: int, rid: str) -> int:
        sp = SamplingParams(n=1, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens, seed=seed,
                            output_kind=RequestOutputKind.FINAL_ONLY)
        last = None
        async for out in llm.generate({"prompt_token_ids": list(ids)}, sp, rid + str(time.perf_counter_ns())):
            last = out
        return len(last.outputs[0].token_ids) if last is not None else 0

    async def all_() -> tuple[int, float]:
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(*j) for j in jobs))
        return sum(counts), time.perf_counter() - t0

    return await asyncio.wrap_future(eng._call(all_()))


async def reset_inproc(eng: Any) -> None:
    async def reset() -> None:
        await eng._llm.reset_prefix_cache()

    await asyncio.wrap_future(eng._call(reset()))


BEAM = {"n": 4, "beam_width": 2}
"""Beam search as the issue's must-show command runs it (every other parameter at its default: steps
of up to 256 tokens, up to 40 rounds, the llm_judge step verifier on the same engine). A shorter
search (4 rounds of 48 tokens) measured 0.836: there the first, cold prefill of each problem's prompt
weighs a tenth of all prompt tokens, and that share is not reusable by any cache."""


async def beam_hit(engine: Any, problems: int) -> float:
    ds = load_dataset("default", limit=problems)
    runner = Runner(engine=engine, strategy="beam_search", answers=MathAnswers(), progress=False,
                    params=BEAM,
                    make_verifier=lambda n: make_verifier(n, engine))
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "beam.jsonl"
        await runner.run(ds.problems, out)
        recs = [json.loads(line) for line in out.read_text().splitlines()]
    prompt = sum(r["cost"]["prompt_tokens"] for r in recs)
    cached = sum(r["cost"]["cached_prompt_tokens"] for r in recs)
    return cached / prompt if prompt else 0.0


async def inproc_part(args: argparse.Namespace) -> dict[str, float]:
    from ttscale.engines.vllm_inproc import VLLMEngine

    eng = VLLMEngine(args.model, max_model_len=2048, max_num_seqs=args.prompts * args.n, cpu_kv_cache_gb=2)
    try:
        reqs = requests(args)
        await through(eng, reqs[:1])  # warm-up
        best = {"raw": 0.0, "inproc": 0.0}
        for _ in range(args.repeats):
            for side in ("raw", "inproc"):
                await reset_inproc(eng)
                toks, secs = await (raw_vllm(eng, reqs) if side == "raw" else through(eng, reqs))
                best[side] = max(best[side], toks / secs)
                print(f"{side}: {toks} tokens in {secs:.1f}s = {toks / secs:.1f} tok/s", flush=True)
        best["beam_hit"] = await beam_hit(eng, args.beam_problems)
        print(f"inproc beam_search prefix hit rate {best['beam_hit']:.3f}", flush=True)
        return best
    finally:
        await eng.aclose()


async def http_part(args: argparse.Namespace) -> dict[str, float]:
    from ttscale.engines.openai import OpenAIParams
    from ttscale.engines.openai_tokens import OpenAITokenIdEngine
    from ttscale.engines.vllm_server import VLLMServer

    os.environ.setdefault("VLLM_SERVER_DEV_MODE", "1")  # for /reset_prefix_cache
    log = Path(tempfile.gettempdir()) / "ttscale-bench-vllm-serve.log"
    with VLLMServer(args.model, name="bench", log=log, max_model_len=2048, max_num_seqs=args.prompts * args.n) as srv:
        eng = OpenAITokenIdEngine("bench", OpenAIParams(base_url=srv.base_url))
        try:
            reqs = requests(args)
            await through(eng, reqs[:1])
            best = 0.0
            for _ in range(args.repeats):
                await asyncio.to_thread(httpx.post, f"{srv.root}/reset_prefix_cache", timeout=30)
                toks, secs = await through(eng, reqs)
                best = max(best, toks / secs)
                print(f"http: {toks} tokens in {secs:.1f}s = {toks / secs:.1f} tok/s", flush=True)
            hit = await beam_hit(eng, args.beam_problems)
            print(f"http beam_search prefix hit rate {hit:.3f}", flush=True)
            return {"http": best, "beam_hit": hit}
        finally:
            await eng.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--beam-problems", type=int, default=2)
    args = ap.parse_args()
    import platform

    import vllm

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; engine: vLLM {vllm.__version__}; "
          f"model: {args.model}", flush=True)
    a = asyncio.run(inproc_part(args))
    b = asyncio.run(http_part(args))
    print(f"RESULT inproc_vs_raw={a['inproc'] / a['raw']:.3f} http_vs_raw={b['http'] / a['raw']:.3f} "
          f"beam_prefix_hit={min(a['beam_hit'], b['beam_hit']):.3f}")


if __name__ == "__main__":
    main()
