"""The three testbed experiments (``docs/testbed.md``). Each is a function
``(seed, out_dir, quick=False) -> list[dict]`` that returns its table and writes
``<name>.png``, ``<name>.csv`` (the plotted numbers) and ``<name>.json`` (settings + table + fits)
under ``out_dir``. Strategies run through ttscale's :class:`~ttscale.lab.runner.Runner` (``solve``
per problem, nothing written) on :class:`~ttscale.testbeds.engine.ChainEngine`; only the beam-search
sweep of experiment 1 at small ε uses the numpy fast path :func:`fast_beam_hitting`
(cross-checked against the Runner in ``tests/test_testbed.py``).

1. :func:`hitting_time` — mean hitting time vs 1/ε, plain sampling vs beam search on the
   sparse-edge reward (Kim et al.);
2. :func:`vb_vs_vf` — accuracy vs budget N, verifier-based (best-of-N with the 0/1 outcome,
   beam search with the exact and the noisy PRM) vs verifier-free (the distilled policy: majority
   over N samples, or one sample with N times the tokens) on a heterogeneous base (Setlur et al.);
3. :func:`difficulty_bins` — best-of-N vs beam search (noisy PRM) by crossings needed and budget
   (Snell et al.).
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.core.protocols import Engine, Verifier
from ttscale.core.types import Problem, Result
from ttscale.testbeds.answers import StateAnswers
from ttscale.testbeds.engine import ChainEngine, distilled_engine, make_problem
from ttscale.testbeds.metastable import MetastableChain, distill_tilt, ladder_chain, styles_chain
from ttscale.testbeds.verifiers import ExactPRM, NoisyPRM, OutcomeVerifier, SparseEdgeReward

OUT_DIR = Path("docs/testbed")


# --- shared helpers -------------------------------------------------------------------------------
def run_strategy(engine: Engine, problems: Sequence[Problem], strategy: str, params: Mapping[str, Any],
                 verifiers: Mapping[str, Verifier] | None = None, seed: int = 0) -> list[Result]:
    """Run a registered ttscale strategy, unchanged, on every problem (Runner.solve, no file)."""
    from ttscale.lab.runner import Runner

    answers = StateAnswers()
    runner = Runner(engine=engine, strategy=strategy, params=dict(params), answers=answers, grader=answers,
                    verifiers=dict(verifiers or {}), seed=seed, system_prompt=None, progress=False)

    async def go() -> list[Result]:
        return list(await asyncio.gather(*(runner.solve(p) for p in problems)))

    return asyncio.run(go())


def accuracy(results: Sequence[Result]) -> float:
    return float(np.mean([bool(r.correct) for r in results])) if results else float("nan")


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def write_outputs(out_dir: Path, name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with (out_dir / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out_dir / f"{name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=1, default=float) + "\n")


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt: Any, fig: Any, out_dir: Path, name: str, **layout: Any) -> None:
    """Lay out ``fig``, write it as ``<out_dir>/<name>.png`` (120 dpi) and close it."""
    fig.tight_layout(**layout)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{name}.png", dpi=120)
    plt.close(fig)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y on log x."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


# --- experiment 1 ---------------------------------------------------------------------------------
def fast_beam_hitting(chain: MetastableChain, reward: SparseEdgeReward, n: int, beam_width: int,
                      replicates: int, rng: np.random.Generator, max_rounds: int = 10**6) -> np.ndarray:
    """Numpy twin of ttscale's ``beam_search`` on ``chain`` with the sparse-edge reward, up to the
    first path that reaches the goal: the number of rounds (= that path's length) per replicate.

    Same rules as :func:`ttscale.strategies.beam_search.beam_rounds`: N children per round, the
    best ``N // beam_width`` live ones kept (score = the reward's last-step value; ties go to the
    child created first), each kept beam expanded ``N / kept`` ways. Only for chains without wrong
    answers (every beam eventually reaches the goal)."""
    d = chain.crossings_to_goal_cached
    need = max(int(d[chain.start]), 0) + 1
    keep = max(1, n // beam_width)
    R = replicates
    # round 1: N children of the root
    par_state = np.full((R, 1), chain.start)
    par_cross = np.zeros((R, 1))
    widths = np.array([n])
    hit = np.zeros(R, dtype=np.int64)
    live = np.ones(R, dtype=bool)
    for rnd in range(1, max_rounds + 1):
        reps = np.repeat(np.arange(par_state.shape[1]), widths)
        cs = par_state[:, reps]
        cc = par_cross[:, reps].copy()
        flat = cs.reshape(-1)
        nxt = chain.step_many(flat, rng).reshape(cs.shape)
        cross = chain.sparse[cs, nxt] & (d[nxt] >= 0) & (d[nxt] < d[cs])
        cc += cross
        at_goal = nxt == chain.goal
        newly = live & at_goal.any(1)
        hit[newly] = rnd
        live &= ~newly
        if not live.any():
            break
        score = (cc + at_goal) / need - 10.0 * at_goal  # finished children leave the pool
        order = np.argsort(-score, axis=1, kind="stable")[:, :keep]
        par_state = np.take_along_axis(nxt, order, 1)
        par_cross = np.take_along_axis(cc, order, 1)
        k = par_state.shape[1]
        widths = np.array([n // k + (1 if i < n % k else 0) for i in range(k)])
    return hit


def hitting_time(seed: int = 0, out_dir: Path = OUT_DIR, *, quick: bool = False) -> list[dict[str, Any]]:
    """Experiment 1: mean steps to reach the goal vs 1/ε (log-log), for plain sampling (exact
    formula and Monte Carlo) and for beam search on the sparse-edge reward (its path's length and its
    compute), with fitted slopes."""
    t0 = time.perf_counter()
    K, m, n, M = 4, 6, 16, 4
    eps_list = [0.3, 0.1, 0.03, 0.01] if quick else [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
    runner_eps = {0.3, 0.1}
    walkers = 100 if quick else 400
    reps = 50 if quick else 200
    runner_reps = 8 if quick else 16
    rng = np.random.default_rng(seed)
    rows = []
    for eps in eps_list:
        chain = ladder_chain(K, m, eps, seed=seed)
        reward = SparseEdgeReward(chain)
        exact = float(chain.hitting_times()[chain.start])
        t, _end = chain.first_hits(walkers, rng, max_steps=50 * int(exact))
        beam = fast_beam_hitting(chain, reward, n, M, reps, rng)
        row: dict[str, Any] = {
            "eps": eps, "inv_eps": 1 / eps, "sampling_exact": round(exact, 3),
            "sampling_mc": round(float(t.mean()), 3), "sampling_mc_se": round(float(t.std() / math.sqrt(len(t))), 3),
            "beam_path": round(float(beam.mean()), 3), "beam_path_se": round(float(beam.std() / math.sqrt(reps)), 3),
            "beam_compute": round(float(beam.mean()) * n, 3), "floor_compute": round((K - 1) / eps, 3),
            "beam_runner_path": None, "beam_runner_compute": None,
        }
        if eps in runner_eps:
            probs = [make_problem(f"e{eps}-r{i}", chain) for i in range(runner_reps)]
            res = run_strategy(ChainEngine(chain), probs, "beam_search",
                               {"n": n, "beam_width": M, "verifier": "sparse_edge", "max_steps": 100_000,
                                "max_tokens": 10**7, "max_step_tokens": 1},
                               {"sparse_edge": reward}, seed=seed)
            depths = [min(int(c.extra.get("depth", 0)) for c in r.candidates if c.correct) for r in res]
            row["beam_runner_path"] = round(float(np.mean(depths)), 3)
            row["beam_runner_compute"] = round(float(np.mean(depths)) * n, 3)
        rows.append(row)
    inv = [r["inv_eps"] for r in rows]
    fits = {
        "slope_sampling_exact": loglog_slope(inv, [r["sampling_exact"] for r in rows]),
        "slope_sampling_mc": loglog_slope(inv, [r["sampling_mc"] for r in rows]),
        "slope_beam_path": loglog_slope(inv, [r["beam_path"] for r in rows]),
        "slope_beam_compute": loglog_slope(inv, [r["beam_compute"] for r in rows]),
        "slope_beam_path_small_eps": loglog_slope(inv[-3:], [r["beam_path"] for r in rows[-3:]]),
    }
    fits = {k: round(v, 3) for k, v in fits.items()}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.loglog(inv, [r["sampling_exact"] for r in rows], "k-", label=f"sampling, exact (slope {fits['slope_sampling_exact']:.2f})")
    ax.errorbar(inv, [r["sampling_mc"] for r in rows], yerr=[r["sampling_mc_se"] for r in rows], fmt="ko",
                ms=4, label="sampling, Monte Carlo")
    ax.errorbar(inv, [r["beam_path"] for r in rows], yerr=[r["beam_path_se"] for r in rows], fmt="s-", color="C1",
                ms=4, label=f"beam (sparse-edge reward): path length (slope {fits['slope_beam_path']:.2f})")
    ax.loglog(inv, [r["beam_compute"] for r in rows], "^--", color="C2", ms=4,
              label=f"beam: steps generated (slope {fits['slope_beam_compute']:.2f})")
    rx = [r["inv_eps"] for r in rows if r["beam_runner_path"] is not None]
    ax.loglog(rx, [r["beam_runner_path"] for r in rows if r["beam_runner_path"] is not None], "D", color="C3",
              mfc="none", ms=8, label="beam via ttscale Runner (check)")
    ax.loglog(inv, [r["floor_compute"] for r in rows], ":", color="gray", label="floor (K-1)/ε on steps generated by any search")
    ax.set_xlabel("1/ε (inverse sparse-edge probability)")
    ax.set_ylabel("steps to reach the goal")
    ax.set_title(f"Metastable chain K={K}, m={m}: hitting time (N={n}, width {M}, seed {seed})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    _save_figure(plt, fig, out_dir, "hitting_time")
    meta = {"experiment": "hitting_time", "seed": seed, "K": K, "m": m, "n": n, "beam_width": M,
            "walkers": walkers, "replicates": reps, "runner_replicates": runner_reps, "fits": fits,
            "seconds": round(time.perf_counter() - t0, 1)}
    write_outputs(out_dir, "hitting_time", rows, meta)
    return rows


# --- experiment 2 ---------------------------------------------------------------------------------
VB_BEST_OF_N = "VB best-of-N (0/1 outcome)"
VF_MAJORITY = "VF distilled, majority of N"


def _distillation_traces(seed: int, n_train: int, per_train: int, horizon: int,
                         rng: np.random.Generator) -> tuple[list[list[int]], list[list[int]]]:
    """Rollouts of the base policy on training problems: all of them and the correct ones."""
    all_paths: list[list[int]] = []
    succ_paths: list[list[int]] = []
    for i in range(n_train):
        c = styles_chain(seed=10_000 * (seed + 1) + i)
        for p in c.sample_paths(per_train, rng, horizon):
            all_paths.append(p)
            if p[-1] == c.goal:
                succ_paths.append(p)
    return all_paths, succ_paths


def _vb_vf_runs(base: Engine, vf: Engine, problems: Sequence[Problem], N: int, H: int, sigma: float,
                verifiers: Mapping[str, Verifier], seed: int) -> dict[str, list[Result]]:
    """Every method of experiment 2 at budget N, by its legend label."""
    beam = {"n": N, "beam_width": min(4, N), "max_steps": H, "max_tokens": H, "max_step_tokens": 1}
    return {
        VB_BEST_OF_N: run_strategy(base, problems, "best_of_n", {"n": N, "verifier": "outcome", "max_tokens": H},
                                   {"outcome": verifiers["outcome"]}, seed),
        "VB beam (exact PRM)": run_strategy(base, problems, "beam_search", {**beam, "verifier": "prm"},
                                            {"prm": verifiers["prm"]}, seed),
        f"VB beam (noisy PRM, sigma={sigma:g})": run_strategy(base, problems, "beam_search",
                                                              {**beam, "verifier": "noisy_prm"},
                                                              {"noisy_prm": verifiers["noisy_prm"]}, seed),
        VF_MAJORITY: run_strategy(vf, problems, "self_consistency", {"n": N, "max_tokens": H}, None, seed),
        "VF distilled, 1 sample of N*H steps": run_strategy(vf, problems, "self_consistency",
                                                            {"n": 1, "max_tokens": N * H}, None, seed),
        "base, majority of N": run_strategy(base, problems, "self_consistency",
                                            {"n": N, "max_tokens": H}, None, seed),
    }


def _plot_vb_vs_vf(rows: Sequence[Mapping[str, Any]], out_dir: Path, n_test: int, seed: int) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.6, 4.6))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    styles = {VB_BEST_OF_N: "o-", "VB beam (exact PRM)": "s-", VF_MAJORITY: "v--", "base, majority of N": "x:",
              "exact pass@N of base (oracle verifier)": "k:"}
    for i, meth in enumerate(methods):
        pts = [r for r in rows if r["method"] == meth]
        ax.errorbar([r["budget"] for r in pts], [r["accuracy"] for r in pts],
                    yerr=[r["stderr"] for r in pts], fmt=styles.get(meth, "^-" if meth.startswith("VB") else "d--"),
                    color=None if meth.startswith("exact") else f"C{i}", ms=4, capsize=2, label=meth)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("test-time budget N (samples / beam size; horizon H=30 steps each)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"VB vs VF on a heterogeneous 3-style base ({n_test} problems, seed {seed})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, alpha=0.3)
    _save_figure(plt, fig, out_dir, "vb_vs_vf")


def vb_vs_vf(seed: int = 0, out_dir: Path = OUT_DIR, *, quick: bool = False) -> list[dict[str, Any]]:
    """Experiment 2: accuracy vs budget N (samples or beam width N; horizon H steps each) for
    verifier-based methods on the base policy vs the verifier-free distilled policy."""
    t0 = time.perf_counter()
    H = 30
    n_test = 24 if quick else 48
    n_train, per_train = (100, 16) if quick else (300, 32)
    budgets = [1, 2, 4, 8] if quick else [1, 2, 4, 8, 16, 32]
    sigma = 1.0
    rng = np.random.default_rng(seed)
    # the distilled (verifier-free) policy: imitate the correct traces of training problems
    all_paths, succ_paths = _distillation_traces(seed, n_train, per_train, H, rng)
    test = {f"q{i}": styles_chain(seed=seed * 1000 + i) for i in range(n_test)}
    tilt = distill_tilt(succ_paths, all_paths, next(iter(test.values())).n_states)
    problems = [make_problem(pid, c) for pid, c in test.items()]
    base = ChainEngine(test)
    vf = distilled_engine(test, tilt)
    p_base = np.array([c.success_prob(H, c.start) for c in test.values()])
    p_vf = np.array([vf.chain_for(pid).success_prob(H, vf.chain_for(pid).start) for pid in test])
    verifiers = {"outcome": OutcomeVerifier(test), "prm": ExactPRM(test, H),
                 "noisy_prm": NoisyPRM(test, H, sigma=sigma, seed=seed)}
    rows = []
    for N in budgets:
        for method, res in _vb_vf_runs(base, vf, problems, N, H, sigma, verifiers, seed).items():
            acc = accuracy(res)
            rows.append({"budget": N, "method": method, "accuracy": round(acc, 4),
                         "stderr": round(_stderr(acc, len(res)), 4),
                         "mean_generated_steps": round(float(np.mean([r.cost.generated_tokens for r in res])), 2)})
        rows.append({"budget": N, "method": "exact pass@N of base (oracle verifier)",
                     "accuracy": round(float(np.mean(1 - (1 - p_base) ** N)), 4), "stderr": 0.0,
                     "mean_generated_steps": None})
    gaps = {N: round(next(r["accuracy"] for r in rows if r["budget"] == N and r["method"] == VB_BEST_OF_N)
                     - next(r["accuracy"] for r in rows if r["budget"] == N and r["method"] == VF_MAJORITY), 4)
            for N in budgets}
    _plot_vb_vs_vf(rows, out_dir, n_test, seed)
    meta = {"experiment": "vb_vs_vf", "seed": seed, "horizon": H, "test_problems": n_test,
            "train_problems": n_train, "rollouts_per_train_problem": per_train,
            "train_correct_traces": len(succ_paths), "noisy_prm_sigma": sigma, "budgets": budgets,
            "gap_bestofn_minus_vf_majority": gaps,
            "base_success_per_problem": {"mean": round(float(p_base.mean()), 4), "std": round(float(p_base.std()), 4),
                                         "frac_below_0.1": round(float((p_base < 0.1).mean()), 4),
                                         "frac_above_0.5": round(float((p_base > 0.5).mean()), 4),
                                         "quantiles_10_50_90": np.quantile(p_base, [0.1, 0.5, 0.9]).round(4).tolist()},
            "distilled_success_mean": round(float(p_vf.mean()), 4),
            "seconds": round(time.perf_counter() - t0, 1)}
    write_outputs(out_dir, "vb_vs_vf", rows, meta)
    return rows


# --- experiment 3 ---------------------------------------------------------------------------------
METHODS3 = ("best-of-N (noisy PRM)", "beam search (noisy PRM)", "beam search (exact PRM, reference)")


def difficulty_bins(seed: int = 0, out_dir: Path = OUT_DIR, *, quick: bool = False) -> list[dict[str, Any]]:
    """Experiment 3: best-of-N vs beam search, both on the noisy PRM (last-step score), by the
    number of sparse crossings a problem needs, at several budgets."""
    t0 = time.perf_counter()
    K, m, eps, delta, H, sigma = 5, 4, 0.25, 0.02, 40, 1.0
    per_bin = 8 if quick else 16
    budgets = [4, 16] if quick else [4, 16, 64]
    bins = [1, 2, 3, 4]
    chains: dict[str, MetastableChain] = {}
    for d in bins:
        for i in range(per_bin):
            chains[f"d{d}-{i}"] = ladder_chain(K, m, eps, seed=seed * 1000 + 100 * d + i, delta=delta,
                                               start_cluster=K - 1 - d)
    problems = [make_problem(pid, c) for pid, c in chains.items()]
    eng = ChainEngine(chains)
    noisy = NoisyPRM(chains, H, sigma=sigma, seed=seed)
    exact = ExactPRM(chains, H)
    p_base = {pid: c.success_prob(H, c.start) for pid, c in chains.items()}
    rows = []
    for N in budgets:
        res_bon = run_strategy(eng, problems, "best_of_n",
                               {"n": N, "verifier": "noisy_prm", "aggregate": "last", "max_tokens": H},
                               {"noisy_prm": noisy}, seed)
        beam = {"n": N, "beam_width": 4, "max_steps": H, "max_tokens": H, "max_step_tokens": 1}
        res_beam = run_strategy(eng, problems, "beam_search", {**beam, "verifier": "noisy_prm"},
                                {"noisy_prm": noisy}, seed)
        res_exact = run_strategy(eng, problems, "beam_search", {**beam, "verifier": "prm"}, {"prm": exact}, seed)
        for d in bins:
            idx = [i for i, p in enumerate(problems) if p.metadata["crossings"] == d]
            for method, res in zip(METHODS3, (res_bon, res_beam, res_exact), strict=True):
                sub = [res[i] for i in idx]
                acc = accuracy(sub)
                # how often the chosen answer is wrong although a correct one was among the candidates
                overopt = float(np.mean([(not r.correct) and any(c.correct for c in r.candidates) for r in sub]))
                rows.append({"budget": N, "crossings": d, "method": method, "accuracy": round(acc, 4),
                             "stderr": round(_stderr(acc, len(sub)), 4), "picked_wrong_over_correct": round(overopt, 4),
                             "pass_at_N_exact": round(float(np.mean([1 - (1 - p_base[problems[i].id]) ** N
                                                                     for i in idx])), 4)})
    plt = _plt()
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.3 * len(budgets), 3.8), sharey=True)
    axes = np.atleast_1d(axes)
    width = 0.27
    for ax, N in zip(axes, budgets, strict=True):
        for j, method in enumerate(METHODS3):
            pts = [r for r in rows if r["budget"] == N and r["method"] == method]
            ax.bar(np.arange(len(bins)) + (j - 1) * width, [r["accuracy"] for r in pts], width,
                   yerr=[r["stderr"] for r in pts], capsize=2, color=f"C{j}", label=method,
                   alpha=0.45 if "exact" in method else 1.0)
        pts = [r for r in rows if r["budget"] == N and r["method"].startswith("best")]
        ax.plot(np.arange(len(bins)), [r["pass_at_N_exact"] for r in pts], "k_", ms=18, mew=2,
                label="exact pass@N (perfect verifier)")
        ax.set_xticks(np.arange(len(bins)), [str(b) for b in bins])
        ax.set_xlabel("sparse crossings needed (difficulty)")
        ax.set_title(f"N = {N}", fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=4)
    fig.suptitle(f"Best-of-N vs beam search by difficulty (noisy PRM σ={sigma:g}, {per_bin}/bin, seed {seed})",
                 fontsize=9)
    _save_figure(plt, fig, out_dir, "difficulty_bins", rect=(0, 0.07, 1, 1))
    meta = {"experiment": "difficulty_bins", "seed": seed, "K": K, "m": m, "eps": eps, "delta": delta,
            "horizon": H, "noisy_prm_sigma": sigma, "problems_per_bin": per_bin, "budgets": budgets,
            "base_success_by_bin": {d: round(float(np.mean([p_base[p.id] for p in problems
                                                             if p.metadata["crossings"] == d])), 4) for d in bins},
            "seconds": round(time.perf_counter() - t0, 1)}
    write_outputs(out_dir, "difficulty_bins", rows, meta)
    return rows


EXPERIMENTS = {"hitting": hitting_time, "vb-vf": vb_vs_vf, "difficulty": difficulty_bins}
