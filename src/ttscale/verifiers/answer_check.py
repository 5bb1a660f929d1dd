"""Reference-answer checker: an oracle / rule verifier, not a learned one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import NoParams
from ttscale.core.types import Candidate, Problem
from ttscale.verifiers.base import verifier

if TYPE_CHECKING:
    from ttscale.core.context import Context


class AnswerCheck(Verifier):
    """Scores 1.0 when a candidate's final answer is equivalent to the problem's reference answer,
    else 0.0 (a missing answer scores 0.0).

    This is an oracle: it reads the reference, so use it for pass@k, oracle best-of-N (an upper
    bound for any verifier) and tasks whose answers have a programmatic checker, never as if it were
    a deployable verifier. Equivalence is the context's answer space (``ctx.answers.equivalent``
    when it has one, e.g. :class:`~ttscale.verifiers.math_answers.MathAnswers`; otherwise its
    ``group``). It calls no model and charges no tokens.
    """

    name = "answer_check"

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        ref = problem.answer
        if ref is None:
            raise ConfigError(
                f"verifier 'answer_check' needs a reference answer, but problem {problem.id!r} has none; "
                "use a dataset with answers or a model-based verifier such as llm_judge"
            )
        equivalent = getattr(ctx.answers, "equivalent", None)
        if equivalent is not None:
            oks = await asyncio.gather(
                *(equivalent(c.answer, ref) if c.answer is not None else _false() for c in candidates)
            )
        else:  # any AnswerSpace: same class label as the reference
            labels = await ctx.answers.group([ref, *(c.answer for c in candidates)])
            oks = [lab is not None and lab == labels[0] for lab in labels[1:]]
        return [1.0 if ok else 0.0 for ok in oks]


async def _false() -> bool:
    return False


@verifier("answer_check", NoParams, "oracle: 1.0 if the answer matches the reference answer, else 0.0")
def make_answer_check(engine: Engine, params: NoParams) -> AnswerCheck:
    return AnswerCheck()
