"""The embedded engine's streaming callback: llama.cpp's chunks into per-sample state, and that
state into a :class:`~ttscale.core.types.Completion`.

llama.cpp's ``handle_completions`` calls the callback on its worker thread for each streamed
chunk; returning ``True`` stops the generation at the next token. The callback stops it when the
awaiting task was cancelled (a ``threading.Event``), when the request's ``monitor`` says so or
raises (the exception is raised again by ``generate``), and on an error chunk. Token ids (and
logprobs) come from the chunks' ``logprobs`` (top-1 when the caller asked for none), so
``Completion.token_ids`` is always filled.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ttscale.core.types import Completion, GenerationRequest, StreamMonitor, TokenLogprob, TokenProgress


def cached_tokens(usage: dict[str, Any]) -> int:
    """Prompt tokens llama.cpp served from a slot's KV cache, from a response's ``usage``."""
    details = usage.get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens", 0) or 0)


@dataclass
class Stream:
    """What one streamed sample has produced so far (written by the backend's callback thread)."""

    cancel: threading.Event
    tokens: list[TokenLogprob] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    failure: BaseException | None = None
    cancelled: bool = False


def set_error(streams: Sequence[Stream], err: Any) -> None:
    """Record llama.cpp's error (an object with a ``message``, or anything) on every stream."""
    msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    for st in streams:
        st.error = msg


class ChunkSink:
    """The ``handle_completions`` callback for one backend request: fills ``streams`` (one per
    choice ``index``; several with native ``n``) and says when to stop. ``monitor`` runs only
    with a single stream; ``top_k`` alternatives are kept per token. ``on_tokens`` (the request's
    live progress hook) hears of every sample's new tokens and of its end; its errors are ignored."""

    def __init__(self, streams: Sequence[Stream], monitor: StreamMonitor | None, top_k: int,
                 on_tokens: TokenProgress | None = None) -> None:
        self.streams = streams
        self.monitor = monitor
        self.top_k = top_k
        self.on_tokens = on_tokens
        self.cancel = streams[0].cancel

    def __call__(self, chunk: Any) -> bool:
        if not isinstance(chunk, dict):
            return self.cancel.is_set()
        if "error" in chunk:
            set_error(self.streams, chunk["error"])
            return True
        st, new = self._take(chunk)
        if self.cancel.is_set():
            for s in self.streams:
                s.cancelled = s.finish is None
            return True
        if self.monitor is not None and new and st.finish is None:
            try:
                stop = self.monitor(st.tokens, st.text)
            except BaseException as e:  # raised again in the awaiting task
                st.failure = e
                return True
            if stop:
                st.cancelled = True
                return True
        return False

    def _take(self, chunk: dict[str, Any]) -> tuple[Stream, int]:
        """Append the chunk's tokens and text to their streams; the last stream touched and the
        number of new tokens."""
        new = 0
        st = self.streams[0]
        k = self.top_k
        for ch in chunk.get("choices") or ():
            st = self.streams[int(ch.get("index") or 0) % len(self.streams)]
            before = len(st.ids)
            lp = ch.get("logprobs") or {}
            for item in lp.get("content") or ():
                top = tuple((t["token"], float(t["logprob"])) for t in (item.get("top_logprobs") or ())[:k])
                st.tokens.append(TokenLogprob(item["token"], float(item["logprob"]), int(item["id"]), top))
                st.ids.append(int(item["id"]))
                new += 1
            st.text += ch.get("text") or ""
            if ch.get("finish_reason"):
                st.finish = ch["finish_reason"]
            self._progress(len(st.ids) - before, bool(ch.get("finish_reason")))
        if chunk.get("usage"):
            st.usage = chunk["usage"]
        return st, new

    def _progress(self, new: int, finished: bool) -> None:
        if self.on_tokens is not None and (new or finished):
            try:
                self.on_tokens(new, finished)
            except Exception:  # a progress display must never stop generation
                pass


def to_completion(st: Stream, req: GenerationRequest, prompt: tuple[int, ...], *, shared: bool) -> Completion:
    """The finished sample; ``shared``: a native-``n`` sibling, whose prompt was copied from the
    first sample's KV cache rather than decoded again."""
    usage = st.usage or {}
    if st.cancelled:
        finish = "cancelled"
    elif st.finish == "length":
        finish = "length"
    else:
        finish = "stop"
    return Completion(
        text=st.text,
        finish_reason=finish,  # type: ignore[arg-type]
        completion_tokens=len(st.ids) if st.cancelled or not usage else int(usage.get("completion_tokens", len(st.ids))),
        prompt_tokens=int(usage.get("prompt_tokens", len(prompt))),
        token_ids=tuple(st.ids),
        logprobs=tuple(st.tokens) if req.logprobs else None,
        cached_prompt_tokens=len(prompt) if shared else cached_tokens(usage),
    )
