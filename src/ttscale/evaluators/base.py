"""Programmatic evaluators: fitness plus textual feedback for a proposed solution (Mind Evolution).

An :class:`Evaluator` turns a solution text into an :class:`Evaluation`: a ``fitness`` (higher is
better), ``feedback`` in words that the next prompt can show the model, and ``solved`` (the search
may stop). Evaluators are registered by name in ``EVALUATORS``; each takes a small typed parameter
dataclass like strategies and verifiers do, and is built with :func:`make_evaluator`.

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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ttscale.core.registry import Registry, param
from ttscale.core.types import Candidate, Problem

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


EvaluatorFactory = Callable[[Any], Evaluator]
"""``factory(params) -> Evaluator``."""

EVALUATORS: Registry[EvaluatorFactory] = Registry("evaluator")
evaluator = EVALUATORS.register

_MODULES = ("meeting",)


def load_evaluators() -> Registry[EvaluatorFactory]:
    """Import the built-in evaluator modules (each registers itself) and return the registry."""
    return EVALUATORS.load_modules("ttscale.evaluators", _MODULES)


def make_evaluator(name: str, options: Mapping[str, Any] | None = None) -> Evaluator:
    """An evaluator by name. ``options`` may hold more keys than the evaluator takes (a strategy
    passes its relevant parameters to whichever evaluator is chosen); unknown ones are ignored."""
    entry = load_evaluators().get(name)
    known = {f.name for f in fields(entry.params_cls)}
    return entry.target(entry.make_params({k: v for k, v in (options or {}).items() if k in known}))


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
