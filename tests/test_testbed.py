"""The metastable-chain testbed: exact quantities vs Monte Carlo, the engine's text protocol,
the verifiers, distillation, unchanged ttscale strategies on it, and the fast path vs the Runner."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from ttscale.core.types import Candidate, GenerationRequest
from ttscale.testbeds import (
    ChainEngine,
    ExactPRM,
    NoisyPRM,
    OutcomeVerifier,
    SparseEdgeReward,
    StateAnswers,
    distill_tilt,
    fit_kernel,
    ladder_chain,
    make_problem,
    parse_path,
    path_text,
    styles_chain,
)
from ttscale.testbeds.experiments import fast_beam_hitting, run_strategy

D = "\n\n"


# --- exact quantities -----------------------------------------------------------------------------
def test_dp_success_probability_matches_monte_carlo():
    c = ladder_chain(5, 4, 0.25, seed=3, delta=0.02, start_cluster=2)
    rng = np.random.default_rng(0)
    n = 20_000
    for H in (10, 25, 40):
        p = c.success_prob(H, c.start)
        _, end = c.first_hits(n, rng, H)
        mc = float((end == c.goal).mean())
        assert abs(mc - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3, (H, p, mc)
    # from another (non-start) state too, and the table is monotone in the horizon
    s = c.index["s9"]
    V = c.success_table(40)
    assert np.all(np.diff(V[:, s]) >= -1e-12)
    _, end = c.first_hits(n, rng, 30, start=s)
    assert abs(float((end == c.goal).mean()) - V[30, s]) < 0.015
    # eventual success probability = limit of the table; matches a long MC run
    assert abs(c.hit_probability()[c.start] - c.success_prob(5000, c.start)) < 1e-6


def test_styles_chain_dp_matches_monte_carlo():
    c = styles_chain(seed=7)
    rng = np.random.default_rng(1)
    p = c.success_prob(30, c.start)
    _, end = c.first_hits(20_000, rng, 30)
    assert abs(float((end == c.goal).mean()) - p) < 0.015
    # state names and layout are shared across problems, only the kernel differs
    c2 = styles_chain(seed=8)
    assert c.names == c2.names and not np.allclose(c.P, c2.P)


def test_hitting_time_formula_matches_simulation_and_scales_as_one_over_eps():
    rng = np.random.default_rng(2)
    hs = []
    for eps in (0.2, 0.05, 0.0125):
        c = ladder_chain(3, 4, eps, seed=0)
        h = float(c.hitting_times()[c.start])
        t, end = c.first_hits(3000, rng, 100 * int(h))
        assert np.all(end == c.goal)
        assert abs(t.mean() - h) < 4 * t.std() / math.sqrt(len(t)), (eps, h, t.mean())
        hs.append(h)
    slope = np.polyfit(np.log([5, 20, 80]), np.log(hs), 1)[0]
    assert 0.85 < slope < 1.05
    # hand-checkable case: 2-state chain s0 -> a0 with prob q: E[T] = 1/q
    c = ladder_chain(1, 1, 0.5, finish=0.1)
    assert c.hitting_times()[c.start] == pytest.approx(10.0)
    assert c.success_prob(3, c.start) == pytest.approx(1 - 0.9**3)


def test_crossings_and_wrong_answers():
    c = ladder_chain(5, 4, 0.25, seed=0, delta=0.02, start_cluster=1)
    d = c.crossings_to_goal()
    assert d[c.start] == 3 and d[c.goal] == 0
    assert c.meta["crossings"] == 3
    assert c.hitting_times()[c.start] == np.inf  # wrong answers absorb with positive probability
    assert 0 < c.hit_probability()[c.start] < 1


# --- engine protocol ------------------------------------------------------------------------------
async def test_engine_step_protocol_with_prefix_and_stop():
    c = ladder_chain(2, 3, 0.3, seed=1)
    eng = ChainEngine(c)
    msgs = ({"role": "user", "content": "go"},)
    out = await eng.generate(GenerationRequest(messages=msgs, n=5, stop=(D,), seed=11))
    assert len(out) == 5
    for comp in out:
        assert D not in comp.text and comp.completion_tokens == 1
        a, b = comp.text.split(" -> ")
        assert a == "s0"
        assert c.P[c.index["s0"], c.index[b.split()[0]]] > 0
    # continuing a prefix: the step starts where the prefix ended
    prefix = "s0 -> s2" + D + "s2 -> s3" + D
    out = await eng.generate(GenerationRequest(messages=msgs, prefix=prefix, n=20, stop=(D,), seed=5))
    assert all(o.text.startswith("s3 -> ") for o in out)
    assert out[0].prompt_tokens == 3
    # the same seed gives the same samples; another seed other ones
    again = await eng.generate(GenerationRequest(messages=msgs, prefix=prefix, n=20, stop=(D,), seed=5))
    assert [o.text for o in again] == [o.text for o in out]
    # without the stop string: whole paths to an answer, or "length" at max_tokens
    full = await eng.generate(GenerationRequest(messages=msgs, n=30, max_tokens=500, seed=3))
    for o in full:
        assert o.finish_reason == "stop" and o.text.endswith("\\boxed{a0}")
        assert o.completion_tokens == len(o.text.split(D))
        path = parse_path(c, o.text)
        assert path_text(c, path) == o.text
        assert all(c.P[a, b] > 0 for a, b in itertools.pairwise(path))
    short = await eng.generate(GenerationRequest(messages=msgs, n=1, max_tokens=1, seed=3))
    assert short[0].completion_tokens == 1
    # a finished path gets an empty step (end of sequence)
    done = await eng.generate(GenerationRequest(messages=msgs, prefix=full[0].text + D, stop=(D,), seed=1))
    assert done[0].text == "" and done[0].completion_tokens == 0


def test_engine_step_frequencies_match_the_kernel():
    import asyncio

    c = ladder_chain(2, 3, 0.3, seed=4)
    eng = ChainEngine(c)
    req = GenerationRequest(messages=({"role": "user", "content": "x"},), prefix="s0 -> s2" + D, n=4000,
                            stop=(D,), seed=9)
    out = asyncio.run(eng.generate(req))
    counts = np.zeros(c.n_states)
    for o in out:
        counts[c.index[o.text.split(" -> ")[1].split()[0]]] += 1
    assert np.abs(counts / 4000 - c.P[c.index["s2"]]).max() < 0.03


# --- verifiers ------------------------------------------------------------------------------------
async def test_verifiers_exact_values():
    c = ladder_chain(3, 3, 0.3, seed=2, delta=0.05, start_cluster=0)
    prob = make_problem("p", c)
    # make a valid path to the goal and one to a wrong answer from the kernel's support
    rng = np.random.default_rng(0)
    paths = c.sample_paths(400, rng, 200)
    good = next(p for p in paths if p[-1] == c.goal)
    bad = next(p for p in paths if c.answer[p[-1]] and p[-1] != c.goal)
    cands = [Candidate(text=path_text(c, p)) for p in (good, bad)]
    assert await OutcomeVerifier(c).score(prob, cands) == [1.0, 0.0]
    H = 50
    prm = ExactPRM(c, H)
    steps = await prm.score_steps(prob, cands)
    V = c.success_table(H)
    assert steps[0] == pytest.approx([V[max(H - i, 0), s] for i, s in enumerate(good[1:], 1)])
    assert steps[0][-1] == 1.0 and steps[1][-1] == 0.0
    assert await prm.score_last_steps(prob, cands) == [steps[0][-1], steps[1][-1]]
    # noisy PRM: deterministic per state+seed, order preserved in expectation, sigma=0 -> clipped exact
    n0 = NoisyPRM(c, H, sigma=0.0)
    got = (await n0.score_steps(prob, cands))[0]
    assert got == pytest.approx(np.clip(steps[0], 0.02, 0.98).tolist())
    n1, n1b, n2 = NoisyPRM(c, H, sigma=1.0, seed=1), NoisyPRM(c, H, sigma=1.0, seed=1), NoisyPRM(c, H, sigma=1.0, seed=2)
    a, b, d = [await v.score_steps(prob, cands) for v in (n1, n1b, n2)]
    assert a == b and a != d
    # the error is a fixed logit shift per state: recover it from any step and compare
    z = n1.noise("p", c.n_states)
    for i, s in enumerate(good[1:]):
        v = min(max(steps[0][i], 0.02), 0.98)
        assert a[0][i] == pytest.approx(1 / (1 + math.exp(-(math.log(v / (1 - v)) + z[s]))))
    # sparse-edge reward counts forward crossings (2 needed here) + the goal
    sp = await SparseEdgeReward(c).score_steps(prob, [Candidate(text=path_text(c, good))])
    assert sp[0][-1] == pytest.approx(1.0)
    first_cross = next(i for i, (x, y) in enumerate(itertools.pairwise(good)) if c.sparse[x, y])
    assert sp[0][first_cross] == pytest.approx(1 / 3) and sp[0][first_cross - 1] == 0.0


async def test_answers_and_grader():
    ans = StateAnswers()
    c = ladder_chain(2, 2, 0.5, seed=0)
    prob = make_problem("p", c)
    assert ans.extract("s0 -> s1" + D + "s1 -> a0 \\boxed{a0}") == "a0"
    assert ans.extract("s0 -> s1") is None
    assert await ans.group(["a0", None, "a1", "a0"]) == [0, None, 1, 0]
    assert await ans.grade(prob, "a0") is True
    assert await ans.grade(prob, "a1") is False and await ans.grade(prob, None) is False


# --- distillation ---------------------------------------------------------------------------------
def test_fit_kernel_recovers_the_chain_and_tilt_prefers_success():
    c = ladder_chain(2, 3, 0.3, seed=5, delta=0.05)
    rng = np.random.default_rng(3)
    paths = c.sample_paths(3000, rng, 200)
    P_hat = fit_kernel(paths, c.n_states)
    live = ~c.answer
    assert np.abs(P_hat[live] - c.P[live]).max() < 0.03
    succ = [p for p in paths if p[-1] == c.goal]
    T = distill_tilt(succ, paths, c.n_states)
    wrong = [a for a in range(c.n_states) if c.answer[a] and a != c.goal]
    # correct traces never give up: the tilt suppresses the wrong-answer edges
    assert all(T[s, w] < 0.2 for s in np.flatnonzero(live) for w in wrong if c.P[s, w] > 0)
    from ttscale.testbeds import apply_tilt

    d = apply_tilt(c, T)
    assert d.success_prob(100, d.start) > c.success_prob(100, c.start)


# --- strategies unchanged on the testbed, and the fast path vs the Runner ------------------------
def test_ttscale_strategies_run_unchanged():
    chains = {f"p{i}": ladder_chain(4, 3, 0.3, seed=i, delta=0.02, start_cluster=1) for i in range(6)}
    probs = [make_problem(pid, c) for pid, c in chains.items()]
    eng = ChainEngine(chains)
    H = 40
    bon = run_strategy(eng, probs, "best_of_n", {"n": 16, "verifier": "outcome", "max_tokens": H},
                       {"outcome": OutcomeVerifier(chains)})
    # best-of-N with a perfect outcome verifier is right exactly when some sample is
    for r in bon:
        assert r.correct == any(c.correct for c in r.candidates)
        assert r.cost.generated_tokens == sum(len(c.steps) for c in r.candidates)
    beam = run_strategy(eng, probs, "beam_search",
                        {"n": 8, "beam_width": 2, "verifier": "prm", "max_steps": H, "max_tokens": H,
                         "max_step_tokens": 1}, {"prm": ExactPRM(chains, H)})
    for r in beam:
        assert r.chosen is not None
        path = parse_path(chains[r.problem_id], r.chosen.text)
        assert len(path) - 1 == len(r.chosen.steps) <= H
    sc = run_strategy(eng, probs, "self_consistency", {"n": 5, "max_tokens": H})
    assert all(r.answer is None or r.answer.startswith("a") for r in sc)


def test_fast_beam_path_matches_the_runner():
    c = ladder_chain(3, 4, 0.15, seed=1)
    reward = SparseEdgeReward(c)
    fast = fast_beam_hitting(c, reward, 8, 2, 400, np.random.default_rng(0))
    probs = [make_problem(f"r{i}", c) for i in range(60)]
    res = run_strategy(ChainEngine(c), probs, "beam_search",
                       {"n": 8, "beam_width": 2, "verifier": "sparse_edge", "max_steps": 10_000,
                        "max_tokens": 10**6, "max_step_tokens": 1}, {"sparse_edge": reward})
    slow = np.array([min(int(x.extra["depth"]) for x in r.candidates if x.correct) for r in res], float)
    se = math.sqrt(fast.var() / len(fast) + slow.var() / len(slow))
    assert abs(fast.mean() - slow.mean()) < 4 * se, (fast.mean(), slow.mean(), se)


def test_command_quick(tmp_path: Path):
    import json

    from ttscale.testbeds.command import testbed_command

    testbed_command("hitting", seed=1, out_dir=tmp_path, quick=True)
    meta = json.loads((tmp_path / "hitting_time.json").read_text())
    assert (tmp_path / "hitting_time.png").stat().st_size > 1000
    assert (tmp_path / "hitting_time.csv").read_text().startswith("eps,")
    assert 0.85 < meta["fits"]["slope_sampling_exact"] < 1.05
