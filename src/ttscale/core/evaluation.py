"""Programmatic evaluation (Mind Evolution's fitness with feedback): the protocol strategies see.

Concrete evaluators live in :mod:`ttscale.evaluators` and register in
:data:`ttscale.core.plugins.EVALUATORS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ttscale.core.types import Problem

if TYPE_CHECKING:
    from ttscale.core.context import Context


@dataclass(frozen=True)
class Evaluation:
    """What an evaluator says about one solution. ``answer`` is the canonical final answer the
    evaluator read from the text, for evaluators with ``gives_answers = True`` (their answer, None
    included, replaces the answer space's extraction); others leave it None."""

    fitness: float
    feedback: str = ""
    solved: bool = False
    answer: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Evaluator(Protocol):
    """Scores a solution text for a problem. Model-based evaluators charge their calls through
    ``ctx`` (``role="verifier"``); code-based ones ignore it. An evaluator that reads final answers
    itself sets ``gives_answers = True`` (see :class:`Evaluation`)."""

    name: str
    gives_answers: bool

    async def evaluate(self, problem: Problem, text: str, ctx: Context) -> Evaluation: ...
