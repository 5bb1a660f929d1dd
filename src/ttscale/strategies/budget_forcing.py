"""Budget forcing (s1, Muennighoff et al. 2025): control how long a reasoning model thinks.

The model thinks inside a thinking block (``<think>`` … ``</think>`` by default; ``think_open`` and
``think_close`` set others, e.g. s1's ``<|im_start|>think`` / ``<|im_start|>answer``). One sample is
generated in segments, each a continuation of the assistant message so far::

    open the thinking block (`open_thinking`)
    repeat:
        think until `think_close`, with max_tokens = the thinking budget left
            (`max_thinking_tokens` minus the thinking tokens so far: thinking never exceeds it)
        at the cap (finish "length"): append `cap_prompt` ("\\n</think>\\n\\nFinal Answer:"), stop thinking
        thinking ended (the delimiter, or the end of the turn) with fewer than `min_thinking_tokens`
            thought and fewer than `waits` "Wait"s inserted: suppress the end, append `wait_prompt`
            ("Wait") and think on
        otherwise: close the block (the model's own delimiter, or ours after an end of turn), stop
    answer after the close or "Final Answer:", with its own cap `max_answer_tokens`

With ``min_thinking_tokens`` unset (the default) the minimum is the maximum, so the model's end of
thinking is ignored exactly ``waits`` times (s1's NUM_IGNORE) unless the cap comes first.

Models that do not think natively (the embedded default Qwen2.5-Coder, SmolLM2): the assistant
message is opened with ``think_open`` as a prefix (``open_thinking``, on by default), so the same
control flow works: the model writes its reasoning inside the opened block and usually ends its turn
instead of writing ``</think>``; an end of turn counts as an end of thinking. Turn ``open_thinking``
off for models whose chat template already opens the block (DeepSeek-R1 style); native thinkers that
open it themselves (Qwen3) work either way. Continuation by exact token ids where the engine takes
them: :mod:`ttscale.strategies.thinking`.

Budget: every request goes through ``ctx.generate`` (clipped to the budget). When it is spent the
strategy stops and answers from the text produced so far. One candidate, whose ``text`` is the whole
assistant message (opening included) and ``completion_tokens`` all generated tokens;
``extra`` holds ``thinking_tokens``, ``answer_tokens``, ``waits``, ``capped`` and ``segments``
(per request: tokens, finish reason and what followed: ``wait``, ``answer`` or ``cap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import check_template, param
from ttscale.core.types import Completion, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.thinking import Thinking, Transcript, answer_candidate, continuation

__all__ = ["CAP_PROMPT", "WAIT_PROMPT", "BudgetForcingParams", "Transcript", "budget_forcing", "think"]

WAIT_PROMPT = "\nWait"
"""Default text that replaces a suppressed end of thinking (s1: "Wait"). No placeholders."""

CAP_PROMPT = "\n{close}\n\nFinal Answer:"
"""Default text that closes thinking at the cap: ``{close}`` = ``think_close``."""


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


async def think(ctx: Context, tr: Transcript, p: BudgetForcingParams) -> Thinking:
    """The thinking phase: segments until the model ends its thinking late enough, or the cap."""
    min_think = p.max_thinking_tokens if p.min_thinking_tokens is None else p.min_thinking_tokens
    th = Thinking()
    while True:
        req = continuation(ctx, tr, temperature=p.temperature, top_p=p.top_p,
                           max_tokens=p.max_thinking_tokens - th.tokens, stop=(p.think_close,))
        try:
            (c,) = await ctx.generate(req)
        except BudgetExhausted:
            th.exhausted = True
            return th
        seg = th.segment(c)
        if c.finish_reason == "length":  # at the cap (or a budget-clipped one): close by force
            await tr.add_model(c)
            await tr.add_text(p.cap_prompt.format(close=p.think_close))
            seg["then"], th.capped = "cap", True
            return th
        if th.waits < p.waits and th.tokens < min_think:  # ended too early: suppress the end, "Wait"
            await tr.add_model(c)
            await tr.add_text(p.wait_prompt)
            seg["then"], th.waits = "wait", th.waits + 1
            continue
        if not await tr.add_model(c, keep=p.think_close):  # ended: the model's own close, else ours
            await tr.add_text(p.think_close)
        seg["then"] = "answer"
        return th


@strategy("budget_forcing", BudgetForcingParams, "s1 budget forcing: min/max thinking tokens, Wait, forced answer")
async def budget_forcing(problem: Problem, ctx: Context, p: BudgetForcingParams) -> Outcome:
    tr = Transcript(ctx)
    if p.open_thinking:
        await tr.add_text(p.think_open)
    th = await think(ctx, tr, p)
    exhausted = th.exhausted
    answer: Completion | None = None
    if not exhausted:
        try:
            (answer,) = await ctx.generate(continuation(ctx, tr, temperature=p.temperature, top_p=p.top_p,
                                                        max_tokens=p.max_answer_tokens, stop=()))
        except BudgetExhausted:
            exhausted = True
    cand = answer_candidate(ctx, tr, th, answer, p.think_close)
    extra: dict[str, Any] = {
        "thinking_tokens": th.tokens, "answer_tokens": cand.extra["answer_tokens"], "waits": th.waits,
        "capped": th.capped, "segments": th.segments, "token_ids": tr.ids is not None,
        "retokenised_chars": tr.retokenised_chars, "stopped_by_budget": exhausted,
    }
    return Outcome(cand.answer, cand, [cand], extra)
