"""The thinking block of a reasoning model as budget forcing continues it
(:mod:`ttscale.strategies.budget_forcing`): :class:`Transcript`, the assistant message so far with
its exact token ids; :class:`Thinking`, what happened in the thinking phase; the continuation
request; and the answer candidate built from the transcript.

Continuation and tokens: when the engine accepts token ids and can ``tokenize``/``detokenize`` (the
embedded engine), every request passes ``prefix_token_ids``: the concatenated token ids of what the
model generated so far, plus the ids of the text the strategy inserted (the opening, "Wait", the
forced close), so text the model produced is never re-tokenised. A stop string trims the text but
not the token that holds it (llama.cpp), and the end-of-turn token is not text either, so a
segment's ids are cut to the longest run that decodes to exactly its text; only when the delimiter
starts inside a token is that token's share of the text re-tokenised (counted in
``retokenised_chars``). When thinking ends naturally on the model's own delimiter token, its ids
are kept as produced. Other engines get ``prefix`` text.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ttscale.core.context import Context
from ttscale.core.protocols import tokenizing_engine
from ttscale.core.types import Candidate, Completion, GenerationRequest

_SEARCH_BACK = 8
"""How many trailing tokens of a segment may hold the stop string or the end-of-turn token."""


class Transcript:
    """The assistant message so far: its text and, when the engine takes token ids, its exact ids
    (the model's own ids for what it generated, the tokenised text for what was inserted)."""

    def __init__(self, ctx: Context) -> None:
        eng = ctx.engine
        self.engine = eng
        self.tokenizer = tokenizing_engine(eng)
        use = self.tokenizer is not None
        self.text = ""
        self.ids: list[int] | None = [] if use else None
        self.retokenised_chars = 0
        self._lead: tuple[int, ...] | None = None

    async def _tokenize(self, text: str) -> list[int]:
        """Ids of inserted text, special tokens parsed (``<think>`` is one token for Qwen3), without
        the BOS that ``special`` adds for models that want one."""
        assert self.tokenizer is not None
        tok = self.tokenizer.tokenize
        if self._lead is None:
            self._lead = tuple(await asyncio.to_thread(tok, "", special=True))
        ids = tuple(await asyncio.to_thread(tok, text, special=True))
        return list(ids[len(self._lead):] if ids[: len(self._lead)] == self._lead else ids)

    async def _detok(self, ids: tuple[int, ...]) -> str:
        assert self.tokenizer is not None
        return str(await asyncio.to_thread(self.tokenizer.detokenize, ids))

    def request_prefix(self) -> tuple[str, tuple[int, ...] | None]:
        return self.text, (tuple(self.ids) if self.ids else None)

    async def add_text(self, text: str) -> None:
        """Append text this strategy inserts."""
        self.text += text
        if self.ids is not None and text:
            self.ids += await self._tokenize(text)

    async def add_model(self, c: Completion, keep: str | None = None) -> bool:
        """Append what the model generated in ``c``. With ``keep`` (the stop string), when the
        model's own tokens hold it right after the text, keep them (and the text they decode to)
        and return True; otherwise the text alone is appended and the result is False."""
        if self.ids is None:
            self.text += c.text
            return False
        if c.token_ids is None:  # ids unknown: the engine tokenises the text from now on
            self.ids = None
            self.text += c.text
            return False
        ids = tuple(c.token_ids)
        full = await self._detok(ids) if ids else ""
        if keep is not None and full.startswith(c.text + keep):
            self.text += full
            self.ids += ids
            return True
        decoded = full
        m = len(ids)
        while m > 0 and not c.text.startswith(decoded) and len(ids) - m < _SEARCH_BACK:
            m -= 1
            decoded = await self._detok(ids[:m]) if m else ""
        if not c.text.startswith(decoded):
            m, decoded = 0, ""
        rest = c.text[len(decoded):]
        self.text += c.text
        self.ids += ids[:m]
        if rest:
            self.retokenised_chars += len(rest)
            self.ids += await self._tokenize(rest)
        return False


@dataclass
class Thinking:
    """The thinking phase so far: tokens thought, "Wait"s inserted, whether the cap closed it,
    whether the budget ran out, and per request its tokens, finish reason and what followed
    (``then``: ``wait``, ``answer`` or ``cap``)."""

    tokens: int = 0
    waits: int = 0
    capped: bool = False
    exhausted: bool = False
    segments: list[dict[str, Any]] = field(default_factory=list)

    def segment(self, c: Completion) -> dict[str, Any]:
        """Count a thinking segment; its record, to which the caller adds ``then``."""
        self.tokens += c.completion_tokens
        seg: dict[str, Any] = {"tokens": c.completion_tokens, "finish": c.finish_reason}
        self.segments.append(seg)
        return seg


def continuation(ctx: Context, tr: Transcript, *, temperature: float, top_p: float, max_tokens: int,
                 stop: tuple[str, ...]) -> GenerationRequest:
    """A request continuing the assistant message ``tr`` (its text, and its ids when known)."""
    text, ids = tr.request_prefix()
    return GenerationRequest(messages=ctx.messages(), prefix=text, prefix_token_ids=ids,
                             temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop)


def answer_candidate(ctx: Context, tr: Transcript, thinking: Thinking, answer: Completion | None,
                     think_close: str) -> Candidate:
    """The one candidate: the whole assistant message (opening included) and the answer phase, with
    all generated tokens. With nothing after the thinking (the budget, or an immediate end of turn)
    the answer is read from the thinking alone, without the delimiter text that follows it."""
    thought = tr.text  # the answer phase is not added to the transcript
    answer_tokens = answer.completion_tokens if answer is not None else 0
    final = answer or Completion(text="", finish_reason="budget")
    cand = ctx.to_candidate(final, prefix=tr.text)
    if final.answer_hint is None and not final.text.strip():
        cut = thought.rfind(think_close)
        cand = cand.with_(answer=ctx.answers.extract(thought[:cut] if cut >= 0 else thought))
    ids = tuple(tr.ids) + tuple(final.token_ids or ()) if tr.ids is not None else None
    return cand.with_(completion_tokens=thinking.tokens + answer_tokens, token_ids=ids,
                      extra={"thinking_tokens": thinking.tokens, "answer_tokens": answer_tokens,
                             "waits": thinking.waits})
