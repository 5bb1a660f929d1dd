"""Answer voting, the one helper every strategy that votes uses: group candidates by equivalent answer,
sum their weights, and pick the heaviest class (ties: the class seen first).

- :func:`vote` does all of it and returns a :class:`Vote`: the chosen candidate (the winning class's
  first member, or whichever member ``pick`` prefers, e.g. :func:`highest_score`), the votes per
  answer for ``Outcome.extra`` and the winner's share of the weight.
- :class:`Tally` is the same count on answer-class labels already computed (``Tally.of``), for
  callers that group once and vote many times (the sweep's subsampled rows).
- :func:`aggregate_steps` / :func:`scored`: one score per candidate from a verifier's step scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ttscale.core.context import Context
from ttscale.core.types import Candidate

Aggregate = Literal["outcome", "last", "min", "prod", "mean"]


def aggregate_steps(step_scores: Sequence[float], how: Aggregate) -> float:
    """One score from per-step scores (Snell et al.: ``last`` works best for PRMs)."""
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    raise ValueError(f"cannot aggregate steps with {how!r}")


@dataclass(frozen=True)
class Tally:
    """Votes per answer class, in order of first appearance."""

    labels: list[int | None]
    weights: dict[int, float]
    first: dict[int, int]

    @classmethod
    def of(cls, labels: Sequence[int | None], weights: Sequence[float] | None = None) -> Tally:
        """Sum ``weights`` (1 each by default) per class label; ``None`` labels cast no vote."""
        w: dict[int, float] = {}
        first: dict[int, int] = {}
        for i, lab in enumerate(labels):
            if lab is None:
                continue
            w[lab] = w.get(lab, 0.0) + (1.0 if weights is None else float(weights[i]))
            first.setdefault(lab, i)
        return cls(list(labels), w, first)

    def winner(self) -> int | None:
        """The class with the largest total weight; ties go to the class seen first."""
        if not self.weights:
            return None
        return max(self.weights, key=lambda k: (self.weights[k], -self.first[k]))

    def members(self, label: int) -> list[int]:
        """Indices of the candidates in class ``label``, in order."""
        return [i for i, lab in enumerate(self.labels) if lab == label]


async def tally(ctx: Context, candidates: Sequence[Candidate], weights: Sequence[float] | None = None) -> Tally:
    """Group candidates by equivalent answer and sum their weights (1 each by default).
    Candidates without an answer cast no vote."""
    return Tally.of(await ctx.answers.group([c.answer for c in candidates]), weights)


Pick = Callable[[Sequence[Candidate]], Candidate]
"""Chooses the representative of the winning class from its members (in candidate order)."""


def first_member(members: Sequence[Candidate]) -> Candidate:
    """The class member that appeared first (plain majority voting)."""
    return members[0]


def highest_score(members: Sequence[Candidate]) -> Candidate:
    """The best-scored class member, ties to the earliest (weighted best-of-N); no score counts as 0."""
    return max(members, key=lambda c: c.score or 0.0)


@dataclass(frozen=True)
class Vote:
    """The result of :func:`vote`."""

    chosen: Candidate | None
    """The winning class's representative; None when no candidate has an answer."""
    votes: dict[str, float]
    """Total weight per answer class, keyed by the class's first answer (for ``Outcome.extra``)."""
    share: float
    """The winner's share of all weight (0.0 without a winner or without weight)."""
    tally: Tally

    @property
    def answer(self) -> str | None:
        return self.chosen.answer if self.chosen is not None else None


async def vote(ctx: Context, candidates: Sequence[Candidate], weights: Sequence[float] | None = None, *,
               pick: Pick = first_member) -> Vote:
    """Vote by equivalent answer: the heaviest class wins (ties: seen first) and ``pick`` chooses its
    representative. Weights default to one vote each; candidates without an answer do not vote."""
    return decide(candidates, await tally(ctx, candidates, weights), pick)


def decide(candidates: Sequence[Candidate], t: Tally, pick: Pick = first_member) -> Vote:
    """:func:`vote` on a tally already counted over ``candidates``."""
    votes = {candidates[t.first[k]].answer or "": round(v, 6) for k, v in t.weights.items()}
    win = t.winner()
    if win is None:
        return Vote(None, votes, 0.0, t)
    total = sum(t.weights.values())
    share = t.weights[win] / total if total > 0 else 0.0
    return Vote(pick([candidates[i] for i in t.members(win)]), votes, share, t)


async def scored(ctx: Context, candidates: Sequence[Candidate], aggregate: Aggregate,
                 verifier: str | None) -> list[Candidate]:
    """Attach a score to each candidate: the verifier's outcome score, or its step scores
    aggregated by ``aggregate`` (the aggregated value is stored in ``score``)."""
    if aggregate == "outcome":
        return await ctx.score(candidates, verifier)
    with_steps = await ctx.score_steps(candidates, verifier)
    return [c.with_(score=aggregate_steps(c.step_scores or (), aggregate)) for c in with_steps]
