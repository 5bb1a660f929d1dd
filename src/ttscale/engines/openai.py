"""OpenAI-compatible HTTP engine: vLLM, SGLang, llama.cpp server, Ollama, hosted APIs.

Talks plain HTTP through ``httpx.AsyncClient`` (not the openai SDK) so that every server quirk is
handled here, in one place:

- **Concurrency**: at most ``max_concurrency`` HTTP requests in flight (one semaphore per engine);
  many problems call ``generate`` at once and the server batches them.
- **Retries**: 429, 5xx, connection errors and timeouts are retried with exponential backoff and
  jitter (``tenacity``), honouring ``Retry-After``; other 4xx fail at once. The final
  :class:`EngineError` names the URL, the HTTP status, a body excerpt and the number of attempts.
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
import email.utils
import json
import math
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.registry import param
from ttscale.core.types import Completion, FinishReason, GenerationRequest, TokenLogprob
from ttscale.engines.base import engine

_EXCERPT = 300
_MAX_RETRY_AFTER_S = 120.0


class _Retryable(Exception):
    """A failure worth another attempt (429, 5xx, connection error, timeout)."""

    def __init__(self, url: str, status: int | None, body: str, retry_after: float | None = None,
                 cause: BaseException | None = None) -> None:
        super().__init__(f"{url}: {status} {body[:_EXCERPT]}")
        self.url = url
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.cause = cause


class _NTooLarge(Exception):
    """The server rejected ``n`` and said how many samples it accepts per request."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


_N_LIMIT_RE = re.compile(r"""['"]?n['"]?\W.*?<=\s*value\s*<=\s*(\d+)""", re.IGNORECASE | re.DOTALL)


def _excerpt(body: str) -> str:
    body = " ".join(body.split())
    return body if len(body) <= _EXCERPT else body[: _EXCERPT - 3] + "..."


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _finish(reason: Any) -> FinishReason:
    if reason == "length":
        return "length"
    if reason == "abort":
        return "cancelled"
    return "stop"


def parse_logprobs(lp: Any) -> tuple[TokenLogprob, ...] | None:
    """Token logprobs from a choice's ``logprobs`` field in the chat or the legacy format."""
    if not isinstance(lp, Mapping):
        return None
    content = lp.get("content")
    if isinstance(content, list):
        out = []
        for t in content:
            top = tuple(
                (str(x.get("token", "")), _num(x.get("logprob"))) for x in t.get("top_logprobs") or ()
            )
            tid = t.get("id")
            out.append(TokenLogprob(str(t.get("token", "")), _num(t.get("logprob")),
                                    int(tid) if isinstance(tid, int) else None, top))
        return tuple(out)
    tokens = lp.get("tokens")
    if isinstance(tokens, list):
        vals = lp.get("token_logprobs") or []
        tops = lp.get("top_logprobs") or []
        out = []
        for j, tok in enumerate(tokens):
            top_d = tops[j] if j < len(tops) and isinstance(tops[j], Mapping) else {}
            top = tuple(sorted(((str(k), _num(v)) for k, v in top_d.items()), key=lambda kv: -kv[1]))
            out.append(TokenLogprob(str(tok), _num(vals[j] if j < len(vals) else None), None, top))
        return tuple(out)
    return None


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _split_usage(total: int | None, per_choice: Sequence[int | None], lp_counts: Sequence[int | None]) -> list[int]:
    """Completion tokens per choice (see the module docstring for the rules)."""
    k = len(per_choice)
    if k and all(c is not None for c in per_choice):
        return [int(c) for c in per_choice]  # type: ignore[arg-type]
    have_lp = k > 0 and all(c is not None for c in lp_counts)
    if total is None:
        return [int(c) for c in lp_counts] if have_lp else [0] * k  # type: ignore[arg-type]
    if have_lp:
        counts = [int(c) for c in lp_counts]  # type: ignore[arg-type]
        s = sum(counts)
        if s >= total:
            return counts
        if s > 0:
            raw = [total * c / s for c in counts]
            out = [math.floor(x) for x in raw]
            rest = total - sum(out)
            for i in sorted(range(k), key=lambda i: out[i] - raw[i])[:rest]:
                out[i] += 1
            return out
    base, rest = divmod(total, k) if k else (0, 0)
    return [base + (1 if i < rest else 0) for i in range(k)]


def _strip_prefix(text: str, prefix: str) -> str:
    if prefix and text.startswith(prefix):
        return text[len(prefix):]
    return text


class OpenAIEngine:
    """An engine backed by any OpenAI-compatible HTTP server (see the module docstring)."""

    name = "openai"
    supports_token_ids = False
    supports_logprobs = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        endpoint: Literal["chat", "completions"] = "chat",
        max_concurrency: int = 64,
        timeout_s: float = 600.0,
        max_retries: int = 5,
        params_count: float | None = None,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_n: int = 0,
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if endpoint not in ("chat", "completions"):
            raise ConfigError(f"openai engine: endpoint must be 'chat' or 'completions', got {endpoint!r}")
        if max_concurrency < 1:
            raise ConfigError(f"openai engine: max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ConfigError(f"openai engine: max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.params_count = params_count
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_n = max_n
        self.extra_body = dict(extra_body or {})
        key = api_key or os.environ.get("TTSCALE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0)),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            transport=transport,
        )
        self._sem = asyncio.Semaphore(max_concurrency)
        self._n_cap: int | None = max_n if max_n > 0 else None
        self.requests_sent = 0
        """HTTP attempts made (for tests and diagnostics)."""

    # ------------------------------------------------------------------ request bodies

    def _route(self, req: GenerationRequest) -> str:
        if req.raw_prompt is not None:
            return "completions"
        if self.endpoint == "completions":
            raise EngineError(
                "openai engine: endpoint=completions needs requests with a raw prompt; this request "
                "has chat messages only (use endpoint=chat to let the server apply the chat template)"
            )
        return "chat"

    def _body(self, req: GenerationRequest, route: str, n: int, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": n,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_tokens": req.max_tokens,
        }
        if req.stop:
            body["stop"] = list(req.stop)
        if seed is not None:
            body["seed"] = seed
        if route == "chat":
            msgs = [dict(m) for m in req.messages]
            if req.prefix:
                msgs.append({"role": "assistant", "content": req.prefix})
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            body["messages"] = msgs
            if req.logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = int(req.logprobs)
        else:
            body["prompt"] = (req.raw_prompt or "") + req.prefix
            if req.logprobs:
                body["logprobs"] = int(req.logprobs)
        body.update(self.extra_body)
        return body

    # ------------------------------------------------------------------ HTTP with retries

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, _MAX_RETRY_AFTER_S)
        exp = self.backoff_s * 2 ** max(0, state.attempt_number - 1)
        return min(self.backoff_max_s, exp + random.uniform(0, self.backoff_s))

    def _check(self, url: str, resp_status: int, headers: httpx.Headers, text: str, n: int) -> None:
        if resp_status == 429 or resp_status >= 500:
            raise _Retryable(url, resp_status, text, _retry_after(headers))
        if resp_status >= 400:
            if resp_status == 400 and n > 1:
                m = _N_LIMIT_RE.search(text)
                if m and 1 <= int(m.group(1)) < n:
                    raise _NTooLarge(int(m.group(1)))
            raise EngineError(
                f"openai engine: POST {url} failed with HTTP {resp_status} (not retried): {_excerpt(text)}"
            )

    async def _with_retries(self, url: str, attempt_fn: Any) -> Any:
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.max_retries + 1),
                wait=self._wait,
                retry=retry_if_exception_type(_Retryable),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    self.requests_sent += 1
                    return await attempt_fn()
        except _Retryable as e:
            times = f"{attempts} attempt{'s' if attempts != 1 else ''}"
            if e.status is None:
                raise EngineError(
                    f"openai engine: cannot reach {url} after {times} ({type(e.cause).__name__}: "
                    f"{e.body or e.cause}); check that the server is running and that base_url is right"
                ) from e.cause
            raise EngineError(
                f"openai engine: POST {url} failed after {times}: HTTP {e.status}: {_excerpt(e.body)}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/{path}"

        async def once() -> dict[str, Any]:
            try:
                resp = await self._client.post(url, json=body)
            except httpx.TransportError as e:  # connect errors, timeouts, dropped connections
                raise _Retryable(url, None, str(e), cause=e) from e
            self._check(url, resp.status_code, resp.headers, resp.text, int(body.get("n", 1)))
            try:
                data = resp.json()
            except ValueError as e:
                raise EngineError(
                    f"openai engine: POST {url} returned invalid JSON: {_excerpt(resp.text)}"
                ) from e
            if not isinstance(data, dict):
                raise EngineError(f"openai engine: POST {url} returned {type(data).__name__}, not an object")
            return data

        async with self._sem:
            return await self._with_retries(url, once)

    # ------------------------------------------------------------------ parsing

    def _parse(self, data: dict[str, Any], req: GenerationRequest, route: str) -> list[Completion]:
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        usage = data.get("usage") or {}
        texts, lps, finishes, per_choice = [], [], [], []
        for ch in choices:
            if route == "chat":
                text = (ch.get("message") or {}).get("content") or ""
                text = _strip_prefix(text, req.prefix)
            else:
                text = ch.get("text") or ""
            texts.append(text)
            lps.append(parse_logprobs(ch.get("logprobs")))
            finishes.append(_finish(ch.get("finish_reason")))
            cu = ch.get("usage") if isinstance(ch.get("usage"), Mapping) else {}
            per_choice.append(cu.get("completion_tokens") if isinstance(cu.get("completion_tokens"), int) else None)
        total = usage.get("completion_tokens")
        counts = _split_usage(total if isinstance(total, int) else None, per_choice,
                              [len(lp) if lp is not None else None for lp in lps])
        if "timings" in data and len(choices) > 1 and any(lp is None for lp in lps):
            # llama.cpp reports one choice's usage for n > 1; without logprobs the per-choice counts
            # are unknowable, so later requests ask one sample each (llama.cpp evaluates the prompt
            # per sample anyway, so this costs nothing).
            self._n_cap = 1
        prompt = int(usage.get("prompt_tokens") or 0)
        cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        out = []
        for i, text in enumerate(texts):
            lp = lps[i]
            ids = tuple(t.token_id for t in lp) if lp and all(t.token_id is not None for t in lp) else None
            out.append(Completion(
                text=text,
                finish_reason=finishes[i],
                completion_tokens=counts[i],
                prompt_tokens=prompt if i == 0 else 0,
                token_ids=ids,  # type: ignore[arg-type]
                logprobs=lp if req.logprobs or lp else None,
                cached_prompt_tokens=cached if i == 0 else 0,
            ))
        return out

    # ------------------------------------------------------------------ generate

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        route = self._route(req)
        if req.monitor is not None:
            seeds = [None if req.seed is None else req.seed + i for i in range(req.n)]
            return list(await asyncio.gather(*(self._stream_one(req, route, s) for s in seeds)))
        path = "chat/completions" if route == "chat" else "completions"
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
            except _NTooLarge as e:
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
                    f"{_excerpt(json.dumps(results[0]))}"
                )
        return out[: req.n]

    async def _stream_one(self, req: GenerationRequest, route: str, seed: int | None) -> Completion:
        path = "chat/completions" if route == "chat" else "completions"
        url = f"{self.base_url}/{path}"
        body = self._body(req, route, 1, seed)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        monitor = req.monitor
        assert monitor is not None

        async def once() -> Completion:
            raw = ""
            tokens: list[TokenLogprob] = []
            chunks = 0
            finish: FinishReason = "stop"
            usage: Mapping[str, Any] = {}
            cancelled = False
            echo: bool | None = None if (route == "chat" and req.prefix) else False
            try:
                async with self._client.stream("POST", url, json=body) as resp:
                    if resp.status_code >= 400:
                        text = (await resp.aread()).decode("utf-8", "replace")
                        self._check(url, resp.status_code, resp.headers, text, 1)
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            break
                        try:
                            obj = json.loads(payload)
                        except ValueError:
                            continue
                        if isinstance(obj.get("usage"), Mapping):
                            usage = obj["usage"]
                        for ch in obj.get("choices") or []:
                            piece = (ch.get("delta") or {}).get("content") if route == "chat" else ch.get("text")
                            piece = piece or ""
                            lp = parse_logprobs(ch.get("logprobs"))
                            if ch.get("finish_reason"):
                                finish = _finish(ch["finish_reason"])
                            if not piece and not lp:
                                continue
                            raw += piece
                            if echo is None:  # does the server repeat the prefix? (llama.cpp streams do not)
                                if raw.startswith(req.prefix):
                                    echo = True
                                elif not req.prefix.startswith(raw):
                                    echo = False
                            if lp:
                                tokens.extend(lp)
                            chunks += 1
                            if echo is None:
                                continue
                            text = raw[len(req.prefix):] if echo else raw
                            if monitor(tuple(tokens), text):
                                cancelled = True
                                break
                        if cancelled:
                            break
            except httpx.TransportError as e:
                if not chunks:
                    raise _Retryable(url, None, str(e), cause=e) from e
                raise EngineError(f"openai engine: stream from {url} broke off: {e}") from e
            text = raw[len(req.prefix):] if echo else raw
            n_tok = len(tokens) if tokens else chunks
            if not cancelled and isinstance(usage.get("completion_tokens"), int):
                n_tok = max(n_tok, int(usage["completion_tokens"]))
            cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
            ids = tuple(t.token_id for t in tokens) if tokens and all(t.token_id is not None for t in tokens) else None
            return Completion(
                text=text,
                finish_reason="cancelled" if cancelled else finish,
                completion_tokens=n_tok,
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                token_ids=ids,  # type: ignore[arg-type]
                logprobs=tuple(tokens) if tokens else None,
                cached_prompt_tokens=cached,
            )

        async with self._sem:
            return await self._with_retries(url, once)

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True)
class OpenAIParams:
    base_url: str = param("http://127.0.0.1:8000/v1", "the server's OpenAI-compatible base URL (ends in /v1)")
    api_key: str | None = param(None, "API key (default: $TTSCALE_API_KEY, then $OPENAI_API_KEY)")
    endpoint: Literal["chat", "completions"] = param(
        "chat", "chat: /chat/completions with the server's chat template; completions: raw prompts only"
    )
    max_concurrency: int = param(64, "most HTTP requests in flight at once")
    timeout_s: float = param(600.0, "seconds before one HTTP request times out (then it is retried)")
    max_retries: int = param(5, "retries on 429, 5xx, connection errors and timeouts")
    params_count: float | None = param(None, "model parameter count, for FLOPs estimates (e.g. 1.5e9)")
    backoff_s: float = param(0.5, "initial retry backoff in seconds (doubles per retry, with jitter)")
    max_n: int = param(0, "most samples per HTTP request (0: all n in one; llama.cpp accepts n <= its n_parallel)")
    # token-id prompts (vLLM, SGLang): see ttscale.engines.openai_tokens
    token_ids: bool = param(False, "send prompts as token ids to /v1/completions, using the server's /tokenize "
                            "and /detokenize (vLLM, SGLang); tree search then continues by ids")


@engine("openai", OpenAIParams, "any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs)")
def make_openai(model: str | None, params: OpenAIParams) -> OpenAIEngine:
    if not model:
        raise ConfigError("openai engine needs --model NAME (the upstream model name)")
    cls = OpenAIEngine
    if params.token_ids:  # token-id prompts: ttscale.engines.openai_tokens
        from ttscale.engines.openai_tokens import OpenAITokenIdEngine as cls
    return cls(
        model,
        base_url=params.base_url,
        api_key=params.api_key,
        endpoint=params.endpoint,
        max_concurrency=params.max_concurrency,
        timeout_s=params.timeout_s,
        max_retries=params.max_retries,
        params_count=params.params_count,
        backoff_s=params.backoff_s,
        max_n=params.max_n,
    )
