"""Reading a yes/no verdict from a model: from the first token's logprobs, or from the text.

Used by every judge that asks a model a yes/no question (the ``llm_judge`` verifier, DeepPrune's
equivalence judge), so that "yes" means the same everywhere.
"""

from __future__ import annotations

import math
import re

from ttscale.core.types import TokenLogprob

_STRIP = " \t\n\r\u0120\u2581.,:;!*\"'`()[]"  # spaces, BPE/SentencePiece space marks, punctuation
_WORD_RE = re.compile(r"\b(yes|no|incorrect|correct)\b", re.IGNORECASE)


def _token_word(token: str) -> str:
    return token.strip(_STRIP).lower()


def yes_probability(first: TokenLogprob) -> float | None:
    """``P(yes) / (P(yes) + P(no))`` from one position's top-k logprobs (plus the sampled token),
    summing variants such as "Yes", " yes", "YES"; None when neither word is there."""
    seen: dict[str, float] = {tok: lp for tok, lp in first.top}
    seen.setdefault(first.token, first.logprob)
    p_yes = p_no = 0.0
    for tok, lp in seen.items():
        if lp is None or lp != lp:
            continue
        w = _token_word(tok)
        if w == "yes":
            p_yes += math.exp(lp)
        elif w == "no":
            p_no += math.exp(lp)
    if p_yes + p_no <= 0.0:
        return None
    return p_yes / (p_yes + p_no)


def parse_yes_no(text: str) -> float:
    """1.0 for a yes (or "correct"), 0.0 for a no (or "incorrect"), 0.5 when neither is found.
    Thinking before ``</think>`` is ignored; the first verdict word after it counts."""
    cut = text.rfind("</think>")
    if cut >= 0:
        text = text[cut + len("</think>"):]
    elif "<think>" in text:
        return 0.5  # the judge never finished thinking
    m = _WORD_RE.search(text)
    if not m:
        return 0.5
    return 1.0 if m.group(1).lower() in ("yes", "correct") else 0.0
