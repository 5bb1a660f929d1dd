"""Verifiers of the metastable testbed, all exact or exactly controlled.

Each reads the candidate's state path from its text (:func:`~ttscale.testbeds.engine.parse_path`)
and scores it against the problem's chain (``chains[problem.id]``, or the single chain given).

- :class:`OutcomeVerifier`: 1 when the path ends in the goal, else 0 (a perfect 0/1 outcome check);
- :class:`ExactPRM`: the process reward of step ``i`` is the exact probability of reaching the goal
  from the state after step ``i`` within the steps left of the horizon ``H`` (``V[H - i, s_i]`` by
  dynamic programming);
- :class:`NoisyPRM`: the exact PRM seen through a fixed per-state error,
  ``sigmoid(logit(clip(v)) + sigma * z[state])`` with ``z ~ N(0, 1)`` drawn once per (seed, problem,
  state): deterministic, systematic (the same state is always misjudged the same way, as a learned
  PRM would be), with ``sigma`` setting the noise;
- :class:`SparseEdgeReward`: favours crossing inter-cluster edges (Kim et al.): step ``i`` scores
  (sparse edges crossed toward the goal so far + 1 if at the goal) / (crossings needed + 1).

All offer ``score_last_steps`` (the tree searches score only each new step with it) besides
``score`` (the last step's value) and ``score_steps``.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ttscale.core.protocols import Verifier
from ttscale.core.types import Candidate, Problem
from ttscale.testbeds.engine import parse_path
from ttscale.testbeds.metastable import MetastableChain

if TYPE_CHECKING:
    from ttscale.core.context import Context


class ChainVerifier(Verifier):
    """Base: chain lookup, path parsing, and ``score``/``score_steps`` from :meth:`step_values`."""

    name = "chain"

    def __init__(self, chains: Mapping[str, MetastableChain] | MetastableChain) -> None:
        self.chains = chains
        self.calls = 0

    def chain_for(self, problem: Problem) -> MetastableChain:
        return self.chains if isinstance(self.chains, MetastableChain) else self.chains[problem.id]

    def step_values(self, problem: Problem, chain: MetastableChain, path: list[int]) -> list[float]:
        """One value per step of ``path`` (``len(path) - 1`` values)."""
        raise NotImplementedError

    def _paths(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[MetastableChain, list[list[int]]]:
        chain = self.chain_for(problem)
        self.calls += 1
        return chain, [parse_path(chain, c.text) for c in candidates]

    async def score_steps(self, problem: Problem, candidates: Sequence[Candidate],
                          ctx: Context | None = None) -> list[list[float]]:
        chain, paths = self._paths(problem, candidates)
        return [self.step_values(problem, chain, p) for p in paths]

    async def score(self, problem: Problem, candidates: Sequence[Candidate],
                    ctx: Context | None = None) -> list[float]:
        steps = await self.score_steps(problem, candidates, ctx)
        return [s[-1] if s else 0.0 for s in steps]

    async def score_last_steps(self, problem: Problem, candidates: Sequence[Candidate],
                               ctx: Context | None = None) -> list[float]:
        return await self.score(problem, candidates, ctx)


class OutcomeVerifier(ChainVerifier):
    """1.0 when the path ends in the goal state, else 0.0."""

    name = "outcome"

    def step_values(self, problem: Problem, chain: MetastableChain, path: list[int]) -> list[float]:
        return [1.0 if s == chain.goal else 0.0 for s in path[1:]]


class ExactPRM(ChainVerifier):
    """P(reach the goal within the rest of the horizon | the state after each step)."""

    name = "prm"

    def __init__(self, chains: Mapping[str, MetastableChain] | MetastableChain, horizon: int) -> None:
        super().__init__(chains)
        self.horizon = horizon
        self._tables: dict[int, np.ndarray] = {}

    def table(self, chain: MetastableChain) -> np.ndarray:
        t = self._tables.get(id(chain))
        if t is None:
            t = self._tables[id(chain)] = chain.success_table(self.horizon)
        return t

    def exact_values(self, chain: MetastableChain, path: list[int]) -> list[float]:
        V = self.table(chain)
        return [float(V[max(self.horizon - i, 0), s]) for i, s in enumerate(path[1:], start=1)]

    def step_values(self, problem: Problem, chain: MetastableChain, path: list[int]) -> list[float]:
        return self.exact_values(chain, path)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


class NoisyPRM(ExactPRM):
    """The exact PRM with a fixed per-state logit error of scale ``sigma`` (module docstring)."""

    name = "noisy_prm"

    def __init__(self, chains: Mapping[str, MetastableChain] | MetastableChain, horizon: int, *,
                 sigma: float = 1.0, seed: int = 0, clip: float = 0.02) -> None:
        super().__init__(chains, horizon)
        self.sigma = sigma
        self.seed = seed
        self.clip = clip
        self._z: dict[str, np.ndarray] = {}

    def noise(self, problem_id: str, n_states: int) -> np.ndarray:
        z = self._z.get(problem_id)
        if z is None:
            rng = np.random.default_rng([self.seed, zlib.crc32(problem_id.encode())])
            z = self._z[problem_id] = rng.standard_normal(n_states)
        return z

    def noisy(self, problem_id: str, chain: MetastableChain, states: Sequence[int],
              values: Sequence[float]) -> list[float]:
        v = np.clip(np.asarray(values, dtype=float), self.clip, 1 - self.clip)
        z = self.noise(problem_id, chain.n_states)[np.asarray(states, dtype=int)]
        return (1.0 / (1.0 + np.exp(-(_logit(v) + self.sigma * z)))).tolist()

    def step_values(self, problem: Problem, chain: MetastableChain, path: list[int]) -> list[float]:
        if len(path) < 2:
            return []
        return self.noisy(problem.id, chain, path[1:], self.exact_values(chain, path))


class SparseEdgeReward(ChainVerifier):
    """(Sparse edges crossed toward the goal + reached the goal) / (crossings needed + 1)."""

    name = "sparse_edge"

    def step_values(self, problem: Problem, chain: MetastableChain, path: list[int]) -> list[float]:
        d = chain.crossings_to_goal_cached
        need = max(int(d[path[0]]), 0) + 1
        out, crossed = [], 0
        for a, b in itertools.pairwise(path):
            if chain.sparse[a, b] and 0 <= d[b] < d[a]:
                crossed += 1
            out.append((crossed + (1 if b == chain.goal else 0)) / need)
        return out
