"""Budget forcing (s1, Muennighoff et al. 2025): control how long a reasoning model thinks.

The model thinks inside a thinking block (``<think>`` … ``</think>`` by default; ``think_open`` and
``think_close`` set others, e.g. s1's ``<|im_start|>think`` / ``<|im_start|>answer``). One sample is
generated in segments, each a continuation of the assistant message so far:

1. Thinking segments stop at ``think_close``; each gets ``max_tokens`` = the thinking budget left
   (``max_thinking_tokens`` minus the thinking tokens the engine has reported so far), so thinking
   never exceeds the maximum.
2. When the model ends its thinking (the close delimiter, or the end of its turn) while it has
   thought fewer than ``min_thinking_tokens`` tokens and fewer than ``waits`` "Wait"s were inserted,
   the delimiter is suppressed: ``wait_prompt`` ("Wait") is appended and thinking goes on. With
   ``min_thinking_tokens`` unset (the default) the minimum is the maximum, so the model's end of
   thinking is ignored exactly ``waits`` times (s1's NUM_IGNORE) unless the cap comes first.
3. When a segment hits the cap (``finish_reason == "length"``), thinking is closed by force:
   ``cap_prompt`` ("\\n</think>\\n\\nFinal Answer:") is appended.
4. The answer phase continues after ``think_close`` (the model's own, or ours when it ended its turn)
   or after "Final Answer:", with its own cap ``max_answer_tokens``.

Models that do not think natively (the embedded default Qwen2.5-Coder, SmolLM2): the assistant
message is opened with ``think_open`` as a prefix (``open_thinking``, on by default), so the same
control flow works: the model writes its reasoning inside the opened block and usually ends its turn
instead of writing ``</think>``; an end of turn counts as an end of thinking. Turn ``open_thinking``
off for models whose chat template already opens the block (DeepSeek-R1 style); native thinkers that
open it themselves (Qwen3) work either way.

Continuation and tokens: when the engine accepts token ids and can ``tokenize``/``detokenize`` (the
embedded engine), every request passes ``prefix_token_ids``: the concatenated token ids of what the
model generated so far, plus the ids of the text this strategy inserted (the opening, "Wait",
the forced close), so text the model produced is never re-tokenised. A stop string trims the text
but not the token that holds it (llama.cpp), and the end-of-turn token is not text either, so a
segment's ids are cut to the longest run that decodes to exactly its text; only when the delimiter
starts inside a token is that token's share of the text re-tokenised (counted in
``extra["retokenised_chars"]``). When thinking ends naturally on the model's own delimiter token,
its ids are kept as produced. Other engines get ``prefix`` text.

Budget: every request goes through ``ctx.generate`` (clipped to the budget). When it is spent the
strategy stops and answers from the text produced so far. One candidate, whose ``text`` is the whole
assistant message (opening included) and ``completion_tokens`` all generated tokens;
``extra`` holds ``thinking_tokens``, ``answer_tokens``, ``waits``, ``capped`` and ``segments``
(per request: tokens, finish reason and what followed: ``wait``, ``answer`` or ``cap``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.protocols import tokenizing_engine
from ttscale.core.registry import check_template, param
from ttscale.core.types import Completion, GenerationRequest, Problem
from ttscale.strategies.base import Outcome, strategy

WAIT_PROMPT = "\nWait"
"""Default text that replaces a suppressed end of thinking (s1: "Wait"). No placeholders."""

CAP_PROMPT = "\n{close}\n\nFinal Answer:"
"""Default text that closes thinking at the cap: ``{close}`` = ``think_close``."""

_SEARCH_BACK = 8
"""How many trailing tokens of a segment may hold the stop string or the end-of-turn token."""


@dataclass(frozen=True)
class BudgetForcingParams:
    max_thinking_tokens: int = param(1024, "cap on thinking tokens (over all thinking segments)")
    min_thinking_tokens: int | None = param(None, "insert Wait only below this many thinking tokens (None = the cap)")
    waits: int = param(2, "max number of Wait insertions (s1's NUM_IGNORE)")
    max_answer_tokens: int = param(256, "cap on tokens of the answer after the thinking")
    temperature: float = param(0.0, "sampling temperature (s1 decodes greedily)")
    top_p: float = param(1.0, "nucleus sampling")
    think_open: str = param("<think>\n", "text that opens the thinking block")
    think_close: str = param("</think>", "end-of-thinking delimiter (the stop string of thinking segments)")
    open_thinking: bool = param(True, "open the assistant message with think_open (for models that do not think natively)")
    wait_prompt: str = param(WAIT_PROMPT, "text appended instead of a suppressed end of thinking")
    cap_prompt: str = param(CAP_PROMPT, "text appended at the thinking cap, with {close}")

    def __post_init__(self) -> None:
        for name in ("max_thinking_tokens", "max_answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.waits < 0:
            raise ValueError(f"waits must be >= 0, got {self.waits}")
        m = self.min_thinking_tokens
        if m is not None and not 0 <= m <= self.max_thinking_tokens:
            raise ValueError(f"min_thinking_tokens={m} must be between 0 and max_thinking_tokens="
                             f"{self.max_thinking_tokens}")
        if not self.think_close:
            raise ValueError("think_close must not be empty (it is the stop string of thinking)")
        if not self.wait_prompt:
            raise ValueError("wait_prompt must not be empty")
        check_template("cap_prompt", self.cap_prompt, ("close",))


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


@strategy("budget_forcing", BudgetForcingParams, "s1 budget forcing: min/max thinking tokens, Wait, forced answer")
async def budget_forcing(problem: Problem, ctx: Context, p: BudgetForcingParams) -> Outcome:
    tr = Transcript(ctx)
    if p.open_thinking:
        await tr.add_text(p.think_open)
    min_think = p.max_thinking_tokens if p.min_thinking_tokens is None else p.min_thinking_tokens
    thinking = answer_tokens = waits = 0
    capped = exhausted = False
    segments: list[dict[str, Any]] = []

    def request(max_tokens: int, stop: tuple[str, ...]) -> GenerationRequest:
        text, ids = tr.request_prefix()
        return GenerationRequest(messages=ctx.messages(), prefix=text, prefix_token_ids=ids,
                                 temperature=p.temperature, top_p=p.top_p, max_tokens=max_tokens, stop=stop)

    while True:
        room = p.max_thinking_tokens - thinking
        try:
            (c,) = await ctx.generate(request(room, (p.think_close,)))
        except BudgetExhausted:
            exhausted = True
            break
        thinking += c.completion_tokens
        seg: dict[str, Any] = {"tokens": c.completion_tokens, "finish": c.finish_reason}
        segments.append(seg)
        if c.finish_reason == "length":  # the thinking cap (or a budget-clipped cap)
            await tr.add_model(c)
            await tr.add_text(p.cap_prompt.format(close=p.think_close))
            seg["then"] = "cap"
            capped = True
            break
        if waits < p.waits and thinking < min_think:
            await tr.add_model(c)
            await tr.add_text(p.wait_prompt)
            waits += 1
            seg["then"] = "wait"
            continue
        if not await tr.add_model(c, keep=p.think_close):
            await tr.add_text(p.think_close)
        seg["then"] = "answer"
        break

    thought = tr.text  # before the answer phase (the close or the cap text included)
    answer: Completion | None = None
    if not exhausted:
        try:
            (answer,) = await ctx.generate(request(p.max_answer_tokens, ()))
            answer_tokens = answer.completion_tokens
        except BudgetExhausted:
            exhausted = True
    final = answer or Completion(text="", finish_reason="budget")
    cand = ctx.to_candidate(final, prefix=tr.text)
    if final.answer_hint is None and not final.text.strip():
        # nothing after the thinking (the budget, or an immediate end of turn): answer from the
        # thinking alone, without the delimiter text that follows it
        cut = thought.rfind(p.think_close)
        cand = cand.with_(answer=ctx.answers.extract(thought[:cut] if cut >= 0 else thought))
    ids = tuple(tr.ids) + tuple(final.token_ids or ()) if tr.ids is not None else None
    cand = cand.with_(completion_tokens=thinking + answer_tokens, token_ids=ids,
                      extra={"thinking_tokens": thinking, "answer_tokens": answer_tokens, "waits": waits})
    extra: dict[str, Any] = {
        "thinking_tokens": thinking, "answer_tokens": answer_tokens, "waits": waits, "capped": capped,
        "segments": segments, "token_ids": tr.ids is not None, "retokenised_chars": tr.retokenised_chars,
        "stopped_by_budget": exhausted,
    }
    return Outcome(cand.answer, cand, [cand], extra)
