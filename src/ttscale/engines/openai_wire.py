"""The OpenAI wire format for the ``openai`` engine: request bodies out, responses in.

No I/O here (:mod:`ttscale.engines.openai_http` sends, :mod:`ttscale.engines.openai` decides what
to send). See :mod:`ttscale.engines.openai` for the rules on endpoints, continuation, logprobs and
usage; this module implements them:

- :func:`request_body` builds a ``/chat/completions`` or ``/completions`` body (a continuation's
  prefix as a trailing assistant message with vLLM's ``continue_final_message``, or appended to the
  raw prompt);
- :func:`parse_response` turns a non-streamed response into completions (usage split over the
  choices, prompt tokens charged on the first);
- :class:`StreamedSample` gathers one streamed (SSE) sample, stripping an echoed prefix and asking
  the request's monitor whether to stop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ttscale.core.errors import EngineError
from ttscale.core.types import Completion, FinishReason, GenerationRequest, TokenLogprob

Route = Literal["chat", "completions"]


def route_of(req: GenerationRequest, endpoint: Route) -> Route:
    """``completions`` for a raw prompt, else ``chat`` (an error when ``endpoint`` is completions)."""
    if req.raw_prompt is not None:
        return "completions"
    if endpoint == "completions":
        raise EngineError(
            "openai engine: endpoint=completions needs requests with a raw prompt; this request "
            "has chat messages only (use endpoint=chat to let the server apply the chat template)"
        )
    return "chat"


def path_of(route: Route) -> str:
    return "chat/completions" if route == "chat" else "completions"


def request_body(model: str, req: GenerationRequest, route: Route, n: int, seed: int | None,
                 extra: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body asking ``model`` for ``n`` samples of ``req``; ``extra`` is merged last."""
    body: dict[str, Any] = {
        "model": model,
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
    body.update(extra)
    return body


def finish_reason(reason: Any) -> FinishReason:
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


def split_usage(total: int | None, per_choice: Sequence[int | None], lp_counts: Sequence[int | None]) -> list[int]:
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


def strip_prefix(text: str, prefix: str) -> str:
    if prefix and text.startswith(prefix):
        return text[len(prefix):]
    return text


def _cached(usage: Mapping[str, Any]) -> int:
    return int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)


def _token_ids(lp: Sequence[TokenLogprob] | None) -> tuple[int, ...] | None:
    if lp and all(t.token_id is not None for t in lp):
        return tuple(t.token_id for t in lp)  # type: ignore[misc]
    return None


@dataclass
class Parsed:
    """A response's completions; ``unsplittable``: llama.cpp answered ``n > 1`` without logprobs,
    so the per-choice token counts are unknowable (ask one sample per request from then on)."""

    completions: list[Completion]
    unsplittable: bool


def parse_response(data: dict[str, Any], req: GenerationRequest, route: Route) -> Parsed:
    """Completions from a non-streamed response (see the module docstring)."""
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    usage = data.get("usage") or {}
    texts, lps, finishes, per_choice = [], [], [], []
    for ch in choices:
        if route == "chat":
            text = (ch.get("message") or {}).get("content") or ""
            text = strip_prefix(text, req.prefix)
        else:
            text = ch.get("text") or ""
        texts.append(text)
        lps.append(parse_logprobs(ch.get("logprobs")))
        finishes.append(finish_reason(ch.get("finish_reason")))
        cu = ch.get("usage") if isinstance(ch.get("usage"), Mapping) else {}
        per_choice.append(cu.get("completion_tokens") if isinstance(cu.get("completion_tokens"), int) else None)
    total = usage.get("completion_tokens")
    counts = split_usage(total if isinstance(total, int) else None, per_choice,
                         [len(lp) if lp is not None else None for lp in lps])
    # llama.cpp (it sends ``timings``) reports one choice's usage for n > 1
    unsplittable = "timings" in data and len(choices) > 1 and any(lp is None for lp in lps)
    prompt = int(usage.get("prompt_tokens") or 0)
    cached = _cached(usage)
    out = []
    for i, text in enumerate(texts):
        lp = lps[i]
        out.append(Completion(
            text=text,
            finish_reason=finishes[i],
            completion_tokens=counts[i],
            prompt_tokens=prompt if i == 0 else 0,
            token_ids=_token_ids(lp),  # type: ignore[arg-type]
            logprobs=lp if req.logprobs or lp else None,
            cached_prompt_tokens=cached if i == 0 else 0,
        ))
    return Parsed(out, unsplittable)


class StreamedSample:
    """One streamed sample, fed the SSE ``data:`` lines as they come; :meth:`feed` says when to
    stop reading (``[DONE]``, or the monitor returned True)."""

    def __init__(self, req: GenerationRequest, route: Route) -> None:
        assert req.monitor is not None
        self.req = req
        self.route = route
        self.monitor = req.monitor
        self.raw = ""
        self.tokens: list[TokenLogprob] = []
        self.chunks = 0
        self.finish: FinishReason = "stop"
        self.usage: Mapping[str, Any] = {}
        self.cancelled = False
        # does the server repeat the prefix? (llama.cpp streams do not); None: not known yet
        self.echo: bool | None = None if (route == "chat" and req.prefix) else False

    def feed(self, line: str) -> bool:
        """Take one line of the event stream; True when the stream should be closed."""
        if not line.startswith("data:"):
            return False
        payload = line[5:].strip()
        if payload == "[DONE]":
            return True
        try:
            obj = json.loads(payload)
        except ValueError:
            return False
        if isinstance(obj.get("usage"), Mapping):
            self.usage = obj["usage"]
        for ch in obj.get("choices") or []:
            if self._choice(ch):
                self.cancelled = True
                return True
        return False

    def _choice(self, ch: Mapping[str, Any]) -> bool:
        prefix = self.req.prefix
        piece = (ch.get("delta") or {}).get("content") if self.route == "chat" else ch.get("text")
        piece = piece or ""
        lp = parse_logprobs(ch.get("logprobs"))
        if ch.get("finish_reason"):
            self.finish = finish_reason(ch["finish_reason"])
        if not piece and not lp:
            return False
        self.raw += piece
        if self.echo is None:
            if self.raw.startswith(prefix):
                self.echo = True
            elif not prefix.startswith(self.raw):
                self.echo = False
        if lp:
            self.tokens.extend(lp)
        self.chunks += 1
        if self.echo is None:
            return False
        return bool(self.monitor(tuple(self.tokens), self.text))

    @property
    def text(self) -> str:
        return self.raw[len(self.req.prefix):] if self.echo else self.raw

    def completion(self) -> Completion:
        n_tok = len(self.tokens) if self.tokens else self.chunks
        if not self.cancelled and isinstance(self.usage.get("completion_tokens"), int):
            n_tok = max(n_tok, int(self.usage["completion_tokens"]))
        return Completion(
            text=self.text,
            finish_reason="cancelled" if self.cancelled else self.finish,
            completion_tokens=n_tok,
            prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
            token_ids=_token_ids(self.tokens),  # type: ignore[arg-type]
            logprobs=tuple(self.tokens) if self.tokens else None,
            cached_prompt_tokens=_cached(self.usage),
        )
