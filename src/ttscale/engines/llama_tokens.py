"""Prompt token ids for the embedded engine, through llama.cpp's server, cached.

Prompts are always sent to llama.cpp as token ids: the chat template is rendered
(``/apply-template``) and tokenised (``/tokenize``) once per distinct message list (least recently
used of 4096 dropped), and a continuation appends the prefix's token ids, so text the model
produced is never re-tokenised. Single tokens' texts are cached too (stop-string checks).

llama.cpp's HTTP server closes a keep-alive connection after a number of requests or seconds idle,
and a request that the client sends on it just then fails with "Server disconnected" (or a
closed socket) although the server is fine. Every call here is idempotent (tokenise, render, slot
save and restore under a fixed name), so :func:`post_local` sends it again on a fresh connection.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ttscale.core.errors import EngineError
from ttscale.core.types import GenerationRequest

_CACHE_SIZE = 4096
POST_ATTEMPTS = 3  # one stale keep-alive connection, and one more for luck


def post_local(http: httpx.Client, path: str, body: dict[str, Any], params: dict[str, Any] | None = None) -> httpx.Response:
    """POST an idempotent request to the local llama.cpp server, sent again (up to
    ``POST_ATTEMPTS`` in all) when the connection fails before a response arrives; the last error
    is raised when every attempt fails. Timeouts (a busy server, not a dropped connection) and HTTP
    error statuses are not retried: the caller names them."""
    retrying = Retrying(
        retry=retry_if_exception_type((httpx.NetworkError, httpx.RemoteProtocolError)),
        stop=stop_after_attempt(POST_ATTEMPTS),
        wait=wait_exponential(multiplier=0.02, max=0.5),
        reraise=True,
    )
    return retrying(http.post, path, params=params, json=body)


class LlamaTokens:
    """Tokenise, detokenise and render chat templates through one llama.cpp server (thread-safe)."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http
        self._lock = threading.Lock()
        self._prompts: OrderedDict[Any, tuple[int, ...]] = OrderedDict()
        self._texts: dict[int, str] = {}  # token id -> its text

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the server; an :class:`EngineError` names the path on failure."""
        try:
            r = post_local(self._http, path, body)
        except httpx.HTTPError as e:
            raise EngineError(f"embedded engine: {path} failed: {e}") from e
        if r.status_code != 200:
            raise EngineError(f"embedded engine: {path} returned {r.status_code}: {r.text[:300]}")
        return r.json()

    def _cached(self, key: Any, make: Callable[[], Iterable[int]]) -> tuple[int, ...]:
        with self._lock:
            hit = self._prompts.get(key)
            if hit is not None:
                self._prompts.move_to_end(key)
                return hit
        ids = tuple(make())
        with self._lock:
            self._prompts[key] = ids
            while len(self._prompts) > _CACHE_SIZE:
                self._prompts.popitem(last=False)
        return ids

    def tokenize(self, text: str, *, special: bool = False) -> tuple[int, ...]:
        """Token ids of ``text``; ``special`` adds BOS (if the model wants one) and parses special
        tokens such as ``<|im_start|>`` (how llama.cpp tokenises a rendered prompt)."""
        return self._cached(
            ("tok", special, text),
            lambda: self.post("/tokenize", {"content": text, "add_special": special,
                                            "parse_special": special})["tokens"],
        )

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self.post("/detokenize", {"tokens": list(ids)})["content"])

    def render_chat(self, messages: Sequence[Any]) -> str:
        """The chat template applied to ``messages`` with the assistant generation prompt."""
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        return str(self.post("/apply-template", {"messages": msgs})["prompt"])

    def prompt_ids(self, req: GenerationRequest) -> tuple[int, ...]:
        """The token ids the backend is given for ``req`` (template + prefix)."""
        if req.raw_prompt is not None:
            base = self.tokenize(req.raw_prompt, special=True)
        else:
            key = ("chat", tuple((m["role"], m["content"]) for m in req.messages))
            base = self._cached(key, lambda: self.tokenize(self.render_chat(req.messages), special=True))
        if req.prefix_token_ids is not None:
            return base + tuple(req.prefix_token_ids)
        if req.prefix:
            return base + self.tokenize(req.prefix)
        return base

    def token_text(self, token: int) -> str:
        """The text of one token id (cached)."""
        with self._lock:
            text = self._texts.get(token)
        if text is None:
            text = self.detokenize([token])
            with self._lock:
                self._texts[token] = text
        return text

    def ends_with_stop(self, ids: Sequence[int], stop: Sequence[str]) -> bool:
        """Whether one of ``stop`` occurs in the text of the last few of ``ids`` (llama.cpp streams
        the token holding a stop string but blanks its text); ``False`` when that text is unknown."""
        try:
            tail = "".join(self.token_text(i) for i in ids[-4:])
        except EngineError:
            return False
        return any(s in tail for s in stop)
