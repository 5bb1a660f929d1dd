"""Compute-optimal allocation of samples on recorded reasoning-model samples (Snell et al.'s idea,
applied to majority voting): predict a problem's difficulty from its first few samples, give hard
problems more samples and easy ones fewer, fitted on some benchmarks and tested on another.

Engine: replay of recorded samples (``../shared/reference/recorded/*.jsonl``), drawn in the replay
engine's order per (problem, seed), as in ``bench/adaptive_recorded.py`` (whose loaders and
simulation this reuses).

- Probe: the first ``m`` (4) samples. Predicted difficulty bin = how many of them agree with their
  leading answer (4, 3, 2, <= 1 of 4), and, within each, whether their mean length is above the
  file's median probe length (long traces are the hard ones): 8 bins, no labels used.
- Policy: per bin, a total sample count N_b in {4, 8, 16, 32, 64} (the probes included); the answer
  is the majority over the N_b samples. For a mean-samples budget B the policy is the assignment with
  the highest training accuracy whose mean samples per problem is <= B (exhaustive over the grid,
  bins fitted one at a time by marginal gain per sample, then polished by coordinate ascent).
- Leave-one-benchmark-out: benchmarks are the recorded datasets (AIME 2024, MATH-500) and their
  4-option multiple-choice versions (``--mc``); the policy is fitted on the other benchmarks' files
  and scored on the held-out one, against majority@N at the same mean samples (N = B, interpolated
  between the grid points 4, 8, 16, 32, 64) and ttscale's adaptive rule.

Usage: python bench/allocation_recorded.py [--data DIR] [--seeds 3] [--mc 4] [--budgets 6,8,12,16]
Ends with: RESULT alloc_acc_at_8=<x> maj_acc_at_8=<y> adaptive_acc=<z> adaptive_samples=<s>
(held-out accuracy averaged over benchmarks, each weighing the same).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptive_recorded import (  # a sibling bench script
    DEFAULT_DATA,
    OURS_DEFAULT,
    FileData,
    as_multiple_choice,
    benchmark_of,
    declared_options,
    load,
    machine_line,
    normalizer,
    replay_order,
    sim_ours,
    vote,
)

GRID = (4, 8, 16, 32, 64)
PROBE = 4


@dataclass
class Outcomes:
    """Per (file, problem, seed): the predicted bin, correctness of majority@N for each N in GRID,
    and the adaptive rule's correctness and samples."""

    bench: list[str]
    bins: np.ndarray  # [rows]
    correct: np.ndarray  # [rows, len(GRID)]
    adaptive_correct: np.ndarray
    adaptive_samples: np.ndarray


def probe_bin(labs: Sequence[int], toks: Sequence[int], median_len: float) -> int:
    """Bin 0 (easy) .. 7 (hard) from the first PROBE samples (see the module docstring)."""
    head = [lab for lab in labs[:PROBE] if lab >= 0]
    agree = max((head.count(x) for x in set(head)), default=0)
    level = {4: 0, 3: 1, 2: 2}.get(agree, 3)
    long = float(np.mean(toks[:PROBE])) > median_len
    return 2 * level + int(long)


def outcomes(files: Sequence[FileData], seeds: Sequence[int]) -> Outcomes:
    bench, bins, correct, acorr, asamp = [], [], [], [], []
    for fd in files:
        median_len = float(np.median([float(np.mean(pr.tokens[replay_order(s, pr.pid, len(pr.labels))][:PROBE]))
                                      for pr in fd.problems for s in seeds]))
        for pr in fd.problems:
            for seed in seeds:
                order = replay_order(seed, pr.pid, len(pr.labels))
                labs = [int(x) for x in pr.labels[order]]
                toks = [int(x) for x in pr.tokens[order]]
                bench.append(benchmark_of(fd.name))
                bins.append(probe_bin(labs, toks, median_len))
                correct.append([vote(labs[:n]) == pr.gold for n in GRID])
                n, lab = sim_ours(labs, toks, OURS_DEFAULT, declared_options(fd.name))
                acorr.append(lab == pr.gold)
                asamp.append(n)
    return Outcomes(bench, np.array(bins), np.array(correct, float), np.array(acorr, float), np.array(asamp, float))


def fit(o: Outcomes, rows: np.ndarray, budget: float, nbins: int = 8) -> tuple[int, ...]:
    """Per-bin grid index maximising accuracy on ``rows`` with mean samples <= budget."""
    share = np.array([np.mean(o.bins[rows] == b) for b in range(nbins)])
    acc = np.array([[o.correct[rows][o.bins[rows] == b, j].mean() if share[b] else 0.0
                     for j in range(len(GRID))] for b in range(nbins)])
    choice = [0] * nbins  # everyone at 4 samples

    def cost(c: Sequence[int]) -> float:
        return float(sum(share[b] * GRID[c[b]] for b in range(nbins)))

    def value(c: Sequence[int]) -> float:
        return float(sum(share[b] * acc[b, c[b]] for b in range(nbins)))

    while True:  # greedy: the upgrade with the best accuracy gain per extra sample that fits
        best, gain = None, 0.0
        for b in range(nbins):
            for j in range(choice[b] + 1, len(GRID)):
                c = list(choice)
                c[b] = j
                if cost(c) <= budget + 1e-9:
                    g = (value(c) - value(choice)) / max(cost(c) - cost(choice), 1e-9)
                    if g > gain:
                        best, gain = c, g
        if best is None:
            break
        choice = best
    improved = True
    while improved:  # coordinate ascent within the budget
        improved = False
        for b in range(nbins):
            for j in range(len(GRID)):
                c = list(choice)
                c[b] = j
                if cost(c) <= budget + 1e-9 and value(c) > value(choice) + 1e-12:
                    choice, improved = c, True
    return tuple(choice)


def apply(o: Outcomes, rows: np.ndarray, choice: Sequence[int]) -> tuple[float, float]:
    """(accuracy %, mean samples) of a policy on ``rows``."""
    idx = np.array([choice[b] for b in o.bins[rows]])
    acc = o.correct[rows][np.arange(len(idx)), idx].mean() * 100
    return float(acc), float(np.mean([GRID[i] for i in idx]))


def majority_at(o: Outcomes, rows: np.ndarray, n: float) -> float:
    """Majority accuracy (%) at n samples, linear between the grid points."""
    accs = o.correct[rows].mean(axis=0) * 100
    return float(np.interp(n, GRID, accs))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--mc", type=int, default=4, help="add K-option multiple-choice versions (0 = off)")
    ap.add_argument("--budgets", default="6,8,12,16", help="mean samples per problem to allocate")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    norm, norm_name = normalizer()
    paths = sorted(Path(args.data).glob("*.jsonl"))
    if not paths:
        print(f"no *.jsonl files in {args.data}", file=sys.stderr)
        return 2
    budgets = [float(x) for x in args.budgets.split(",")]
    print(machine_line())
    print(f"engine: replay of recorded samples; data: {args.data} ({len(paths)} files); seeds: {args.seeds}; "
          f"answers grouped by {norm_name}")
    files = [load(p, norm) for p in paths]
    if args.mc:
        files += [as_multiple_choice(fd, args.mc) for fd in files]
    o = outcomes(files, list(range(args.seeds)))
    bench = np.array(o.bench)
    names = sorted(set(o.bench))
    print(f"\n== leave-one-benchmark-out: accuracy % at equal mean samples (probe m={PROBE}, grid {GRID})")
    print(f"{'held-out':16s} {'budget':>6s} {'policy (N per bin 0..7)':34s} {'alloc':>6s} {'samples':>7s} "
          f"{'maj@B':>6s} {'gain':>6s}")
    at8: list[tuple[float, float]] = []
    for name in names:
        test, train = np.where(bench == name)[0], np.where(bench != name)[0]
        for b in budgets:
            choice = fit(o, train, b)
            acc, samples = apply(o, test, choice)
            maj = majority_at(o, test, samples)
            if b == 8:
                at8.append((acc, maj))
            per_bin = ",".join(str(GRID[c]) for c in choice)
            print(f"{name:16s} {b:6.0f} {per_bin:34s} {acc:6.2f} {samples:7.2f} {maj:6.2f} {acc - maj:+6.2f}")
        a_acc = o.adaptive_correct[test].mean() * 100
        a_n = o.adaptive_samples[test].mean()
        print(f"{name:16s} adaptive_margin{OURS_DEFAULT}: {a_acc:.2f}% at {a_n:.2f} samples "
              f"(majority at the same samples: {majority_at(o, test, a_n):.2f}%; allocation fitted on the rest "
              f"at that budget: {apply(o, test, fit(o, train, a_n))[0]:.2f}%)")
    a_acc = float(np.mean([o.adaptive_correct[bench == n].mean() * 100 for n in names]))
    a_n = float(np.mean([o.adaptive_samples[bench == n].mean() for n in names]))
    alloc8 = float(np.mean([x[0] for x in at8])) if at8 else float("nan")
    maj8 = float(np.mean([x[1] for x in at8])) if at8 else float("nan")
    print(f"\nmean over held-out benchmarks at budget 8: allocation {alloc8:.2f}% vs majority {maj8:.2f}%; "
          f"adaptive_margin {a_acc:.2f}% at {a_n:.2f} samples")
    print(f"elapsed: {time.perf_counter() - t0:.1f}s")
    print(f"RESULT alloc_acc_at_8={alloc8:.2f} maj_acc_at_8={maj8:.2f} adaptive_acc={a_acc:.2f} "
          f"adaptive_samples={a_n:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
