"""Response bodies in OpenAI's shapes: the JSON of a finished request (choices, logprobs, usage
with ttscale's breakdown) and the pieces of an SSE stream."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ttscale.core.types import Cost, TokenLogprob
from ttscale.serve.jobs import Answer, Choice
from ttscale.serve.plan import Plan

DONE = "data: [DONE]\n\n"


def usage_fields(cost: Cost) -> dict[str, Any]:
    """OpenAI's ``usage`` (policy and verifier tokens together) and ttscale's ``ttscale_usage``."""
    prompt = cost.prompt_tokens + cost.verifier_prompt_tokens
    completion = cost.generated_tokens + cost.verifier_generated_tokens
    return {
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "ttscale_usage": {**cost.to_dict(), "total_tokens": cost.total_tokens},
    }


def _chat_logprobs(lps: Sequence[TokenLogprob], k: int) -> dict[str, Any]:
    def tok(t: str, lp: float) -> dict[str, Any]:
        return {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}

    return {"content": [{**tok(t.token, t.logprob), "top_logprobs": [tok(a, b) for a, b in t.top[:k]]}
                        for t in lps], "refusal": None}


def _completion_logprobs(lps: Sequence[TokenLogprob], k: int) -> dict[str, Any]:
    offsets, pos = [], 0
    for t in lps:
        offsets.append(pos)
        pos += len(t.token)
    return {"tokens": [t.token for t in lps], "token_logprobs": [t.logprob for t in lps],
            "top_logprobs": [dict(t.top[:k]) for t in lps], "text_offset": offsets}


def choice_logprobs(plan: Plan, c: Choice) -> dict[str, Any] | None:
    """A choice's logprobs in the chat or the completions format (None unless requested)."""
    if not plan.logprobs or c.logprobs is None:
        return None
    if plan.kind == "chat":
        return _chat_logprobs(c.logprobs, plan.logprobs)
    return _completion_logprobs(c.logprobs, plan.logprobs)


def render_json(plan: Plan, ans: Answer, created: int) -> dict[str, Any]:
    """The body of a non-streaming response."""
    choices = []
    for i, c in enumerate(ans.choices):
        if plan.kind == "chat":
            choices.append({"index": i, "message": {"role": "assistant", "content": c.text, "refusal": None},
                            "logprobs": choice_logprobs(plan, c), "finish_reason": c.finish_reason})
        else:
            choices.append({"index": i, "text": c.text, "logprobs": choice_logprobs(plan, c),
                            "finish_reason": c.finish_reason})
    return {
        "id": plan.id,
        "object": "chat.completion" if plan.kind == "chat" else "text_completion",
        "created": created,
        "model": plan.model,
        "system_fingerprint": None,
        "choices": choices,
        **usage_fields(ans.cost),
        "ttscale": ans.info,
    }


def text_pieces(text: str) -> list[str]:
    """Split a text into word-sized stream deltas that concatenate back to it."""
    pieces = re.findall(r"\s*\S+|\s+$", text)
    return pieces if "".join(pieces) == text else [text]


def sse(obj: Any) -> str:
    """One server-sent event carrying ``obj`` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
