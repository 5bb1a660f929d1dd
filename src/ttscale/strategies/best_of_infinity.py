"""Best-of-∞ (Komiyama et al., "Best-of-∞: Asymptotic Performance of Test-Time Compute"):
sample until a Bayes factor says the current majority answer is the large-N majority.

Rule (see :func:`ttscale.strategies.stopping.best_of_infinity_stop`): after each wave, posterior
Dirichlet(counts + 1) over the answer classes seen plus one bucket for unseen answers (``unseen``
pseudo-votes, 0.3 as in the authors' code); p = P(current mode is the true mode) from ``draws``
(1000) Monte-Carlo draws of a generator seeded by (run seed, problem id); BF = K · p / (1 − p)
with K the number of categories (tie for the mode → 0); stop when BF ≥ ``threshold`` (10) or at
``max_samples`` (100). Answer = the largest class, ties to the first seen. ``Outcome.extra``
holds ``samples``, ``stop_reason`` and the last Bayes factor (``stat``).

With the replay engine, ``max_samples`` must not exceed the recorded samples per problem (80 on
most recorded files). The weighted multi-model ensemble of the paper is
:func:`ttscale.lab.ensemble_weights.fit_ensemble_weights` (MILP) plus
:class:`ttscale.engines.ensemble.EnsembleEngine` (several engines as one proposer): run this
strategy on an ``EnsembleEngine`` to use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.registry import param
from ttscale.core.types import Problem
from ttscale.strategies.adaptive_consistency import sample_until
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.stopping import Decision, best_of_infinity_stop, mc_rng
from ttscale.strategies.turn import Temperature


@dataclass(frozen=True)
class BestOfInfinityParams:
    threshold: float = param(10.0, "stop when the Bayes factor reaches this")
    max_samples: int = param(100, "cap on samples")
    min_samples: int = param(1, "never stop before this many samples")
    draws: int = param(1000, "Monte-Carlo draws from the Dirichlet posterior")
    unseen: float = param(0.3, "pseudo-votes of the unseen-answer bucket (0 = none)")
    batch: int = param(1, "samples per wave (1 = one at a time, as in the paper)")
    temperature: Temperature = param(0.7, "sampling temperature, or turn (TURN: the entropy turning point)")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per solution")


@strategy("best_of_infinity", BestOfInfinityParams,
          "sample until a Dirichlet Bayes factor says the majority is settled (Komiyama et al.)")
async def best_of_infinity(problem: Problem, ctx: Context, p: BestOfInfinityParams) -> Outcome:
    rng = mc_rng(ctx.seed, problem.id)

    def rule(counts: list[int], n: int, _tokens: list[int]) -> Decision:
        return best_of_infinity_stop(counts, n, threshold=p.threshold, max_samples=p.max_samples,
                                     min_samples=p.min_samples, draws=p.draws, rng=rng, unseen=p.unseen)

    return await sample_until(ctx, rule, batch=p.batch, max_samples=p.max_samples,
                              temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens)
