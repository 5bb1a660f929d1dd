"""Shared test helpers (not fixtures): recorded-sample files and small contexts."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ttscale.core.budget import Budget, CostMeter
from ttscale.core.context import Context
from ttscale.core.types import Problem


def write_recorded(path: Path, n_problems: int = 6, n_samples: int = 40, seed: int = 1) -> Path:
    """A recorded-samples file in the shared format with noisy answers around a gold one."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n_problems):
            gold = str(10 + i)
            p_right = [0.9, 0.6, 0.4, 0.35, 0.2, 0.05][i % 6]
            answers = []
            for _ in range(n_samples):
                a = gold if rng.random() < p_right else str(rng.choice([1, 2, 3]) + 100 * i)
                answers.append([a, rng.randint(500, 3000)])
            counts: dict[str, int] = {}
            for a, _ in answers:
                counts[a] = counts.get(a, 0) + 1
            f.write(json.dumps({"problem_num": i, "total_answers": n_samples, "answer_counts": counts,
                                "gold_answer": gold, "majority_answer": max(counts, key=counts.get),
                                "all_answers": answers}) + "\n")
    return path


def make_ctx(engine, answers, *, problem: Problem | None = None, budget: Budget | None = None,
             seed: int = 0, **kw) -> Context:
    problem = problem or Problem(id="p1", prompt="What is 2+3?", answer="5")
    return Context(problem=problem, engine=engine, answers=answers,
                   meter=CostMeter(budget or Budget(), engine.params_count), seed=seed, **kw)
