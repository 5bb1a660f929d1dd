"""LLM-as-a-judge: ask a model "Is this solution correct? Answer Yes or No." and read P(yes).

The score is ``P(yes) / (P(yes) + P(no))`` from the top-k logprobs of the judge's first token
(all case/space variants of "yes" and "no" summed). When the engine gives no logprobs, or neither
word is among the top-k (a thinking model opening with ``<think>``, say), the judge generates up to
``max_tokens`` tokens greedily and parses the text: yes -> 1.0, no -> 0.0, neither -> 0.5.

``score_steps`` asks the same of every step prefix ("Is the last step correct?"): a generative
process verifier (the zero-shot stand-in for a PRM in step-wise search).

All requests go through ``ctx.generate(..., role="verifier")`` so their tokens are charged to the
problem's verifier counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ttscale.core.errors import ConfigError
from ttscale.core.plugins import make_engine
from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import check_template, param
from ttscale.core.types import Candidate, Completion, GenerationRequest, Problem
from ttscale.core.yes_no import parse_yes_no, yes_probability
from ttscale.verifiers.base import verifier

if TYPE_CHECKING:
    from ttscale.core.context import Context

DEFAULT_PROMPT = (
    "Here is a problem and a proposed solution.\n\n"
    "Problem:\n{problem}\n\n"
    "Proposed solution:\n{solution}\n\n"
    "Is this solution correct? Answer Yes or No."
)
DEFAULT_STEP_PROMPT = (
    "Here is a problem and the first steps of a proposed solution.\n\n"
    "Problem:\n{problem}\n\n"
    "Steps so far:\n{steps}\n\n"
    "Is the last step correct? Answer Yes or No."
)

@dataclass(frozen=True)
class LLMJudgeParams:
    prompt: str | None = param(None, "prompt template with {problem} and {solution} (None = built-in)")
    step_prompt: str | None = param(None, "step prompt template with {problem} and {steps} (None = built-in)")
    max_tokens: int = param(16, "tokens the judge may generate when logprobs give no yes/no (fallback)")
    logprobs: int = param(20, "top-k logprobs requested for the judge's first token")
    engine: str | None = param(None, "judge engine as NAME or NAME:MODEL (None = the policy engine)")

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.logprobs < 1:
            raise ValueError(f"logprobs must be >= 1, got {self.logprobs}")
        for name, tpl, keys in (("prompt", self.prompt, ("problem", "solution")),
                                ("step_prompt", self.step_prompt, ("problem", "steps"))):
            if tpl is not None:
                check_template(f"{name} template", tpl, keys)


class LLMJudge(Verifier):
    """Yes/no judge over a chat engine (see module docstring). ``engine=None`` judges with the
    context's policy engine."""

    name = "llm_judge"

    def __init__(self, engine: Engine | None = None, params: LLMJudgeParams | None = None, *,
                 owns_engine: bool = False) -> None:
        self.engine = engine
        self._owns_engine = owns_engine
        self.params = params or LLMJudgeParams()
        self.prompt = self.params.prompt or DEFAULT_PROMPT
        self.step_prompt = self.params.step_prompt or DEFAULT_STEP_PROMPT

    async def _ask(self, content: str, ctx: Context) -> float:
        eng = self.engine or ctx.engine
        msgs = ({"role": "user", "content": content},)
        if getattr(eng, "supports_logprobs", True):
            req = GenerationRequest(messages=msgs, n=1, max_tokens=1, temperature=0.0,
                                    logprobs=self.params.logprobs)
            out = await ctx.generate(req, role="verifier", engine=eng)
            p = _first_token_yes(out)
            if p is not None:
                return p
        req = GenerationRequest(messages=msgs, n=1, max_tokens=self.params.max_tokens, temperature=0.0)
        out = await ctx.generate(req, role="verifier", engine=eng)
        return parse_yes_no(out[0].text) if out else 0.5

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        q = problem.question
        return list(await asyncio.gather(
            *(self._ask(self.prompt.format(problem=q, solution=c.text), ctx) for c in candidates)
        ))

    async def score_steps(
        self, problem: Problem, candidates: Sequence[Candidate], ctx: Context
    ) -> list[list[float]]:
        q = problem.question
        jobs = []
        shape = []
        for c in candidates:
            steps = c.steps or ((c.text,) if c.text.strip() else ())
            shape.append(len(steps))
            for k in range(len(steps)):
                text = "\n\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps[: k + 1]))
                jobs.append(self._ask(self.step_prompt.format(problem=q, steps=text), ctx))
        flat = list(await asyncio.gather(*jobs))
        out, i = [], 0
        for n in shape:
            out.append(flat[i : i + n])
            i += n
        return out

    async def score_last_steps(
        self, problem: Problem, candidates: Sequence[Candidate], ctx: Context
    ) -> list[float]:
        """P(yes) that the LAST step of each (partial) solution is correct, all steps shown: one
        judge query per candidate (step-wise search scores each new step once)."""
        q = problem.question
        jobs = []
        for c in candidates:
            steps = c.steps or ((c.text,) if c.text.strip() else ())
            text = "\n\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
            jobs.append(self._ask(self.step_prompt.format(problem=q, steps=text), ctx))
        return list(await asyncio.gather(*jobs))

    async def aclose(self) -> None:
        """Close the judge's own engine (not the policy engine it may share)."""
        if self.engine is not None and self._owns_engine:
            await self.engine.aclose()


def _first_token_yes(out: Sequence[Completion]) -> float | None:
    if not out or not out[0].logprobs:
        return None
    return yes_probability(out[0].logprobs[0])


@verifier("llm_judge", LLMJudgeParams, "P(yes) of a model asked whether the solution is correct")
def make_llm_judge(engine: Engine, params: LLMJudgeParams) -> LLMJudge:
    if params.engine is None:
        return LLMJudge(engine, params)
    name, _, model = params.engine.partition(":")
    if not name:
        raise ConfigError(f"verifier 'llm_judge': engine={params.engine!r} should be NAME or NAME:MODEL")
    return LLMJudge(make_engine(name, model or None), params, owns_engine=True)
