"""Adaptive stopping vs fixed-N majority on recorded reasoning-model samples.

Engine: replay of recorded samples (``../shared/reference/recorded/*.jsonl``: final answers and
generated-token counts of 80–160 samples per problem). For every file, problem and seed the samples
are drawn in the replay engine's order (``random.Random(f"replay:{seed}:{problem_id}")``), and each
rule is simulated directly on that sequence with the pure rules of ``ttscale.strategies.stopping``
(no model, no process pool). A small subset is also run through the real strategies with the
``Runner`` and the ``replay`` engine, and the numbers must match the simulation exactly.

Rules: majority@N for N = 8, 16, 32, 64; Adaptive-Consistency (0.95, cap 40); Best-of-∞ Bayes factor
at 3, 10, 30 (cap 100); ttscale's ``adaptive_margin`` (lead ≥ margin, cap) at a few settings.

Answers are grouped by ``MathAnswers.normalize`` when that module is importable, else by a local
string normalisation (whitespace, ``$``, ``\\boxed``, ``\\left``/``\\right``, ``\\dfrac``, ``\\text``);
the report says which. A sample is correct when its group equals the gold answer's.

Pooling. "pooled" = every problem of every file counted once (tokens summed over all problems,
accuracy = correct / problems; the 7 MATH-500 files thus weigh ~94%). "file-mean" = the mean over
files of the per-file saving and loss (each file weighs the same; AIME files count as much as
MATH-500 ones). The goal is judged on the stricter of the two (the smaller saving and the larger
loss), and both are printed.

Held-out checks: ttscale's rule settings are compared on odd problem ids (the tuning split) and
reported on even ids too; then leave-one-benchmark-out (a benchmark = the files of one dataset, e.g.
``aime2024``; the setting with the largest saving at <= 0.3 pt loss on the other benchmarks is
reported on the held-out one) and leave-one-file-out. With ``--mc K`` (default 4) every file also
gets a K-option multiple-choice version (:func:`as_multiple_choice`), a benchmark of its own, since
few options make agreement cheap and a lead easier to reach by chance.

Usage: python bench/adaptive_recorded.py [--data DIR] [--seeds 5] [--mc 4] [--out-plot docs/adaptive_recorded.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttscale.strategies.stopping import (
    adaptive_consistency_stop,
    bayes_factor,
    length_weights,
    margin_stop,
    mc_rng,
    options_min_samples,
    weighted_votes,
)
from ttscale.strategies.voting import Tally

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "reference" / "recorded"

# ttscale's rule: (margin, min_samples, max_samples, short_bonus, length_weight). OURS_DEFAULT is
# "ours" in the RESULT line (the strategy's defaults); the grid is drawn as trade-off curves: the
# length-weighted rule at several margins and caps, and the earlier plain-vote rule with its
# short-trace bonus (m = 2..5, cap 32), so the two can be compared on any data.
OURS_DEFAULT = (2.5, 3, 24, 0, 1.0)
OURS_GRID = [
    (2.5, 3, 24, 0, 1.0), (3, 3, 24, 0, 1.0), (3.5, 3, 24, 0, 1.0), (4, 3, 24, 0, 1.0), (3, 3, 32, 0, 1.0),
    (2, 3, 32, 1, 0.0), (3, 3, 32, 1, 0.0), (4, 3, 32, 1, 0.0), (5, 3, 32, 1, 0.0),
]
BOINF_THRESHOLDS = (3.0, 10.0, 30.0)
FIXED_N = (8, 16, 32, 64)


# --- answers -------------------------------------------------------------------------------------


def _local_normalize(a: str) -> str:
    s = a.strip()
    m = re.fullmatch(r"\\boxed\{(.*)\}", s)
    if m:
        s = m.group(1)
    s = s.replace("$", "").replace("\\left", "").replace("\\right", "").replace("\\!", "")
    s = s.replace("\\,", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\^\{?\\circ\}?", "", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s


def normalizer() -> tuple[Callable[[str], str], str]:
    try:
        from ttscale.verifiers.math_answers import MathAnswers

        ma = MathAnswers()
        return ma.normalize, "MathAnswers.normalize"
    except Exception:  # the module is optional here
        return _local_normalize, "local string normalisation (MathAnswers not importable)"


@dataclass
class ProblemData:
    pid: str
    labels: np.ndarray  # label per recorded sample (-1 = no answer)
    tokens: np.ndarray
    gold: int  # label of the gold answer (-2 if no sample gave it)


@dataclass
class FileData:
    name: str
    path: Path
    problems: list[ProblemData] = field(default_factory=list)


def load(path: Path, norm: Callable[[str], str]) -> FileData:
    fd = FileData(path.stem.replace("analysis_", ""), path)
    for no, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        pid = str(row.get("problem_num", row.get("id", no)))
        ids: dict[str, int] = {}
        labels, toks = [], []
        for a, t in row["all_answers"]:
            if a is None or str(a).strip() == "":
                labels.append(-1)
            else:
                labels.append(ids.setdefault(norm(str(a)), len(ids)))
            toks.append(int(t))
        gold = ids.get(norm(str(row["gold_answer"])), -2)
        fd.problems.append(ProblemData(pid, np.array(labels), np.array(toks), gold))
    return fd


def as_multiple_choice(fd: FileData, k: int = 4) -> FileData:
    """A ``k``-option version of a recorded file, to test stopping rules where agreement is cheap.

    Per problem the options are the gold answer and the ``k - 1`` most frequent wrong answers
    (padded with answers nobody gave); a sample whose answer is an option keeps it, any other
    answered sample picks one of the ``k`` options uniformly at random (seeded by file and problem),
    as a model forced to choose would guess; unanswered samples stay unanswered. Token counts are
    unchanged. Problems whose gold answer no sample gave keep it as an option all the same."""
    out = FileData(f"mc{k}_{fd.name}", fd.path)
    for pr in fd.problems:
        rng = random.Random(f"mc{k}:{fd.name}:{pr.pid}")
        labels = [int(x) for x in pr.labels]
        wrong: dict[int, int] = {}
        for lab in labels:
            if lab >= 0 and lab != pr.gold:
                wrong[lab] = wrong.get(lab, 0) + 1
        options = [pr.gold, *sorted(wrong, key=lambda w: (-wrong[w], w))[: k - 1]]
        index = {o: i for i, o in enumerate(options)}
        new = [-1 if lab < 0 else index[lab] if lab in index else rng.randrange(k) for lab in labels]
        out.problems.append(ProblemData(pr.pid, np.array(new), pr.tokens, 0))
    return out


def benchmark_of(name: str) -> str:
    """``mc4_aime2024_Qwen3-4B`` -> ``mc4_aime2024``: the benchmark (and answer space) of a file."""
    parts = name.split("_")
    return "_".join(parts[:2]) if parts[0].startswith("mc") else parts[0]


def declared_options(name: str) -> int:
    """``mc4_aime2024_Qwen3-4B`` -> 4: the option count a multiple-choice file's answer space
    declares; 0 (open answers) for any other file."""
    m = re.match(r"mc(\d+)_", name)
    return int(m.group(1)) if m else 0


def replay_order(seed: int, pid: str, n: int) -> list[int]:
    """The replay engine's draw order (see ttscale.engines.replay.ReplayEngine.order)."""
    idx = list(range(n))
    random.Random(f"replay:{seed}:{pid}").shuffle(idx)
    return idx


# --- simulation ---------------------------------------------------------------------------------


def vote(labels: Sequence[int]) -> int:
    """Majority label (ties → first seen; -1 = no answer at all)."""
    counts: dict[int, int] = {}
    for lab in labels:
        if lab >= 0:
            counts[lab] = counts.get(lab, 0) + 1
    if not counts:
        return -1
    best = max(counts.values())
    return next(lab for lab in labels if lab >= 0 and counts[lab] == best)


def run_sequential(labels: Sequence[int], stop: Callable[..., bool], cap: int,
                   tokens: Sequence[int] | None = None) -> int:
    """Draw one sample at a time until ``stop(counts, n, token_sums)``; returns the number of
    samples used (``token_sums`` = generated tokens per answer, aligned with ``counts``)."""
    counts: dict[int, int] = {}
    tsum: dict[int, int] = {}
    n = 0
    for j, lab in enumerate(labels[:cap]):
        n += 1
        if lab >= 0:
            counts[lab] = counts.get(lab, 0) + 1
            tsum[lab] = tsum.get(lab, 0) + (int(tokens[j]) if tokens is not None else 0)
        if stop(list(counts.values()), n, list(tsum.values())):
            return n
    return n


def boinf_stops(labels: Sequence[int], seed: int, pid: str, thresholds: Sequence[float],
                cap: int = 100) -> dict[float, int]:
    """Stopping sample count of Bo∞ at each threshold, from one trajectory of the seeded generator
    (the generator is consumed identically whatever the threshold, so smaller thresholds stop on a
    prefix of the larger one's trajectory)."""
    rng = mc_rng(seed, pid)
    todo = sorted(thresholds)
    out: dict[float, int] = {}
    counts: dict[int, int] = {}
    n = 0
    for lab in labels[:cap]:
        n += 1
        if lab >= 0:
            counts[lab] = counts.get(lab, 0) + 1
        bf = bayes_factor(list(counts.values()), rng=rng)
        while todo and bf >= todo[0]:
            out[todo.pop(0)] = n
        if not todo:
            break
    for t in todo:
        out[t] = n
    return out


@dataclass
class Acc:
    """Per-(rule, problem) sums over seeds."""

    correct: float = 0.0
    samples: float = 0.0
    tokens: float = 0.0


def simulate_file(fd: FileData, seeds: Sequence[int], ours_grid: Sequence[Setting], options: int = 0
                  ) -> dict[str, list[Acc]]:
    """rule name → per-problem sums (over seeds) of correct, samples and generated tokens.
    ``options`` is the answer space's declared option count (0 = open), which ttscale's rule uses."""
    rules: dict[str, list[Acc]] = {}

    def add(name: str, i: int, lab: int, n: int, toks: np.ndarray, gold: int) -> None:
        acc = rules.setdefault(name, [Acc() for _ in fd.problems])[i]
        acc.correct += float(lab == gold)
        acc.samples += n
        acc.tokens += float(toks[:n].sum())

    for i, pr in enumerate(fd.problems):
        for seed in seeds:
            order = replay_order(seed, pr.pid, len(pr.labels))
            labs = [int(x) for x in pr.labels[order]]
            toks = pr.tokens[order]
            for n in FIXED_N:
                add(f"majority@{n}", i, vote(labs[:n]), n, toks, pr.gold)
            n = run_sequential(labs, lambda c, k, _t: adaptive_consistency_stop(c, k).stop, 40)
            add("adaptive_consistency", i, vote(labs[:n]), n, toks, pr.gold)
            for t, n in boinf_stops(labs, seed, pr.pid, BOINF_THRESHOLDS).items():
                add(f"bo_inf@{t:g}", i, vote(labs[:n]), n, toks, pr.gold)
            for g in ours_grid:
                n, lab = sim_ours(labs, toks, g, options)
                add(ours_name(*g), i, lab, n, toks, pr.gold)
    return rules


Setting = tuple[float, int, int, int, float]
"""(margin, min_samples, max_samples, short_bonus, length_weight) of ``adaptive_margin``."""


def sim_ours(labs: Sequence[int], toks: Sequence[int], g: Setting, options: int = 0) -> tuple[int, int]:
    """``adaptive_margin`` on one draw order: (samples used, answer label), computed with the
    strategy's own pure functions (length weights, weighted votes, margin rule, weighted vote)."""
    m, lo, cap, bonus, gamma = g
    lo = max(lo, options_min_samples(options))
    seen: list[int | None] = []
    n = 0
    w: list[float] = []
    for lab in labs[:cap]:
        n += 1
        seen.append(lab if lab >= 0 else None)
        w = length_weights(seen, toks[:n], gamma)
        tsum: dict[int, int] = {}
        for x, t in zip(seen, toks[:n], strict=True):
            if x is not None:
                tsum[x] = tsum.get(x, 0) + int(t)
        if margin_stop(weighted_votes(seen, w), n, tokens=list(tsum.values()), margin=m, min_samples=lo,
                       max_samples=cap, short_bonus=bonus).stop:
            break
    if not gamma:
        return n, vote(labs[:n])
    won = Tally.of(seen, w).winner()
    return n, -1 if won is None else won


def ours_name(m: float, lo: int, cap: int, bonus: int, gamma: float = 0.0) -> str:
    w = f",w={gamma:g}" if gamma else f",b={bonus}"
    return f"adaptive_margin(m={m:g},min={lo},cap={cap}{w})"


@dataclass
class Row:
    acc: float
    samples: float
    tokens: float
    problems: int


def summarise(per_problem: list[Acc], nseeds: int, keep: Callable[[int], bool] = lambda i: True) -> Row:
    sel = [a for i, a in enumerate(per_problem) if keep(i)]
    k = max(1, len(sel)) * nseeds
    return Row(sum(a.correct for a in sel) / k * 100, sum(a.samples for a in sel) / k,
               sum(a.tokens for a in sel) / k, len(sel))


# --- real strategy check ------------------------------------------------------------------------


class _LocalAnswers:
    """Groups answers by the bench's normalisation (the check must group as the simulation does)."""

    def __init__(self, norm: Callable[[str], str]) -> None:
        self.norm = norm

    def extract(self, text: str) -> str | None:
        return None

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        ids: dict[str, int] = {}
        return [None if a is None or not str(a).strip() else ids.setdefault(self.norm(str(a)), len(ids))
                for a in answers]


def check_real_strategies(fd: FileData, norm: Callable[[str], str], seed: int, k: int = 6) -> int:
    """Run the registered strategies through the Runner on the replay engine for the first ``k``
    problems and assert that samples used and answers match the simulation. Returns #checks."""
    import tempfile

    from ttscale.core.types import Problem
    from ttscale.engines.replay import ReplayEngine
    from ttscale.lab.runner import Runner

    probs = fd.problems[:k]
    problems = [Problem(id=p.pid, prompt=f"problem {p.pid}") for p in probs]
    m, lo, cap, bonus, gamma = OURS_DEFAULT
    configs = [
        ("adaptive_consistency", {}, lambda labs, toks, pr: run_sequential(
            labs, lambda c, n, _t: adaptive_consistency_stop(c, n).stop, 40)),
        ("best_of_infinity", {"threshold": 10.0},
         lambda labs, toks, pr: boinf_stops(labs, seed, pr.pid, [10.0])[10.0]),
        ("adaptive_margin", {"margin": m, "min_samples": lo, "max_samples": cap, "short_bonus": bonus,
                             "length_weight": gamma},
         lambda labs, toks, pr: sim_ours(labs, toks, OURS_DEFAULT)),
    ]
    checks = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, params, sim in configs:
            runner = Runner(engine=ReplayEngine.from_file(fd.path), strategy=name, params=params,
                            answers=_LocalAnswers(norm), seed=seed, progress=False)
            out = Path(tmp) / f"{name}.jsonl"
            asyncio.run(runner.run(problems, out))
            got = {r["problem_id"]: r for r in map(json.loads, out.read_text().splitlines())}
            for pr in probs:
                order = replay_order(seed, pr.pid, len(pr.labels))
                labs = [int(x) for x in pr.labels[order]]
                n = sim(labs, [int(x) for x in pr.tokens[order]], pr)
                n, want = n if isinstance(n, tuple) else (n, vote(labs[:n]))
                r = got[pr.pid]
                want_tokens = int(pr.tokens[order][:n].sum())
                assert r["extra"]["samples"] == n, (name, pr.pid, r["extra"], n)
                assert r["cost"]["generated_tokens"] == want_tokens, (name, pr.pid)
                got_lab = -1 if r["answer"] is None else _label_of(fd, pr, norm, r["answer"])
                assert got_lab == want, (name, pr.pid, r["answer"], want)
                checks += 1
    return checks


def _label_of(fd: FileData, pr: ProblemData, norm: Callable[[str], str], answer: str) -> int:
    row = json.loads(fd.path.read_text().splitlines()[fd.problems.index(pr)])
    ids: dict[str, int] = {}
    for a, _ in row["all_answers"]:
        if a is not None and str(a).strip():
            ids.setdefault(norm(str(a)), len(ids))
    return ids.get(norm(answer), -3)


# --- report -------------------------------------------------------------------------------------


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"machine: {os.cpu_count()} cores, {cpu}; python {platform.python_version()}"


class Results:
    """Per-file simulation results and the two ways of pooling them (see the module docstring)."""

    def __init__(self, data: Sequence[FileData], per_file: dict[str, dict[str, list[Acc]]], nseeds: int) -> None:
        self.data = list(data)
        self.per_file = per_file
        self.nseeds = nseeds
        self.rules = list(next(iter(per_file.values())))

    def pooled(self, name: str, keep: Callable[[int], bool] = lambda i: True,
               files: Sequence[FileData] | None = None) -> Row:
        allp = [a for fd in (files or self.data)
                for a in [x for i, x in enumerate(self.per_file[fd.name][name]) if keep(i)]]
        return summarise(allp, self.nseeds)

    def filemean(self, name: str, keep: Callable[[int], bool] = lambda i: True,
                 files: Sequence[FileData] | None = None) -> tuple[float, float]:
        savs, losses = [], []
        for fd in files or self.data:
            r = summarise(self.per_file[fd.name][name], self.nseeds, keep)
            b = summarise(self.per_file[fd.name]["majority@64"], self.nseeds, keep)
            savs.append(100 * (1 - r.tokens / b.tokens))
            losses.append(b.acc - r.acc)
        return float(np.mean(savs)), float(np.mean(losses))


def table(title: str, rows: dict[str, Row], base: Row, nseeds: int) -> None:
    print(f"\n== {title} ({base.problems} problems x {nseeds} seeds)")
    print(f"{'rule':38s} {'acc%':>7s} {'samples':>8s} {'tokens':>10s} {'saving%':>8s} {'loss_pt':>8s}")
    for name, r in rows.items():
        sav = 100 * (1 - r.tokens / base.tokens) if base.tokens else 0.0
        print(f"{name:38s} {r.acc:7.2f} {r.samples:8.2f} {r.tokens:10.0f} {sav:8.1f} {base.acc - r.acc:8.2f}")


def print_split_check(res: Results) -> None:
    """ttscale's settings on odd problem ids (the tuning split) and on even ids."""
    print("\n== held-out check of ttscale's rule (tune: odd problems, report: even problems)")
    print(f"{'rule':38s} {'split':>5s} {'pooled sav%':>11s} {'loss':>6s} {'filemean sav%':>13s} {'loss':>6s}")
    heldout_rules = [ours_name(*g) for g in OURS_GRID] + ["bo_inf@10", "adaptive_consistency"]
    for n in heldout_rules:
        for split, keep in (("odd", lambda i: i % 2 == 1), ("even", lambda i: i % 2 == 0)):
            r, b = res.pooled(n, keep), res.pooled("majority@64", keep)
            fs, fl = res.filemean(n, keep)
            print(f"{n:38s} {split:>5s} {100 * (1 - r.tokens / b.tokens):11.1f} {b.acc - r.acc:6.2f} "
                  f"{fs:13.1f} {fl:6.2f}")


def pick_setting(res: Results, files: Sequence[FileData], max_loss: float = 0.3) -> str:
    """Among ttscale's grid, the setting with the largest file-mean saving whose file-mean loss on
    ``files`` is at most ``max_loss`` (else the smallest loss): the choice a user tuning on those
    files would make."""
    names = [ours_name(*g) for g in OURS_GRID]
    fm = {n: res.filemean(n, files=files) for n in names}
    ok = [n for n in names if fm[n][1] <= max_loss]
    return max(ok, key=lambda n: fm[n][0]) if ok else min(names, key=lambda n: fm[n][1])


def print_heldout(res: Results) -> tuple[float, float]:
    """Leave-one-benchmark-out and leave-one-file-out: tune the setting on the rest, report on the
    held-out part; and the default rule per benchmark. Returns the default's worst-benchmark-free
    summary: (mean saving, mean loss) over benchmarks, each benchmark weighing the same."""
    benches = sorted({benchmark_of(fd.name) for fd in res.data})
    default = ours_name(*OURS_DEFAULT)
    print("\n== leave-one-benchmark-out (setting tuned on the other benchmarks, file-mean figures)")
    print(f"{'held-out benchmark':22s} {'files':>5s} {'chosen on the rest':38s} {'sav%':>6s} {'loss':>6s}"
          f" {'default sav%':>12s} {'loss':>6s}")
    d_sav, d_loss, h_sav, h_loss = [], [], [], []
    for bench in benches:
        test = [fd for fd in res.data if benchmark_of(fd.name) == bench]
        train = [fd for fd in res.data if benchmark_of(fd.name) != bench]
        chosen = pick_setting(res, train) if train else default
        cs, cl = res.filemean(chosen, files=test)
        ds, dl = res.filemean(default, files=test)
        h_sav.append(cs)
        h_loss.append(cl)
        d_sav.append(ds)
        d_loss.append(dl)
        print(f"{bench:22s} {len(test):5d} {chosen:38s} {cs:6.1f} {cl:6.2f} {ds:12.1f} {dl:6.2f}")
    print(f"{'mean over benchmarks':22s} {'':5s} {'':38s} {np.mean(h_sav):6.1f} {np.mean(h_loss):6.2f}"
          f" {np.mean(d_sav):12.1f} {np.mean(d_loss):6.2f}")
    lofo = [res.filemean(pick_setting(res, [g for g in res.data if g is not fd]), files=[fd])
            for fd in res.data]
    print(f"leave-one-file-out ({len(lofo)} files, setting tuned on the other files): "
          f"saving {np.mean([x[0] for x in lofo]):.1f}% loss {np.mean([x[1] for x in lofo]):.2f} pt")
    return float(np.mean(d_sav)), float(np.mean(d_loss))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seeds", type=int, default=20,
                    help="draw orders per problem (5 seeds leave the loss figures a few tenths of a point noisy)")
    ap.add_argument("--mc", type=int, default=4,
                    help="also test on K-option multiple-choice versions of every file (0 = off)")
    ap.add_argument("--out-plot", type=Path, default=ROOT / "docs" / "adaptive_recorded.png")
    ap.add_argument("--no-check", action="store_true", help="skip the real-strategy check")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    norm, norm_name = normalizer()
    files = sorted(Path(args.data).glob("*.jsonl"))
    if not files:
        print(f"no *.jsonl files in {args.data}", file=sys.stderr)
        return 2
    seeds = list(range(args.seeds))
    print(machine_line())
    print("engine: replay of recorded samples")
    print(f"data: {args.data} ({len(files)} files); seeds: {len(seeds)}; answers grouped by {norm_name}")

    data = [load(f, norm) for f in files]
    res = Results(data, {fd.name: simulate_file(fd, seeds, OURS_GRID) for fd in data}, len(seeds))
    if not args.no_check:
        checks = check_real_strategies(data[0], norm, seed=seeds[0])
        print(f"real-strategy check: {checks} (strategy, problem) runs through Runner + replay engine "
              f"on {data[0].name} match the simulation exactly")
    for fd in data:
        rows = {n: summarise(res.per_file[fd.name][n], len(seeds)) for n in res.rules}
        table(fd.name, rows, rows["majority@64"], len(seeds))
    pooled_rows = {n: res.pooled(n) for n in res.rules}
    table("pooled over all problems of all files", pooled_rows, pooled_rows["majority@64"], len(seeds))
    print("\n== file-mean (mean over files of per-file saving and loss vs majority@64)")
    print(f"{'rule':38s} {'saving%':>8s} {'loss_pt':>8s}")
    fm = {n: res.filemean(n) for n in res.rules}
    for n in res.rules:
        print(f"{n:38s} {fm[n][0]:8.1f} {fm[n][1]:8.2f}")
    print_split_check(res)
    plot(args.out_plot, pooled_rows)
    print(f"\nplot: {args.out_plot}")

    if args.mc:
        mc = [as_multiple_choice(fd, args.mc) for fd in data]
        res = Results(data + mc, {**res.per_file,
                                  **{fd.name: simulate_file(fd, seeds, OURS_GRID, declared_options(fd.name)) for fd in mc}},
                      len(seeds))
        print(f"\nmultiple choice: {args.mc}-option versions of the {len(mc)} files added as benchmarks "
              f"(see as_multiple_choice)")
    h_sav, h_loss = print_heldout(res)
    return report_goal(res, fm, pooled_rows, h_sav, h_loss, time.perf_counter() - t0)


def report_goal(res: Results, fm: dict[str, tuple[float, float]], pooled_rows: dict[str, Row],
                h_sav: float, h_loss: float, elapsed: float) -> int:
    best = ours_name(*OURS_DEFAULT)
    base = pooled_rows["majority@64"]
    r = pooled_rows[best]
    p_sav, p_loss = 100 * (1 - r.tokens / base.tokens), base.acc - r.acc
    f_sav, f_loss = fm[best]
    bf = pooled_rows["bo_inf@10"]
    bf_sav, bf_loss = 100 * (1 - bf.tokens / base.tokens), base.acc - bf.acc
    sav, loss = min(p_sav, f_sav), max(p_loss, f_loss)
    met = sav >= 90 and loss <= 0.3
    beats = p_sav > bf_sav and p_loss < bf_loss and f_sav > fm["bo_inf@10"][0] and f_loss < fm["bo_inf@10"][1]
    print(f"\ngoal on the recorded files (>= 90% saving, <= 0.3 pt loss; stricter of pooled/file-mean): "
          f"{'MET' if met else 'NOT MET'}; beats bo_inf@10 on both axes (pooled and file-mean): "
          f"{'yes' if beats else 'no'}")
    print(f"  pooled: saving {p_sav:.1f}% loss {p_loss:.2f} pt; file-mean: saving {f_sav:.1f}% loss {f_loss:.2f} pt")
    print(f"  default rule per benchmark, mean over benchmarks (incl. multiple choice): saving {h_sav:.1f}% "
          f"loss {h_loss:.2f} pt -> {'MET' if h_sav >= 90 and h_loss <= 0.3 else 'NOT MET'}")
    print(f"elapsed: {elapsed:.1f}s")
    print(f"RESULT saving_vs_maj64={sav:.1f} loss_pt={loss:.2f} rule=adaptive_margin "
          f"bench_mean_saving={h_sav:.1f} bench_mean_loss_pt={h_loss:.2f}")
    return 0


def plot(path: Path, rows: dict[str, Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    families: dict[str, list[str]] = {
        "majority@N (8,16,32,64)": [f"majority@{n}" for n in FIXED_N],
        "Adaptive-Consistency (0.95, cap 40)": ["adaptive_consistency"],
        "Best-of-inf BF (3,10,30)": [f"bo_inf@{t:g}" for t in BOINF_THRESHOLDS],
        "adaptive_margin (ours: length-weighted votes, m=2.5..4, cap 24)":
            [ours_name(*g) for g in OURS_GRID if g[4] and g[2] == 24],
        "plain votes + short-trace bonus (earlier rule, m=2..5, cap 32)":
            [ours_name(*g) for g in OURS_GRID if not g[4]],
    }
    markers = ["o", "s", "^", "D", "v"]
    for (label, names), mk in zip(families.items(), markers, strict=True):
        pts = sorted((rows[n].tokens, rows[n].acc, n) for n in names)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=mk, label=label)
        for x, y, n in pts:
            short = n.split("(")[-1].split(",")[0].removeprefix("m=") if "margin" in n else n.split("@")[-1]
            ax.annotate(short, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ours = rows[ours_name(*OURS_DEFAULT)]
    ax.scatter([ours.tokens], [ours.acc], s=160, facecolors="none", edgecolors="red", zorder=5,
               label=f"ours: {ours_name(*OURS_DEFAULT)}")
    ax.set_xscale("log")
    ax.set_xlabel("mean generated tokens per problem (log)")
    ax.set_ylabel("accuracy (%), pooled over all problems")
    ax.set_title("Adaptive stopping on recorded samples (replay), pooled")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
