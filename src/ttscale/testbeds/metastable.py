"""Metastable Markov chains as a synthetic reasoning environment (Kim et al. 2025; Setlur et al. 2025).

A *state* is a partial line of reasoning; one *step* is one transition of a row-stochastic matrix
``P``. States are grouped in clusters: transitions inside a cluster are dense (easy steps), the few
edges between clusters are sparse with probability ``ε`` (hard steps). Some states are *answer*
states (absorbing): reaching the goal state is a correct solution, any other answer state a wrong
one. Everything a verifier or a plot needs is computed exactly:

- :meth:`MetastableChain.success_table`: ``V[t, s]`` = P(reach the goal within ``t`` steps | at
  ``s``), by dynamic programming (``V[t+1] = P V[t]`` on non-answer states);
- :meth:`MetastableChain.hit_probability`: P(ever reach the goal), a linear solve;
- :meth:`MetastableChain.hitting_times`: E[steps to reach the goal], ``(I - Q) h = 1`` on the states
  that reach it almost surely (``inf`` elsewhere);
- :meth:`MetastableChain.crossings_to_goal`: the fewest sparse edges on any path to the goal
  (a problem's *difficulty*).

Builders: :func:`ladder_chain` (K clusters in a row; experiment 1 and 3) and :func:`styles_chain`
(a heterogeneous base policy: several solution *styles* of different lengths; experiment 2).
:func:`fit_kernel` is the maximum-likelihood transition kernel of a set of paths and
:func:`distill_tilt` the verifier-free "distilled" policy built from it.

Names: non-answer states are ``s0, s1, ...``; answer states ``a0, a1, ...``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class MetastableChain:
    """A finite Markov chain with clusters, sparse edges and absorbing answer states.

    ``P[s, s']`` is the probability of the step ``s -> s'``; answer states have ``P[a, a] = 1``.
    ``sparse[s, s']`` marks inter-cluster (hard) edges; ``cluster[s]`` is ``-1`` for answer states.
    """

    P: np.ndarray
    names: tuple[str, ...]
    cluster: np.ndarray
    sparse: np.ndarray
    answer: np.ndarray
    goal: int
    start: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        P = np.asarray(self.P, dtype=float)
        S = len(self.names)
        if P.shape != (S, S):
            raise ValueError(f"P must be {S}x{S}, got {P.shape}")
        if np.any(P < -1e-12) or not np.allclose(P.sum(1), 1.0, atol=1e-9):
            raise ValueError("P must be row-stochastic")
        if not self.answer[self.goal]:
            raise ValueError("the goal must be an answer state")
        for a in np.flatnonzero(self.answer):
            if P[a, a] != 1.0:
                raise ValueError(f"answer state {self.names[a]} must be absorbing")

    # --- basics -----------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return len(self.names)

    @cached_property
    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    @cached_property
    def cum(self) -> np.ndarray:
        """Row-wise cumulative ``P`` (last column exactly 1) for inverse-CDF sampling."""
        c = np.cumsum(self.P, axis=1)
        c[:, -1] = 1.0
        return c

    @property
    def goal_name(self) -> str:
        return self.names[self.goal]

    def with_kernel(self, P: np.ndarray, **meta: Any) -> MetastableChain:
        """The same states, clusters and answers under another kernel (e.g. a distilled policy)."""
        P = np.array(P, dtype=float)
        for a in np.flatnonzero(self.answer):
            P[a] = 0.0
            P[a, a] = 1.0
        P = P / P.sum(1, keepdims=True)
        return replace(self, P=P, meta={**self.meta, **meta})

    # --- exact quantities -----------------------------------------------------------------------
    def success_table(self, horizon: int) -> np.ndarray:
        """``V[t, s]`` for ``t = 0..horizon``: P(reach the goal within ``t`` more steps | at ``s``)."""
        V = np.zeros((horizon + 1, self.n_states))
        goal = np.zeros(self.n_states)
        goal[self.goal] = 1.0
        live = ~self.answer
        V[0] = goal
        for t in range(horizon):
            V[t + 1] = np.where(live, self.P @ V[t], goal)
        return V

    def success_prob(self, horizon: int, state: int | None = None) -> float | np.ndarray:
        """P(reach the goal within ``horizon`` steps) from ``state`` (default: every state)."""
        v = self.success_table(horizon)[horizon]
        return v if state is None else float(v[state])

    def hit_probability(self) -> np.ndarray:
        """P(ever reach the goal) from each state."""
        T = np.flatnonzero(~self.answer)
        x = np.zeros(self.n_states)
        x[self.goal] = 1.0
        if len(T):
            A = np.eye(len(T)) - self.P[np.ix_(T, T)]
            x[T] = np.linalg.lstsq(A, self.P[T, self.goal], rcond=None)[0] if _singular(A) else \
                np.linalg.solve(A, self.P[T, self.goal])
        return np.clip(x, 0.0, 1.0)

    def hitting_times(self) -> np.ndarray:
        """E[steps until the goal] from each state; ``inf`` where the goal is not reached surely."""
        h = np.full(self.n_states, np.inf)
        h[self.goal] = 0.0
        sure = (self.hit_probability() > 1 - 1e-9) & ~self.answer
        R = np.flatnonzero(sure)
        if len(R):
            A = np.eye(len(R)) - self.P[np.ix_(R, R)]
            h[R] = np.linalg.solve(A, np.ones(len(R)))
        return h

    def crossings_to_goal(self) -> np.ndarray:
        """The fewest sparse edges on a path from each state to the goal (0-1 BFS; -1 = unreachable)."""
        S = self.n_states
        dist = np.full(S, np.iinfo(np.int64).max, dtype=np.int64)
        dist[self.goal] = 0
        dq: deque[int] = deque([self.goal])
        preds = [np.flatnonzero((self.P[:, t] > 0) & ~self.answer) for t in range(S)]
        while dq:
            t = dq.popleft()
            for s in preds[t]:
                w = int(self.sparse[s, t])
                if dist[t] + w < dist[s]:
                    dist[s] = dist[t] + w
                    (dq.append if w else dq.appendleft)(int(s))
        dist[dist == np.iinfo(np.int64).max] = -1
        return dist

    # --- sampling ---------------------------------------------------------------------------------
    def step(self, state: int, rng: np.random.Generator) -> int:
        """One transition from ``state``."""
        return int(np.searchsorted(self.cum[state], rng.random(), side="right"))

    def walk(self, state: int, rng: np.random.Generator, max_steps: int) -> list[int]:
        """The states visited after ``state`` (not including it) until an answer state or
        ``max_steps`` transitions."""
        out: list[int] = []
        for _ in range(max_steps):
            if self.answer[state]:
                break
            state = self.step(state, rng)
            out.append(state)
        return out

    def step_many(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One transition for each walker in ``states`` (answer states stay put)."""
        u = rng.random(len(states))
        nxt = (u[:, None] >= self.cum[states]).sum(1)
        return np.minimum(nxt, self.n_states - 1)

    def first_hits(self, n: int, rng: np.random.Generator, max_steps: int,
                   start: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` independent walks from ``start``: (steps until the first answer state or
        ``max_steps``, the state they ended in). Vectorised; for Monte-Carlo checks and fast paths."""
        cur = np.full(n, self.start if start is None else start, dtype=np.int64)
        t = np.zeros(n, dtype=np.int64)
        live = ~self.answer[cur]
        for _ in range(max_steps):
            if not live.any():
                break
            idx = np.flatnonzero(live)
            cur[idx] = self.step_many(cur[idx], rng)
            t[idx] += 1
            live[idx] = ~self.answer[cur[idx]]
        return t, cur

    def sample_paths(self, n: int, rng: np.random.Generator, max_steps: int,
                     start: int | None = None) -> list[list[int]]:
        """``n`` paths as state lists (start included), each ending at an answer or ``max_steps``."""
        s0 = self.start if start is None else start
        return [[s0, *self.walk(s0, rng, max_steps)] for _ in range(n)]

    def path_from_names(self, names: Sequence[str]) -> list[int]:
        return [self.index[n] for n in names]

    def sparse_crossings(self, path: Sequence[int]) -> int:
        """Sparse edges crossed along ``path`` that lower the distance to the goal."""
        d = self.crossings_to_goal_cached
        return sum(1 for a, b in itertools.pairwise(path)
                   if self.sparse[a, b] and 0 <= d[b] < d[a])

    @cached_property
    def crossings_to_goal_cached(self) -> np.ndarray:
        return self.crossings_to_goal()


def _singular(A: np.ndarray) -> bool:
    return bool(np.linalg.cond(A) > 1e12)


# --- builders -------------------------------------------------------------------------------------
def _dirichlet_row(rng: np.random.Generator, k: int, concentration: float) -> np.ndarray:
    return rng.dirichlet(np.full(k, concentration))


def ladder_chain(K: int = 4, m: int = 6, eps: float = 0.01, *, seed: int = 0, delta: float = 0.0,
                 finish: float = 0.25, back: float = 0.0, concentration: float = 1.0,
                 start_cluster: int = 0) -> MetastableChain:
    """``K`` clusters of ``m`` states in a row; the goal hangs off the last cluster.

    - inside cluster ``k`` every state moves to a state of the same cluster (Dirichlet weights with
      ``concentration``, drawn with ``seed``);
    - the *exit* state of cluster ``k < K-1`` (its last state) has a sparse edge of probability
      ``eps`` to the *entry* state (first state) of cluster ``k+1``; with ``back > 0`` the entry state
      of cluster ``k > 0`` also has a sparse edge of probability ``back * eps`` back to the exit of
      ``k-1``;
    - every state of the last cluster answers correctly (goal ``a0``) with probability ``finish``;
    - with ``delta > 0`` every state of cluster ``k`` gives up with probability ``delta`` and answers
      wrongly with ``a{k+1}`` (one typical wrong answer per cluster).

    The walk starts at the entry state of ``start_cluster``; it needs ``K - 1 - start_cluster``
    sparse crossings.
    """
    if not 0 < eps < 1:
        raise ValueError("eps must be in (0, 1)")
    rng = np.random.default_rng(seed)
    n_ans = 1 + (K if delta > 0 else 0)
    S = K * m + n_ans
    P = np.zeros((S, S))
    sparse = np.zeros((S, S), dtype=bool)
    cluster = np.full(S, -1)
    answer = np.zeros(S, dtype=bool)
    goal = K * m
    answer[K * m:] = True
    for a in range(K * m, S):
        P[a, a] = 1.0
    for k in range(K):
        lo = k * m
        cluster[lo:lo + m] = k
        for i in range(m):
            s = lo + i
            out = 0.0
            if k < K - 1 and i == m - 1:
                P[s, lo + m] = eps
                sparse[s, lo + m] = True
                out += eps
            if back > 0 and k > 0 and i == 0:
                P[s, lo - 1] = back * eps
                sparse[s, lo - 1] = True
                out += back * eps
            if k == K - 1:
                P[s, goal] = finish
                out += finish
            if delta > 0:
                P[s, K * m + 1 + k] = delta
                out += delta
            P[s, lo:lo + m] += (1.0 - out) * _dirichlet_row(rng, m, concentration)
    names = tuple([f"s{i}" for i in range(K * m)] + [f"a{j}" for j in range(n_ans)])
    return MetastableChain(P, names, cluster, sparse, answer, goal, start_cluster * m,
                           meta={"kind": "ladder", "K": K, "m": m, "eps": eps, "delta": delta, "seed": seed,
                                 "finish": finish, "back": back, "start_cluster": start_cluster,
                                 "crossings": K - 1 - start_cluster})


@dataclass(frozen=True)
class Style:
    """One solution style of :func:`styles_chain`: its prior weight, clusters and crossing prob."""

    weight: float
    clusters: int
    eps: float


DEFAULT_STYLES = (Style(0.5, 1, 0.2), Style(0.3, 2, 0.3), Style(0.2, 4, 0.45))


def styles_chain(*, seed: int = 0, styles: Sequence[Style] = DEFAULT_STYLES, m: int = 4, n_answers: int = 6,
                 finish: float = 0.3, concentration: float = 1.0, quality: float = 0.6) -> MetastableChain:
    """A heterogeneous base policy (Setlur et al.): the first step picks a solution *style*, each a
    small ladder of metastable clusters with its own length, and the last cluster of each style
    answers with probability ``finish`` per step.

    Per problem (``seed``), style ``j`` answers correctly with probability ``q_j ~ Beta(quality,
    quality)`` (U-shaped for ``quality < 1``: anti-concentrated rewards) and otherwise gives its own
    typical wrong answer ``d_j``; which answer state is correct (``g``) and which are the
    distractors are drawn per problem too, so answers carry no information across problems. State
    names and the cluster layout are the same for every seed: only the kernel differs.
    """
    rng = np.random.default_rng(seed)
    n_live = 1 + sum(st.clusters * m for st in styles)
    S = n_live + n_answers
    P = np.zeros((S, S))
    sparse = np.zeros((S, S), dtype=bool)
    cluster = np.full(S, -1)
    answer = np.zeros(S, dtype=bool)
    answer[n_live:] = True
    for a in range(n_live, S):
        P[a, a] = 1.0
    ans = rng.permutation(n_answers)
    goal = n_live + int(ans[0])
    wrong = [n_live + int(x) for x in rng.choice(ans[1:], size=len(styles), replace=True)]
    q = rng.beta(quality, quality, size=len(styles))
    w = np.array([st.weight for st in styles], dtype=float)
    cluster[0] = 0
    nxt = 1
    cid = 1
    entries = []
    for j, st in enumerate(styles):
        entries.append(nxt)
        for k in range(st.clusters):
            lo = nxt
            cluster[lo:lo + m] = cid
            for i in range(m):
                s = lo + i
                out = 0.0
                if k < st.clusters - 1 and i == m - 1:
                    P[s, lo + m] = st.eps
                    sparse[s, lo + m] = True
                    out += st.eps
                if k == st.clusters - 1:
                    P[s, goal] += finish * q[j]
                    P[s, wrong[j]] += finish * (1 - q[j])
                    out += finish
                P[s, lo:lo + m] += (1.0 - out) * _dirichlet_row(rng, m, concentration)
            nxt += m
            cid += 1
    P[0, entries] = w / w.sum()
    sparse[0, entries] = False
    names = tuple([f"s{i}" for i in range(n_live)] + [f"a{j}" for j in range(n_answers)])
    return MetastableChain(P, names, cluster, sparse, answer, goal, 0,
                           meta={"kind": "styles", "seed": seed, "q": q.round(4).tolist(),
                                 "wrong": [names[x] for x in wrong], "entries": entries})


# --- distillation ---------------------------------------------------------------------------------
def transition_counts(paths: Sequence[Sequence[int]], n_states: int) -> np.ndarray:
    """``C[s, s']`` = how often ``s -> s'`` occurs in ``paths`` (state lists)."""
    C = np.zeros((n_states, n_states))
    for p in paths:
        if len(p) > 1:
            np.add.at(C, (np.asarray(p[:-1]), np.asarray(p[1:])), 1.0)
    return C


def fit_kernel(paths: Sequence[Sequence[int]], n_states: int, *, prior: np.ndarray | None = None,
               pseudocount: float = 0.0) -> np.ndarray:
    """Maximum-likelihood transition kernel of ``paths`` (add ``pseudocount * prior[s]`` to each
    row's counts; rows never visited fall back to ``prior``, or stay put without one)."""
    C = transition_counts(paths, n_states)
    base = prior if prior is not None else np.eye(n_states)
    C = C + pseudocount * base
    tot = C.sum(1, keepdims=True)
    return np.where(tot > 0, C / np.where(tot > 0, tot, 1.0), base)


def distill_tilt(success_paths: Sequence[Sequence[int]], all_paths: Sequence[Sequence[int]],
                 n_states: int, *, pseudocount: float = 1.0, prior: np.ndarray | None = None) -> np.ndarray:
    """The per-edge tilt learned by imitating correct traces pooled over training problems:
    ``T[s, s'] = P_succ(s'|s) / P_all(s'|s)`` with both kernels fit by :func:`fit_kernel` (smoothed
    toward ``prior``, default uniform over the edges seen at all). A problem's distilled policy is its
    base kernel times ``T``, renormalised (:func:`apply_tilt`): the model keeps what it knows about the
    problem and learns what correct traces do *on average*."""
    C_all = transition_counts(all_paths, n_states)
    if prior is None:
        seen = (C_all > 0).astype(float)
        rows = seen.sum(1, keepdims=True)
        prior = np.where(rows > 0, seen / np.where(rows > 0, rows, 1.0), np.eye(n_states))
    p_succ = fit_kernel(success_paths, n_states, prior=prior, pseudocount=pseudocount)
    p_all = fit_kernel(all_paths, n_states, prior=prior, pseudocount=pseudocount)
    with np.errstate(divide="ignore", invalid="ignore"):
        T = np.where(p_all > 0, p_succ / np.where(p_all > 0, p_all, 1.0), 1.0)
    return T


def apply_tilt(chain: MetastableChain, tilt: np.ndarray) -> MetastableChain:
    """``chain``'s kernel times ``tilt``, renormalised row by row (rows that vanish keep the base)."""
    P = chain.P * tilt
    tot = P.sum(1, keepdims=True)
    P = np.where(tot > 0, P / np.where(tot > 0, tot, 1.0), chain.P)
    return chain.with_kernel(P, distilled=True)
