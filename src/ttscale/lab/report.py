"""Summaries of results files: accuracy and cost per strategy configuration."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.lab.runner import one_per_problem, read_results


def load_records(paths: Iterable[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """``(file, record)`` pairs, one record per problem of each file (the first one written)."""
    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"results file {p} does not exist")
        records, _ = read_results(p)
        if not records:
            raise ConfigError(f"results file {p} holds no results")
        for r in records:
            if "problem_id" not in r or "cost" not in r:
                raise ConfigError(f"{p} is not a ttscale results file (a line lacks problem_id/cost)")
        # a problem written twice (two runs at once, before results files were locked) counts once
        out.extend((p, r) for r in one_per_problem(records))
    return out


def summarize(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per (file, strategy, params, seed): accuracy, single-sample accuracy and mean costs.
    Each problem counts once: where a file holds a problem twice (two runs wrote it at once), the
    first record is used."""
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for p, r in load_records(paths):
        key = (str(p), r.get("strategy", ""), json.dumps(r.get("params", {}), sort_keys=True), r.get("seed", 0))
        groups.setdefault(key, []).append(r)
    rows = []
    for (path, strat, params, seed), rs in groups.items():
        graded = [r for r in rs if r.get("correct") is not None]
        per_sample = [
            fmean(bool(c["correct"]) for c in r["candidates"])
            for r in rs
            if r.get("candidates") and all(c.get("correct") is not None for c in r["candidates"])
        ]
        cost = [r["cost"] for r in rs]
        rows.append({
            "file": path,
            "strategy": strat,
            "params": json.loads(params),
            "seed": seed,
            "engine": rs[0].get("engine", ""),
            "model": rs[0].get("model", ""),
            "problems": len(rs),
            "graded": len(graded),
            "accuracy": fmean(bool(r["correct"]) for r in graded) if graded else None,
            "sample_accuracy": fmean(per_sample) if per_sample else None,
            "mean_generated_tokens": fmean(c.get("generated_tokens", 0) for c in cost),
            "mean_prompt_tokens": fmean(c.get("prompt_tokens", 0) for c in cost),
            "mean_verifier_tokens": fmean(
                c.get("verifier_prompt_tokens", 0) + c.get("verifier_generated_tokens", 0) for c in cost
            ),
            "mean_generations": fmean(c.get("generations", 0) for c in cost),
            "mean_wall_time_s": fmean(c.get("wall_time_s", 0.0) for c in cost),
            "total_generated_tokens": sum(c.get("generated_tokens", 0) for c in cost),
            "stopped_by_budget": sum(bool(r.get("stopped_by_budget")) for r in rs),
        })
    return rows


SAMPLED_CANDIDATES = frozenset({
    "self_consistency", "best_of_n", "weighted_best_of_n", "adaptive_consistency", "adaptive_margin",
    "best_of_infinity", "code_filter", "code_vote", "codet",
})
"""Strategies whose candidates are independent samples of the prompt, so that their mean accuracy is
single-sample accuracy (a beam's or a revision's candidates are not)."""


def gain_over_one_sample(path: str | Path, *, resamples: int = 2000) -> dict[str, Any] | None:
    """The strategy's accuracy against single-sample accuracy (each problem's candidates graded one by
    one) on the problems of ``path`` where both are known, with a paired 95% bootstrap interval over
    problems for the gain; None when no problem has graded candidates, or when the strategy's
    candidates are not independent samples (:data:`SAMPLED_CANDIDATES`)."""
    import random

    pairs = [(float(bool(r["correct"])), fmean(bool(c["correct"]) for c in r["candidates"]))
             for _, r in load_records([path])
             if r.get("strategy") in SAMPLED_CANDIDATES
             and r.get("correct") is not None and r.get("candidates")
             and all(c.get("correct") is not None for c in r["candidates"])]
    if not pairs:
        return None
    diffs = [a - s for a, s in pairs]
    rng = random.Random(0)
    n = len(diffs)
    means = sorted(fmean(diffs[rng.randrange(n)] for _ in range(n)) for _ in range(resamples))
    return {
        "problems": n, "accuracy": fmean(a for a, _ in pairs), "sample_accuracy": fmean(s for _, s in pairs),
        "gain": fmean(diffs), "gain_low": means[int(0.025 * resamples)], "gain_high": means[int(0.975 * resamples) - 1],
    }
