"""Sample, Scrutinize and Scale (Zhao et al. 2025): self-verification votes, pairwise tie-breaks.

1. Sample ``k`` solutions (one policy request, clipped to the budget).
2. Ask the *policy model itself* ``k_verif`` times per solution whether it is correct
   (``verify_prompt``, one request of ``n=k_verif`` samples at ``verify_temperature``); each reply
   is parsed into a vote in [0, 1] by :func:`parse_verdict`. A solution's score is the mean of its
   votes; a reply with no readable verdict counts as 0.5 (undecided).
3. The solutions within ``tie_margin`` of the best score (at most ``max_tied``, best first) are
   compared pairwise, ``k_tie`` times per pair (``compare_prompt``; the order of the two alternates
   between comparisons against position bias). Pairs whose final answers are equivalent are not
   compared (they cannot disagree). The winner is the tied solution with the most pairwise wins,
   then the higher score, then the earlier sample.

All verification and comparison requests go through ``ctx.generate(..., role="verifier")``: they
are charged as verifier tokens (counted, not capped by the policy budget). Only step 1 spends
policy generations; when the budget is spent before any solution exists the answer is None.

Prompts (module constants, overridable with ``-p verify_prompt=...`` / ``-p compare_prompt=...``):
``verify_prompt`` uses ``{problem}`` and ``{solution}``; ``compare_prompt`` uses ``{problem}``,
``{a}`` and ``{b}``. The shared pieces (:data:`VERIFY_PROMPT`, :func:`parse_verdict`,
:func:`verify_votes`) are used by ``pessimistic_verification`` too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import check_template, param
from ttscale.core.types import Candidate, GenerationRequest, Problem
from ttscale.strategies.base import Outcome, strategy

VERIFY_PROMPT = (
    "Here is a problem and a proposed solution.\n\n"
    "Problem:\n{problem}\n\n"
    "Proposed solution:\n{solution}\n\n"
    "Check the solution carefully, step by step. Then end your reply with one line: "
    "\"Verdict: yes\" if the solution and its final answer are correct, or \"Verdict: no\" if not."
)
"""Self-verification prompt; placeholders ``{problem}``, ``{solution}``."""

COMPARE_PROMPT = (
    "Here is a problem and two proposed solutions.\n\n"
    "Problem:\n{problem}\n\n"
    "Solution A:\n{a}\n\n"
    "Solution B:\n{b}\n\n"
    "Compare the two carefully and decide which one is correct. End your reply with one line: "
    "\"Winner: A\" or \"Winner: B\"."
)
"""Pairwise comparison prompt; placeholders ``{problem}``, ``{a}``, ``{b}``."""

UNDECIDED = 0.5
"""The vote counted for a verification reply without a readable verdict."""

_VERDICT_RE = re.compile(r"verdict\W{0,4}(yes|no|correct|incorrect|true|false)\b", re.IGNORECASE)
_SCORE_RE = re.compile(r"\bscore\W{0,4}?[:=]\W{0,3}(\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?", re.IGNORECASE)
_WORD_RE = re.compile(r"\b(yes|no|incorrect|correct)\b", re.IGNORECASE)
_WINNER_RE = re.compile(r"(?i:winner)\W{0,4}(?:(?i:solution|response)\s+)?([AB])\b")
_NAMED_RE = re.compile(r"\b(?i:solution|response)\s+([AB])\b")
_POSITIVE = ("yes", "correct", "true")


def _after_thinking(text: str) -> str | None:
    cut = text.rfind("</think>")
    if cut >= 0:
        return text[cut + len("</think>"):]
    return None if "<think>" in text else text


def parse_verdict(text: str) -> float | None:
    """A verification reply as a vote in [0, 1], or None when it holds no verdict.

    In order: the last ``Verdict: yes/no`` (also correct/incorrect, true/false); else the last
    ``Score: x`` (``x/y`` divided by y; a bare x > 1 read as out of 10, or of 100 when > 10,
    clipped to [0, 1]); else the last standalone yes/no/correct/incorrect. Text before
    ``</think>`` is ignored; an unfinished ``<think>`` gives None."""
    body = _after_thinking(text)
    if body is None:
        return None
    found = list(_VERDICT_RE.finditer(body))
    if found:
        return 1.0 if found[-1].group(1).lower() in _POSITIVE else 0.0
    scores = list(_SCORE_RE.finditer(body))
    if scores:
        x = float(scores[-1].group(1))
        den = scores[-1].group(2)
        if den is not None:
            x = x / float(den) if float(den) > 0 else 0.0
        elif x > 10:
            x /= 100.0
        elif x > 1:
            x /= 10.0
        return max(0.0, min(1.0, x))
    words = list(_WORD_RE.finditer(body))
    if words:
        return 1.0 if words[-1].group(1).lower() in _POSITIVE else 0.0
    return None


def parse_winner(text: str) -> str | None:
    """``"A"`` or ``"B"`` from a comparison reply: the last ``Winner: X``, else the last
    "Solution X" / "Response X"; None when neither is found (the comparison casts no vote)."""
    body = _after_thinking(text)
    if body is None:
        return None
    found = list(_WINNER_RE.finditer(body)) or list(_NAMED_RE.finditer(body))
    return found[-1].group(1).upper() if found else None


def user(content: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": content},)


async def verify_votes(ctx: Context, cand: Candidate, k: int, *, prompt: str, temperature: float,
                       max_tokens: int) -> list[float | None]:
    """``k`` self-verification votes on one candidate (one verifier request with ``n=k``); None for
    a reply without a verdict."""
    req = GenerationRequest(messages=user(prompt.format(problem=ctx.problem.question, solution=cand.text)),
                            n=k, temperature=temperature, max_tokens=max_tokens)
    out = await ctx.generate(req, role="verifier")
    return [parse_verdict(c.text) for c in out]


def mean_vote(votes: Sequence[float | None]) -> float:
    """Mean of the votes, unreadable ones counted as :data:`UNDECIDED` (0.0 when there are none)."""
    vals = [UNDECIDED if v is None else v for v in votes]
    return sum(vals) / len(vals) if vals else 0.0


@dataclass(frozen=True)
class SelfVerifyParams:
    k: int = param(8, "number of sampled solutions (k_inf)")
    k_verif: int = param(4, "self-verification votes per solution")
    k_tie: int = param(2, "pairwise comparisons per pair of tied solutions (0 = no tie-break)")
    tie_margin: float = param(0.05, "solutions within this of the best score are tied")
    max_tied: int = param(4, "at most this many tied solutions (best first) are compared")
    temperature: float = param(0.7, "sampling temperature of the solutions")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per solution")
    verify_temperature: float = param(0.7, "temperature of the verification and comparison replies")
    verify_max_tokens: int = param(256, "max tokens per verification or comparison reply")
    verify_prompt: str = param(VERIFY_PROMPT, "verification prompt with {problem} and {solution}")
    compare_prompt: str = param(COMPARE_PROMPT, "comparison prompt with {problem}, {a} and {b}")

    def __post_init__(self) -> None:
        for name in ("k", "k_verif", "max_tokens", "verify_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k_tie < 0:
            raise ValueError(f"k_tie must be >= 0, got {self.k_tie}")
        if self.max_tied < 2:
            raise ValueError(f"max_tied must be >= 2, got {self.max_tied}")
        if not 0.0 <= self.tie_margin <= 1.0:
            raise ValueError(f"tie_margin must be in [0, 1], got {self.tie_margin}")
        check_template("verify_prompt", self.verify_prompt, ("problem", "solution"))
        check_template("compare_prompt", self.compare_prompt, ("problem", "a", "b"))


async def _compare(ctx: Context, p: SelfVerifyParams, first: Candidate, second: Candidate) -> Candidate | None:
    content = p.compare_prompt.format(problem=ctx.problem.question, a=first.text, b=second.text)
    req = GenerationRequest(messages=user(content), temperature=p.verify_temperature,
                            max_tokens=p.verify_max_tokens)
    out = await ctx.generate(req, role="verifier")
    w = parse_winner(out[0].text) if out else None
    return first if w == "A" else second if w == "B" else None


@strategy("self_verify", SelfVerifyParams,
          "Sample, Scrutinize and Scale: mean of self-verification votes, pairwise tie-breaks")
async def self_verify(problem: Problem, ctx: Context, p: SelfVerifyParams) -> Outcome:
    try:
        cands = await ctx.sample(p.k, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens)
    except BudgetExhausted:
        return Outcome(None, None, [], {"stopped_by_budget": True})
    votes = await asyncio.gather(*(
        verify_votes(ctx, c, p.k_verif, prompt=p.verify_prompt, temperature=p.verify_temperature,
                     max_tokens=p.verify_max_tokens) for c in cands
    ))
    cands = [c.with_(score=mean_vote(v), extra={"votes": list(v)}) for c, v in zip(cands, votes, strict=True)]
    best = max(c.score or 0.0 for c in cands)
    order = sorted(range(len(cands)), key=lambda i: (-(cands[i].score or 0.0), i))
    tied = [i for i in order if (cands[i].score or 0.0) >= best - p.tie_margin - 1e-12][: p.max_tied]

    labels = await ctx.answers.group([cands[i].answer for i in tied])
    pairs = [(a, b) for (a, la), (b, lb) in combinations(zip(tied, labels, strict=True), 2)
             if la is None or la != lb]
    jobs = []
    for a, b in pairs:
        for t in range(p.k_tie):
            first, second = (cands[a], cands[b]) if t % 2 == 0 else (cands[b], cands[a])
            jobs.append((a, b, first, second))
    results = await asyncio.gather(*(_compare(ctx, p, f, s) for _, _, f, s in jobs))
    wins = {cands[i].id: 0 for i in tied}
    comparisons: list[dict[str, Any]] = []
    for (_, _, first, second), w in zip(jobs, results, strict=True):
        if w is not None:
            wins[w.id] += 1
        comparisons.append({"a": first.id, "b": second.id, "winner": None if w is None else w.id})
    win = max(tied, key=lambda i: (wins[cands[i].id], cands[i].score or 0.0, -i))
    chosen = cands[win]
    extra = {
        "scores": [c.score for c in cands],
        "votes": [list(v) for v in votes],
        "tied": [cands[i].id for i in tied],
        "comparisons": comparisons,
        "wins": {str(k): v for k, v in wins.items()},
    }
    return Outcome(chosen.answer, chosen, cands, extra)
