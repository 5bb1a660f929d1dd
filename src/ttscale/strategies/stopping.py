"""Pure stopping rules for adaptive sampling: functions over vote counts, no I/O, no engine.

Each rule looks at what a real run has after each wave of samples (the vote count of every
distinct answer so far, the number of samples drawn, and, for :func:`margin_stop`, nothing else)
and says whether to stop. They are shared by the strategies (``adaptive_consistency``,
``best_of_infinity``, ``adaptive_margin``) and by ``bench/adaptive_recorded.py``, which simulates
them directly on recorded answer sequences; the bench checks that both give the same numbers.

``counts`` is always the vote count per distinct answer (any order; samples without an answer cast
no vote). ``n`` is the number of samples drawn so far, answered or not (default ``sum(counts)``);
caps apply to ``n``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import betainc

from ttscale.strategies.voting import Tally


@dataclass(frozen=True)
class Decision:
    """Whether to stop, why (``"confident"``, ``"max_samples"`` or ``"continue"``), and the rule's
    statistic at this point (probability, Bayes factor or margin)."""

    stop: bool
    reason: str
    stat: float

    def __bool__(self) -> bool:
        return self.stop


def _top_two(counts: Sequence[float]) -> tuple[float, float]:
    s = sorted(counts, reverse=True)
    return (s[0] if s else 0.0), (s[1] if len(s) > 1 else 0.0)


def _n(counts: Sequence[float], n: int | None) -> int:
    return int(sum(counts)) if n is None else int(n)


# --- Adaptive-Consistency -----------------------------------------------------------------------


def ac_probability(v1: float, v2: float) -> float:
    """P(p1 > p2 | v1, v2) for the two leading answers under a uniform prior.

    Aggarwal et al. (2023) model the two leading answers' shares, renormalised to p1 + p2 = 1, as
    p1 ~ Beta(v1 + 1, v2 + 1); the probability that the leader is truly ahead is
    P(p1 > 1/2) = 1 − I_{1/2}(v1 + 1, v2 + 1) (regularized incomplete beta, closed form).
    """
    return float(1.0 - betainc(v1 + 1.0, v2 + 1.0, 0.5))


def majority_decided(counts: Sequence[float], remaining: int) -> bool:
    """Whether ``remaining`` more votes can no longer change the majority answer.

    ``counts`` are plain votes per answer class in first-seen order; the answer is the largest class
    with ties going to the class seen first (as :func:`ttscale.strategies.voting.decide` picks it).
    The worst case gives every remaining vote to one rival: an existing class after the leader must
    stay strictly below it, one before it (a tie it would win) too, and a class not seen yet (it would
    come last, so a tie goes to the leader) may at most tie. Under this rule, stopping returns exactly
    the answer that drawing all the remaining samples would have returned.
    """
    if not counts or remaining < 0:
        return False
    lead = max(counts)
    if lead <= 0:
        return False
    i = list(counts).index(lead)
    if remaining > lead:  # a new class could overtake
        return False
    for j, v in enumerate(counts):
        if j == i:
            continue
        if v + remaining > lead or (v + remaining == lead and j < i):
            return False
    return True


def adaptive_consistency_stop(
    counts: Sequence[int], n: int | None = None, *, threshold: float = 0.95, max_samples: int = 40,
    min_samples: int = 1,
) -> Decision:
    """Adaptive-Consistency stopping (Aggarwal et al. 2023, "Let's Sample Step by Step").

    Rule: after each sample, with v1 ≥ v2 the vote counts of the two leading answers (v2 = 0 when
    only one answer has been seen), stop when P(p1 > p2 | v1, v2) = 1 − I_{0.5}(v1+1, v2+1)
    > ``threshold`` (paper: 0.95), never before ``min_samples`` samples, and always at
    ``max_samples`` (paper: 40). Unanimous answers stop at 4 samples (0.969 > 0.95; 3 gives 0.9375).

    Also stop (reason ``"decided"``) once the samples left under ``max_samples`` can no longer change
    the majority (:func:`majority_decided`): the answer is then the one the full ``max_samples`` would
    give, for fewer tokens. This matters with small caps, where the Beta test cannot fire at all
    (at most 4 samples: it needs 4 unanimous votes), e.g. 3 of 4 or, in waves of 2, 2 of 4 agreeing.
    """
    k = _n(counts, n)
    v1, v2 = _top_two(counts)
    p = ac_probability(v1, v2)
    if k >= min_samples and v1 > 0 and p > threshold:
        return Decision(True, "confident", p)
    if k >= min_samples and k < max_samples and majority_decided(counts, max_samples - k):
        return Decision(True, "decided", p)
    if k >= max_samples:
        return Decision(True, "max_samples", p)
    return Decision(False, "continue", p)


# --- Best-of-infinity ---------------------------------------------------------------------------


def mc_rng(seed: int, problem_id: str) -> np.random.Generator:
    """The seeded Monte-Carlo generator a run uses for one (run seed, problem): the strategy and the
    bench both build it this way, so their Bayes factors are identical."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(problem_id).encode())])


def mode_probability(
    counts: Sequence[float], *, draws: int = 1000, rng: np.random.Generator | int | None = None,
    unseen: float = 0.3,
) -> float:
    """P(the current mode is the true mode) under the Dirichlet posterior, by Monte-Carlo.

    Posterior: Dirichlet(counts + 1) over the observed answers plus one bucket for answers not yet
    seen, which holds ``unseen`` pseudo-votes (parameter ``unseen + 1``). The bucket follows the
    Best-of-∞ authors' public code (``alpha = 0.3`` "unknown" bucket): without it one unanimous
    sample would give P = 1 and stop at once. ``unseen=0`` with one answer returns 1.
    """
    obs = [float(c) for c in counts if c > 0]
    if not obs:
        return 0.0
    alpha = np.array(obs + ([unseen] if unseen > 0 else []), dtype=float) + 1.0
    if len(alpha) == 1:
        return 1.0
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    # Dirichlet draws via normalised gammas; the argmax does not need the normalisation.
    g = gen.standard_gamma(alpha, size=(draws, len(alpha)))
    lead = int(np.argmax(alpha[: len(obs)]))
    return float(np.mean(np.argmax(g, axis=1) == lead))


def bayes_factor(
    counts: Sequence[float], *, draws: int = 1000, rng: np.random.Generator | int | None = None,
    unseen: float = 0.3,
) -> float:
    """Komiyama et al.'s Bayes factor BF = K · p / (1 − p), p = :func:`mode_probability`.

    K is the number of Dirichlet categories (distinct answers seen, plus the unseen-answer bucket
    when ``unseen > 0``, as in the authors' code). A tie for the mode gives BF = 0 (no draws are
    made); p = 1 in every draw gives BF = inf.
    """
    obs = [c for c in counts if c > 0]
    if not obs:
        return 0.0
    v1, v2 = _top_two(obs)
    if v1 == v2:
        return 0.0
    p = mode_probability(obs, draws=draws, rng=rng, unseen=unseen)
    k = len(obs) + (1 if unseen > 0 else 0)
    return math.inf if p >= 1.0 else k * p / (1.0 - p)


def best_of_infinity_stop(
    counts: Sequence[int], n: int | None = None, *, threshold: float = 10.0, max_samples: int = 100,
    min_samples: int = 1, draws: int = 1000, rng: np.random.Generator | int | None = None,
    unseen: float = 0.3,
) -> Decision:
    """Best-of-∞ Bayes-factor stopping (Komiyama et al., "Best-of-∞: Asymptotic Performance of
    Test-Time Compute").

    Rule: after each sample, posterior Dirichlet(counts + 1) over answer frequencies (plus an
    unseen-answer bucket, see :func:`mode_probability`); p = P(current mode is the true mode) from
    ``draws`` (1000) Monte-Carlo draws of a seeded generator; BF = K · p / (1 − p) (tie for the mode →
    0); stop when BF ≥ ``threshold`` (default 10), never before ``min_samples``, always at
    ``max_samples`` (default 100). The generator is consumed only when the mode is unique.
    """
    k = _n(counts, n)
    bf = bayes_factor(counts, draws=draws, rng=rng, unseen=unseen) if k >= min_samples else 0.0
    if k >= min_samples and bf >= threshold:
        return Decision(True, "confident", bf)
    if k >= max_samples:
        return Decision(True, "max_samples", bf)
    return Decision(False, "continue", bf)


# --- ttscale's own rule -------------------------------------------------------------------------


MAX_VOTE_WEIGHT = 2.0
"""The most one length-weighted vote can count: a degenerate very short trace must not outvote many."""


def length_weights(labels: Sequence[int | None], tokens: Sequence[float], gamma: float = 1.0) -> list[float]:
    """Per-sample vote weights that favour short traces: answered sample i weighs
    min(2, (L̄ / L_i)^γ), L̄ the mean generated tokens of the answered samples so far (so the
    weights average about 1); unanswered samples weigh 0. ``gamma = 0`` gives plain votes (1 each).
    Unanimous samples still reach a lead of k after k samples (the weights' sum is at least k).

    Why: on reasoning models the traces that reach the right answer are on average shorter than the
    ones that do not (Hassid et al. 2025, "Don't Overthink It", short-m@k), so among equally many
    votes the shorter class is the better bet, and a short leader needs fewer votes to be trusted."""
    answered = [max(1.0, float(t)) for lab, t in zip(labels, tokens, strict=True) if lab is not None]
    if not answered:
        return [0.0] * len(labels)
    mean = sum(answered) / len(answered)
    return [0.0 if lab is None else 1.0 if gamma == 0
            else min(MAX_VOTE_WEIGHT, (mean / max(1.0, float(t))) ** gamma)
            for lab, t in zip(labels, tokens, strict=True)]


def weighted_votes(labels: Sequence[int | None], weights: Sequence[float]) -> list[float]:
    """Summed weight per answer class, in order of first appearance (``None`` casts no vote): the
    vote :class:`~ttscale.strategies.voting.Tally` counts, as the list the rules take."""
    return list(Tally.of(labels, weights).weights.values())


OPEN_ANSWERS = 0
"""``options`` value of an open answer space (free-form answers: any string may come up)."""


def options_min_samples(options: int, chance: float = 0.02) -> int:
    """Fewest samples before a stop when answers come from ``options`` choices: a unanimous run of
    that many uniform guesses has probability ``options^(1 - k) <= chance`` (2%). 4 options → 4,
    2 → 7, 10 → 3; an open answer space (``options`` ≤ 1) → 1 (no constraint)."""
    if options <= 1:
        return 1
    return 1 + math.ceil(math.log(1.0 / chance) / math.log(options) - 1e-9)


def margin_stop(
    counts: Sequence[float], n: int | None = None, *, tokens: Sequence[float] | None = None,
    margin: float = 2.5, min_samples: int = 3, max_samples: int = 24, short_bonus: int = 0,
) -> Decision:
    """ttscale's adaptive rule, "adaptive_margin": a sequential test on the leader's lead.

    ``counts`` are votes per answer class: plain counts, or the length-weighted votes of
    :func:`length_weights` (the strategy's default, ``length_weight = 1``), in which case the lead
    is in weighted votes and a short leader gets there sooner. ``short_bonus`` is the older,
    coarser form of the same idea for plain counts (off by default).

    Rule: with v1 ≥ v2 the votes of the two leading answers (v2 = 0 when only one answer was seen),
    after at least ``min_samples`` samples stop as soon as v1 − v2 ≥ ``margin`` — or
    ≥ ``margin − short_bonus`` when the leading answer's mean generated tokens are at most the mean
    over all other answered samples (``tokens`` = total generated tokens per answer, aligned with
    ``counts``; without it, or with no other answer yet, the plain margin applies). Otherwise go on,
    up to ``max_samples``.

    Why a lead: if the two leading answers are drawn with probabilities q1 > q2, the lead is a
    random walk and, by the gambler's-ruin bound, the chance that the *wrong* one ever leads by m is
    (q2/q1)^m however many samples were drawn, so the rule does not get laxer as samples pile up
    (the Beta and Dirichlet rules do: a 9–5 split passes Adaptive-Consistency's 0.95). Why length:
    on reasoning models the traces that reach the right answer are on average shorter than the
    ones that do not, so a short leader needs less evidence. Contested problems run to the cap,
    where the (weighted) majority answers. Unanimous problems cost ``max(margin, min_samples)``.
    Defaults (margin 2.5, min 3, cap 24, length weight 1): the setting that leave-one-benchmark-out
    selection picks on every held-out benchmark of ``bench/adaptive_recorded.py`` (docs/adaptive.md).
    """
    k = _n(counts, n)
    if not counts or max(counts) <= 0:
        return Decision(k >= max_samples, "max_samples" if k >= max_samples else "continue", 0.0)
    lead_i = max(range(len(counts)), key=lambda i: counts[i])
    v1, v2 = _top_two(counts)
    lead = v1 - v2
    need = margin
    if tokens is not None and short_bonus:
        others_n = sum(counts) - counts[lead_i]
        if others_n > 0:
            others_mean = (sum(tokens) - tokens[lead_i]) / others_n
            if tokens[lead_i] / counts[lead_i] <= others_mean:
                need = max(1, margin - short_bonus)
    if k >= min_samples and lead >= need - 1e-9:
        return Decision(True, "confident", float(lead))
    if k >= max_samples:
        return Decision(True, "max_samples", float(lead))
    return Decision(False, "continue", float(lead))
