"""The ``openai`` engine with prompts as token ids (``-p token_ids=true``): vLLM and SGLang servers.

What it needs from the server, and what happens without it (never a silent fallback):

- ``POST /tokenize`` (at the server root, next to ``/v1``) with ``{"messages": ...,
  "add_generation_prompt": true}``: the chat template rendered *and* tokenised by the server, once
  per distinct message list; with ``{"prompt": text}``: text to ids (``tokenize``, used by budget
  forcing). A server without it (404/405) is an :class:`EngineError` naming ``/tokenize``.
- ``POST /detokenize`` ``{"tokens": [...]}``: ids to text (``detokenize``, used by tree search).
- ``POST /v1/completions`` with ``prompt`` a list of token ids: every request (chat requests too,
  as their rendered ids) goes there, continuing from ``prefix_token_ids`` when given, so text the
  model produced is never re-tokenised and the server's prefix cache hits. A server that refuses
  an id prompt (4xx) is an :class:`EngineError` saying so, with the server's message.
- ``"return_token_ids": true`` (vLLM >= 0.10.2): the generated ids come back with each choice
  (``Completion.token_ids``); a server that ignores it gives no ids, and tree search then
  continues from the text (``prefix`` without ``prefix_token_ids``) — same prompt text, so same
  results, only without the id-exact guarantee.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ttscale.core.errors import EngineError
from ttscale.core.types import Completion, GenerationRequest
from ttscale.engines.openai import OpenAIEngine, OpenAIParams
from ttscale.engines.openai_http import excerpt as _excerpt
from ttscale.engines.openai_wire import Route

_PROMPT_IDS: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar("ttscale_prompt_ids", default=None)


def server_root(base_url: str) -> str:
    """``http://host:port`` for ``http://host:port/v1`` (where vLLM serves /tokenize)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class ServerTokenizer:
    """Synchronous calls to a server's ``/tokenize`` and ``/detokenize`` (cached)."""

    def __init__(self, base_url: str, model: str, headers: Mapping[str, str], timeout_s: float) -> None:
        self.root = server_root(base_url)
        self.model = model
        self._http = httpx.Client(headers=dict(headers), timeout=timeout_s)
        self._chat: dict[Any, tuple[int, ...]] = {}
        self._text: dict[tuple[str, bool], tuple[int, ...]] = {}

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.root}/{path}"
        try:
            resp = self._http.post(url, json={"model": self.model, **body})
        except httpx.TransportError as e:
            raise EngineError(f"openai engine: cannot reach {url} ({type(e).__name__}: {e})") from e
        if resp.status_code in (404, 405):
            raise EngineError(
                f"openai engine: the server has no /{path} endpoint ({url}: HTTP {resp.status_code}), which "
                "token_ids=true needs; use a vLLM or SGLang server, or set --engine-param token_ids=false"
            )
        if resp.status_code >= 400:
            raise EngineError(f"openai engine: POST {url} failed with HTTP {resp.status_code}: {_excerpt(resp.text)}")
        data = resp.json()
        if not isinstance(data, dict):
            raise EngineError(f"openai engine: POST {url} returned {type(data).__name__}, not an object")
        return data

    def _ids(self, data: Mapping[str, Any], path: str) -> tuple[int, ...]:
        toks = data.get("tokens", data.get("input_ids"))
        if not isinstance(toks, list):
            raise EngineError(f"openai engine: {self.root}/{path} returned no token list: {_excerpt(str(data))}")
        return tuple(int(t) for t in toks)

    def chat_ids(self, messages: Sequence[Mapping[str, str]]) -> tuple[int, ...]:
        key = tuple(tuple(sorted(m.items())) for m in messages)
        if key not in self._chat:
            try:
                data = self._post("tokenize", {"messages": [dict(m) for m in messages],
                                               "add_generation_prompt": True, "add_special_tokens": False})
            except EngineError as e:
                if "HTTP 4" not in str(e) or "no /tokenize" in str(e):
                    raise
                raise EngineError(
                    f"{e} -- token_ids=true renders chat prompts with the server's /tokenize given chat "
                    "messages (vLLM does; SGLang's /tokenize takes text only): send raw prompts, or set "
                    "--engine-param token_ids=false"
                ) from e
            self._chat[key] = self._ids(data, "tokenize")
        return self._chat[key]

    def tokenize(self, text: str, *, special: bool = False) -> tuple[int, ...]:
        key = (text, special)
        if key not in self._text:
            # the plain /tokenize form always parses special tokens; without ``special`` the text is
            # model output or a cue without markup, where both forms agree
            self._text[key] = self._ids(self._post("tokenize", {"prompt": text, "add_special_tokens": False}),
                                        "tokenize")
        return self._text[key]

    def detokenize(self, ids: Sequence[int]) -> str:
        data = self._post("detokenize", {"tokens": [int(t) for t in ids]})
        text = data.get("prompt", data.get("text"))
        if not isinstance(text, str):
            raise EngineError(f"openai engine: {self.root}/detokenize returned no text: {_excerpt(str(data))}")
        return text

    def close(self) -> None:
        self._http.close()


class OpenAITokenIdEngine(OpenAIEngine):
    """:class:`OpenAIEngine` sending every prompt as token ids to ``/v1/completions`` (module docstring)."""

    supports_token_ids = True

    def __init__(self, model: str, params: OpenAIParams | None = None, **kwargs: Any) -> None:
        super().__init__(model, params, **kwargs)
        self.tokens = ServerTokenizer(self.base_url, model, self._client.headers, self.params.read_timeout_s)

    def tokenize(self, text: str, *, special: bool = False) -> tuple[int, ...]:
        return self.tokens.tokenize(text, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokens.detokenize(ids)

    def prompt_ids(self, req: GenerationRequest) -> tuple[int, ...]:
        if req.raw_prompt is not None:
            base = self.tokens.tokenize(req.raw_prompt, special=True)
        else:
            base = self.tokens.chat_ids(req.messages)
        if req.prefix_token_ids is not None:
            return base + tuple(req.prefix_token_ids)
        return base + self.tokens.tokenize(req.prefix) if req.prefix else base

    def _route(self, req: GenerationRequest) -> Route:
        return "completions"

    def _body(self, req: GenerationRequest, route: Route, n: int, seed: int | None) -> dict[str, Any]:
        body = super()._body(req, route, n, seed)
        ids = _PROMPT_IDS.get()
        if ids is not None:
            body["prompt"] = list(ids)
            body["return_token_ids"] = True
        return body

    def _parse(self, data: dict[str, Any], req: GenerationRequest, route: Route) -> list[Completion]:
        out = super()._parse(data, req, route)
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        for i, ch in enumerate(choices[: len(out)]):
            ids = ch.get("token_ids")
            if isinstance(ids, list) and all(isinstance(t, int) for t in ids):
                out[i] = dataclasses.replace(out[i], token_ids=tuple(ids))
        return out

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        ids = await asyncio.to_thread(self.prompt_ids, req)
        token = _PROMPT_IDS.set(ids)
        try:
            return await super().generate(req)
        except EngineError as e:
            msg = str(e)
            if "context length" in msg or "max_model_len" in msg or "maximum context" in msg:
                raise EngineError(f"{msg} -- the prompt ({len(ids)} tokens) plus max_tokens exceed the server's "
                                  "context: shorten them, or start the server with a larger --max-model-len") from e
            if "HTTP 400" in msg or "HTTP 422" in msg:
                raise EngineError(
                    f"{msg} -- the request's prompt was sent as {len(ids)} token ids (token_ids=true): if the "
                    "server refuses token-id prompts on /v1/completions, set --engine-param token_ids=false"
                ) from e
            raise
        finally:
            _PROMPT_IDS.reset(token)

    async def aclose(self) -> None:
        self.tokens.close()
        await super().aclose()
