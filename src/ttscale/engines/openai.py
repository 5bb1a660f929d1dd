"""OpenAI-compatible HTTP engine: vLLM, SGLang, llama.cpp server, Ollama, hosted APIs.

Talks plain HTTP through ``httpx.AsyncClient`` (not the openai SDK) so that every server quirk is
handled in this engine: here (what to send, how to split ``n``), in
:mod:`ttscale.engines.openai_http` (sending, retries) and :mod:`ttscale.engines.openai_wire`
(request bodies, response parsing). All settings are one :class:`OpenAIParams`.

- **Concurrency**: at most ``max_concurrency`` HTTP requests in flight (one semaphore per engine);
  many problems call ``generate`` at once and the server batches them.
- **Retries**: 429, 5xx, connection errors and timeouts are retried with exponential backoff and
  jitter (``tenacity``), honouring ``Retry-After``; other 4xx fail at once. The final
  :class:`EngineError` names the URL, the HTTP status, a body excerpt and the number of attempts.
- **Timeouts**: ``connect_timeout_s`` (opening a connection), ``read_timeout_s`` (silence from a
  connected server) per attempt, and ``deadline_s`` per request, retries included; the error says
  which one fired (a server that accepts and hangs is not reported as unreachable).
- **Endpoints**: requests with ``messages`` go to ``/chat/completions``; requests with a
  ``raw_prompt`` (chat template bypassed) go to ``/completions``. ``endpoint="completions"`` makes
  requests without a ``raw_prompt`` an error rather than silently using the chat template.
- **n**: servers that ignore ``n`` (return fewer choices) get further requests until ``n`` samples
  are collected; a server that rejects ``n`` with llama.cpp's "Field 'n' ... <= value <= K" 400 is
  asked again in chunks of K. Split requests get ``seed + offset`` so that seeded samples differ.
  ``max_n`` caps the samples per request up front.
- **Continuation** (``req.prefix``): on chat, the prefix is sent as a trailing assistant message
  with vLLM's ``continue_final_message: true, add_generation_prompt: false`` (llama.cpp prefills a
  trailing assistant message by itself and ignores the extra fields); servers that echo the prefix
  (llama.cpp does) have it stripped, so ``Completion.text`` is the continuation only. On
  completions, the prefix is appended to the raw prompt. HTTP continuation is text-based:
  ``prefix_token_ids`` are ignored (``supports_token_ids = False``) because, for chat requests, the
  server renders the chat template and we do not know the ids of the rendered prompt, so a token-id
  prompt cannot be assembled here; re-tokenising the prefix text is the portable behaviour.
- **Logprobs**: both the chat format (``logprobs.content[j]`` with ``token``, ``logprob``,
  ``top_logprobs`` and optionally ``id``) and the legacy completions format (``tokens``,
  ``token_logprobs``, ``top_logprobs`` as dicts) are parsed, whichever endpoint returned them
  (llama.cpp answers ``/completions`` in the chat format).
- **Usage**: per-choice completion counts when the server gives them; otherwise the total
  ``completion_tokens`` is split over the choices proportionally to their logprob token counts (or
  evenly). When the per-choice logprob counts add up to *more* than the reported total the server
  under-reports (llama.cpp reports one choice's count for n > 1) and the logprob counts are used.
  Prompt tokens are charged on the first choice of each HTTP request. A llama.cpp response (it has
  a ``timings`` field) with n > 1 and no logprobs cannot be split exactly, so the engine asks for one
  sample per request from then on (or set ``max_n=1`` for llama.cpp up front).
- **Monitor** (``req.monitor``): each sample is streamed (SSE, one request per sample so that one
  sample can stop without the others) and the stream is closed as soon as the monitor returns
  True; the sample is reported with ``finish_reason="cancelled"`` and the tokens streamed so far.
  Cancelling the awaiting task closes the HTTP request too (httpx does on cancellation), which
  vLLM and llama.cpp treat as an abort.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.registry import param
from ttscale.core.types import Completion, GenerationRequest
from ttscale.engines.base import engine
from ttscale.engines.openai_http import Clocks, NTooLarge, Retrier, excerpt, post_json, post_stream
from ttscale.engines.openai_wire import (
    Route,
    StreamedSample,
    parse_logprobs,
    parse_response,
    path_of,
    request_body,
    route_of,
)

__all__ = ["OpenAIEngine", "OpenAIParams", "make_openai", "parse_logprobs"]


@dataclass(frozen=True)
class OpenAIParams:
    """The openai engine's settings (the registry lists and validates them from here)."""

    base_url: str = param("http://127.0.0.1:8000/v1", "the server's OpenAI-compatible base URL (ends in /v1)")
    api_key: str | None = param(None, "API key (default: $TTSCALE_API_KEY, then $OPENAI_API_KEY)")
    endpoint: Literal["chat", "completions"] = param(
        "chat", "chat: /chat/completions with the server's chat template; completions: raw prompts only"
    )
    max_concurrency: int = param(64, "most HTTP requests in flight at once")
    connect_timeout_s: float = param(10.0, "seconds to open a connection (then it is retried)")
    read_timeout_s: float = param(
        300.0, "seconds a connected server may send nothing before the attempt is retried (a non-streamed "
        "answer comes only when generation ends)")
    deadline_s: float = param(900.0, "seconds one request may take in all, retries and backoff included (0 = none)")
    max_retries: int = param(5, "retries on 429, 5xx, connection errors and timeouts")
    params_count: float | None = param(None, "model parameter count, for FLOPs estimates (e.g. 1.5e9)")
    backoff_s: float = param(0.5, "initial retry backoff in seconds (doubles per retry, with jitter)")
    backoff_max_s: float = param(30.0, "longest wait between retries in seconds")
    max_n: int = param(0, "most samples per HTTP request (0: all n in one; llama.cpp accepts n <= its n_parallel)")
    # token-id prompts (vLLM, SGLang): see ttscale.engines.openai_tokens
    token_ids: bool = param(False, "send prompts as token ids to /v1/completions, using the server's /tokenize "
                            "and /detokenize (vLLM, SGLang); tree search then continues by ids")


class OpenAIEngine:
    """An engine backed by any OpenAI-compatible HTTP server (see the module docstring).
    ``extra_body`` is merged into every request body; ``transport`` replaces httpx's (tests)."""

    name = "openai"
    supports_token_ids = False
    supports_logprobs = True

    def __init__(self, model: str, params: OpenAIParams | None = None, *,
                 extra_body: Mapping[str, Any] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        p = params or OpenAIParams()
        if p.endpoint not in ("chat", "completions"):
            raise ConfigError(f"openai engine: endpoint must be 'chat' or 'completions', got {p.endpoint!r}")
        if p.max_concurrency < 1:
            raise ConfigError(f"openai engine: max_concurrency must be >= 1, got {p.max_concurrency}")
        if p.max_retries < 0:
            raise ConfigError(f"openai engine: max_retries must be >= 0, got {p.max_retries}")
        for name in ("connect_timeout_s", "read_timeout_s"):
            if not getattr(p, name) > 0:
                raise ConfigError(f"openai engine: {name} must be > 0 seconds, got {getattr(p, name)}")
        if p.deadline_s < 0:
            raise ConfigError(f"openai engine: deadline_s must be >= 0 seconds (0 = none), got {p.deadline_s}")
        self.params = p
        self.model = model
        self.base_url = p.base_url.rstrip("/")
        self.params_count = p.params_count
        self.extra_body = dict(extra_body or {})
        key = p.api_key or os.environ.get("TTSCALE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        clocks = Clocks(p.connect_timeout_s, p.read_timeout_s, p.deadline_s)
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=clocks.timeout(),
            limits=httpx.Limits(max_connections=p.max_concurrency, max_keepalive_connections=p.max_concurrency),
            transport=transport,
        )
        self._retry = Retrier(p.max_retries, p.backoff_s, p.backoff_max_s, clocks)
        self._sem = asyncio.Semaphore(p.max_concurrency)
        self._n_cap: int | None = p.max_n if p.max_n > 0 else None

    @property
    def requests_sent(self) -> int:
        """HTTP attempts made (for tests and diagnostics)."""
        return self._retry.attempts_made

    def _route(self, req: GenerationRequest) -> Route:
        return route_of(req, self.params.endpoint)

    def _body(self, req: GenerationRequest, route: Route, n: int, seed: int | None) -> dict[str, Any]:
        return request_body(self.model, req, route, n, seed, self.extra_body)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/{path}"
        async with self._sem:
            return await self._retry.run(url, lambda: post_json(self._client, url, body))

    def _parse(self, data: dict[str, Any], req: GenerationRequest, route: Route) -> list[Completion]:
        parsed = parse_response(data, req, route)
        if parsed.unsplittable:
            # llama.cpp reports one choice's usage for n > 1; without logprobs the per-choice counts
            # are unknowable, so later requests ask one sample each (llama.cpp evaluates the prompt
            # per sample anyway, so this costs nothing).
            self._n_cap = 1
        return parsed.completions

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        route = self._route(req)
        if req.monitor is not None:
            seeds = [None if req.seed is None else req.seed + i for i in range(req.n)]
            return list(await asyncio.gather(*(self._stream_one(req, route, s) for s in seeds)))
        path = path_of(route)
        out: list[Completion] = []
        while len(out) < req.n:
            need = req.n - len(out)
            cap = self._n_cap or need
            sizes = [min(cap, need - i) for i in range(0, need, cap)]
            # split requests get seed + (index of their first sample) so their samples differ
            starts = [len(out) + sum(sizes[:i]) for i in range(len(sizes))]
            seeds = [None if req.seed is None else req.seed + st for st in starts]
            try:
                results = await asyncio.gather(*(
                    self._post(path, self._body(req, route, s, seed)) for s, seed in zip(sizes, seeds, strict=True)
                ))
            except NTooLarge as e:
                self._n_cap = e.limit
                continue
            got = 0
            for s, data in zip(sizes, results, strict=True):
                comps = self._parse(data, req, route)
                if 0 < len(comps) < s:
                    self._n_cap = min(self._n_cap or s, len(comps))  # the server ignores n
                got += len(comps)
                out.extend(comps)
            if got == 0:
                raise EngineError(
                    f"openai engine: {self.base_url}/{path} returned no choices; response: "
                    f"{excerpt(json.dumps(results[0]))}"
                )
        return out[: req.n]

    async def _stream_one(self, req: GenerationRequest, route: Route, seed: int | None) -> Completion:
        """One monitored sample, streamed; closed as soon as the monitor says stop."""
        url = f"{self.base_url}/{path_of(route)}"
        body = self._body(req, route, 1, seed)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}

        async def once() -> Completion:
            sample = StreamedSample(req, route)
            await post_stream(self._client, url, body, sample.feed, lambda: sample.chunks > 0)
            return sample.completion()

        async with self._sem:
            return await self._retry.run(url, once)

    async def aclose(self) -> None:
        await self._client.aclose()


@engine("openai", OpenAIParams, "any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs)")
def make_openai(model: str | None, params: OpenAIParams) -> OpenAIEngine:
    if not model:
        raise ConfigError("openai engine needs --model NAME (the upstream model name)")
    cls = OpenAIEngine
    if params.token_ids:  # token-id prompts: ttscale.engines.openai_tokens
        from ttscale.engines.openai_tokens import OpenAITokenIdEngine as cls
    return cls(model, params)
