"""Programmatic evaluators (fitness + textual feedback) for evolutionary search; see
:mod:`ttscale.evaluators.base`."""

from ttscale.evaluators.base import (
    EVALUATORS,
    Evaluation,
    Evaluator,
    VerifierEvaluator,
    load_evaluators,
    make_evaluator,
)

__all__ = ["EVALUATORS", "Evaluation", "Evaluator", "VerifierEvaluator", "load_evaluators", "make_evaluator"]
