"""Answer space and grader of the metastable testbed: the answer is the final state's name (the
last ``\\boxed{...}``), answers are equal when their names are, and an answer is correct when it
is the goal state (the problem's reference answer)."""

from __future__ import annotations

from collections.abc import Sequence

from ttscale.core.answer_text import last_boxed
from ttscale.core.types import Problem


class StateAnswers:
    """:class:`~ttscale.core.protocols.AnswerSpace` and :class:`~ttscale.core.protocols.Grader`."""

    def extract(self, text: str) -> str | None:
        got = last_boxed(text)
        return got.strip() if got else None

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        labels: dict[str, int] = {}
        out: list[int | None] = []
        for a in answers:
            if a is None:
                out.append(None)
            else:
                out.append(labels.setdefault(a.strip(), len(labels)))
        return out

    async def grade(self, problem: Problem, answer: str | None) -> bool | None:
        if problem.answer is None:
            return None
        return answer is not None and answer.strip() == problem.answer
