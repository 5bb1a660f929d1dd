"""Synthetic reasoning testbeds with exactly known answers (see ``docs/testbed.md``).

``metastable``: Markov chains with dense clusters and sparse inter-cluster edges (Kim et al. 2025)
and heterogeneous multi-style base policies (Setlur et al. 2025); ``engine``: the chain as a ttscale
engine emitting one text step per transition; ``verifiers``: exact outcome, exact/noisy process
reward and a sparse-edge reward; ``answers``: answer space + grader; ``experiments``: the three
figures of ``docs/testbed/``.
"""

from ttscale.testbeds.answers import StateAnswers
from ttscale.testbeds.engine import ChainEngine, distilled_engine, make_problem, parse_path, path_text
from ttscale.testbeds.metastable import (
    MetastableChain,
    Style,
    apply_tilt,
    distill_tilt,
    fit_kernel,
    ladder_chain,
    styles_chain,
)
from ttscale.testbeds.verifiers import ExactPRM, NoisyPRM, OutcomeVerifier, SparseEdgeReward

__all__ = [
    "ChainEngine",
    "ExactPRM",
    "MetastableChain",
    "NoisyPRM",
    "OutcomeVerifier",
    "SparseEdgeReward",
    "StateAnswers",
    "Style",
    "apply_tilt",
    "distill_tilt",
    "distilled_engine",
    "fit_kernel",
    "ladder_chain",
    "make_problem",
    "parse_path",
    "path_text",
    "styles_chain",
]
