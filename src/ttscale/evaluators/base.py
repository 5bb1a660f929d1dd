"""Programmatic evaluators: fitness plus textual feedback for a proposed solution (Mind Evolution).

An evaluator (:class:`ttscale.core.evaluation.Evaluator`) turns a solution text into an :class:`Evaluation`: a ``fitness`` (higher is
better), ``feedback`` in words that the next prompt can show the model, and ``solved`` (the search
may stop). Evaluators are registered by name in ``ttscale.core.plugins.EVALUATORS``; each takes a
small typed parameter dataclass like strategies and verifiers do, and is built with
:func:`ttscale.core.plugins.make_evaluator`.

Built in:

- ``meeting`` (:mod:`ttscale.evaluators.meeting`): the meeting-scheduling puzzle of the ``meeting``
  dataset, checked by code: fitness = −(number of violated constraints), feedback lists every
  violation, solved when none is violated. Free (no model call).
- ``math`` (below): for problems without a programmatic checker (math word problems, ...). The
  fitness is a *verifier's* score of the solution (``verifier``, default ``llm_judge``; its model
  calls are charged as verifier tokens through the context) and the feedback is empty, so the
  critic sees only the score. ``solved_threshold`` (default ``None`` = never) stops the search when
  the score reaches it. It does not read the reference answer (use ``verifier=answer_check`` for an
  oracle run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ttscale.core.evaluation import Evaluation
from ttscale.core.plugins import EVALUATORS
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem

if TYPE_CHECKING:
    from ttscale.core.context import Context


evaluator = EVALUATORS.register


# --------------------------------------------------------------------------------------------------
# math: a verifier's score as fitness


@dataclass(frozen=True)
class MathEvaluatorParams:
    verifier: str = param("llm_judge", "verifier whose score of the solution is the fitness")
    solved_threshold: float | None = param(None, "stop when the score reaches this (None = never)")


class VerifierEvaluator:
    """Fitness = the verifier's score of the solution; no feedback (see module docstring)."""

    name = "math"
    gives_answers = False

    def __init__(self, verifier: str = "llm_judge", solved_threshold: float | None = None) -> None:
        self.verifier = verifier
        self.solved_threshold = solved_threshold

    async def evaluate(self, problem: Problem, text: str, ctx: Context) -> Evaluation:
        cand = Candidate(text=text, answer=ctx.answers.extract(text))
        (scored,) = await ctx.score([cand], self.verifier)
        s = float(scored.score or 0.0)
        solved = self.solved_threshold is not None and s >= self.solved_threshold
        return Evaluation(fitness=s, feedback="", solved=solved)


@evaluator("math", MathEvaluatorParams, "a verifier's score as fitness, no feedback (no checker needed)")
def make_math_evaluator(params: MathEvaluatorParams) -> VerifierEvaluator:
    return VerifierEvaluator(params.verifier, params.solved_threshold)
