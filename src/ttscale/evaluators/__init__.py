"""Programmatic evaluators for Mind Evolution: fitness plus feedback (``math``, ``meeting``)."""

from ttscale.core.evaluation import Evaluation, Evaluator
from ttscale.core.plugins import EVALUATORS, load_evaluators, make_evaluator
from ttscale.evaluators.base import VerifierEvaluator

__all__ = ["EVALUATORS", "Evaluation", "Evaluator", "VerifierEvaluator", "load_evaluators", "make_evaluator"]
