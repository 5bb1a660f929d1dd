"""Step-wise beam search against best-of-N on the embedded llama.cpp engine: wall time per
generated token at (about) equal generated tokens, and the prefix-cache hit rate of the steps.

Both strategies run on the same engine, the same problems (the bundled dataset), concurrently over
problems as the runner does. Beam search (``beam_search``, N, M) generates one step per request,
continuing each beam's prefix from its token ids; best-of-N samples N whole solutions per problem
with ``max_tokens`` set so that its generated tokens match the beam run's. The step verifier is a
free, seeded random scorer (no model call), so the figures measure the step-wise generation itself
(extra requests, prompt reprocessing, prefix reuse), not the judge. Each configuration runs
``--repeats`` times; the table shows medians.

prefix hit rate = Σ cached_prompt_tokens / Σ prompt_tokens over beam search's step requests (what
llama.cpp's ``cache_prompt`` served from a slot's KV cache, or the engine's host KV store restored,
instead of recomputing). The row ``beam (no store)`` runs beam search on a second engine with the
host KV store off (``kv_store_mib=0``: slot affinity alone), in the same repeats, to show what the
store buys, and ``best_of_n (no store)`` best-of-N on it, so that the store cannot flatter the
ratio by slowing best-of-N. The headline ratio is paired: per repeat (one seed, beam search and
best-of-N back to back), beam search's time per token over the faster best-of-N's, then the median
over repeats. ``--no-compare`` skips the no-store rows.

Usage: python bench/tree_vs_bon.py [--model smollm2-135m] [--limit 2] [--n 8] [--beam-width 2]
       [--max-steps 6] [--max-step-tokens 96] [--repeats 5] [--threads 0] [--n-parallel 8]
       [--kv-store-mib 1024] [--no-compare]
Ends with: RESULT beam_vs_bon_time_per_token=<ratio> prefix_hit_rate=<fraction>
           no_store_ratio=<ratio> no_store_hit_rate=<fraction> bon_store_vs_plain=<ratio>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
from typing import Any

from ttscale.core.budget import CostMeter
from ttscale.core.context import Context
from ttscale.core.protocols import Verifier
from ttscale.core.types import Completion, GenerationRequest
from ttscale.datasets import load_dataset
from ttscale.engines.embedded import EmbeddedEngine, EmbeddedParams
from ttscale.lab.runner import DEFAULT_SYSTEM_PROMPT
from ttscale.strategies.base import load_strategies
from ttscale.verifiers.math_answers import MathAnswers


class RandomSteps(Verifier):
    """Free seeded step scores (keeps the search's shape without a judge model)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    async def score(self, problem, candidates, ctx):
        return [self.rng.random() for _ in candidates]

    async def score_steps(self, problem, candidates, ctx):
        return [[self.rng.random() for _ in c.steps] for c in candidates]


class Recorder:
    """Wraps an engine and keeps every completion (for prompt / cached token sums)."""

    def __init__(self, engine: Any) -> None:
        self._e = engine
        self.completions: list[Completion] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._e, name)

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        out = await self._e.generate(req)
        self.completions.extend(out)
        return out


async def run(engine: Any, problems, strategy: str, params: dict[str, Any], seed: int) -> dict[str, float]:
    entry = load_strategies().get(strategy)
    p = entry.make_params(params)
    rec = Recorder(engine)
    meters = []

    async def one(prob):
        meter = CostMeter()
        meters.append(meter)
        ctx = Context(problem=prob, engine=rec, answers=MathAnswers(), meter=meter, seed=seed,
                      verifiers={"random": RandomSteps(seed)}, system_prompt=DEFAULT_SYSTEM_PROMPT)
        return await entry.target(prob, ctx, p)

    keys = ("saves", "restores", "prefills")
    before = [engine.kv_stats()[k] for k in keys]
    t0 = time.perf_counter()
    await asyncio.gather(*(one(pr) for pr in problems))
    wall = time.perf_counter() - t0
    gen = sum(m.generated_tokens for m in meters)
    prompt = sum(c.prompt_tokens for c in rec.completions)
    cached = sum(c.cached_prompt_tokens for c in rec.completions)
    after = [engine.kv_stats()[k] for k in keys]
    saves, restores, prefills = (b - a for a, b in zip(before, after, strict=True))
    return {"wall_s": wall, "tokens": gen, "requests": len(rec.completions), "s_per_tok": wall / max(1, gen),
            "prompt": prompt, "cached": cached, "hit": cached / max(1, prompt),
            "saves": saves, "restores": restores, "prefills": prefills}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="embedded model (qwen2.5-coder-0.5b: slower, steadier steps)")
    ap.add_argument("--limit", type=int, default=2, help="problems")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--beam-width", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--max-step-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all)")
    ap.add_argument("--n-parallel", type=int, default=8, help="llama.cpp slots")
    ap.add_argument("--share-prefix", type=int, default=0, help="1: siblings as one native-n request (engine share_prefix)")
    ap.add_argument("--kv-store-mib", type=int, default=1024, help="host KV store of the engine (0 = off)")
    ap.add_argument("--no-compare", action="store_true", help="skip the beam run on an engine without the KV store")
    return ap.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    problems = load_dataset("default", limit=a.limit).problems
    def make(store_mib: int) -> EmbeddedEngine:
        return EmbeddedEngine(a.model, EmbeddedParams(
            n_parallel=a.n_parallel, n_ctx=a.n_parallel * 2048, threads=a.threads or 0,
            share_prefix=bool(a.share_prefix), kv_store_mib=store_mib))

    eng = make(a.kv_store_mib)
    plain = None if a.no_compare else make(0)
    beam_params = {"n": a.n, "beam_width": a.beam_width, "max_steps": a.max_steps,
                   "max_step_tokens": a.max_step_tokens, "max_tokens": a.max_steps * a.max_step_tokens,
                   "verifier": "random"}
    rows: dict[str, list[dict[str, float]]] = {"beam_search": [], "beam (no store)": [], "best_of_n": [],
                                               "best_of_n (no store)": []}
    if plain is None:
        del rows["beam (no store)"], rows["best_of_n (no store)"]
    warm = {"n": 2, "max_tokens": 16, "verifier": "random", "aggregate": "last"}
    try:
        for e in (eng, plain):
            if e is not None:
                await run(e, problems[:1], "best_of_n", warm, a.seed)  # warm-up
        for r in range(a.repeats):
            seed = a.seed + r
            if plain is not None:
                rows["beam (no store)"].append(await run(plain, problems, "beam_search", beam_params, seed))
            b = await run(eng, problems, "beam_search", beam_params, seed)
            rows["beam_search"].append(b)
            per_solution = max(1, round(b["tokens"] / (a.n * len(problems))))
            bon = {"n": a.n, "max_tokens": per_solution, "temperature": 0.8, "verifier": "random", "aggregate": "last"}
            o = await run(eng, problems, "best_of_n", bon, seed)
            rows["best_of_n"].append(o)
            if plain is not None:
                rows["best_of_n (no store)"].append(await run(plain, problems, "best_of_n", bon, seed))
            fastest = min(rows[k][-1]["s_per_tok"] for k in rows if k.startswith("best_of_n"))
            print(f"repeat {r + 1}: beam {b['tokens']} tok {b['wall_s']:.1f}s hit {b['hit']:.2f} | "
                  f"bon {o['tokens']} tok {o['wall_s']:.1f}s | ratio {b['s_per_tok'] / fastest:.3f}", file=sys.stderr)
    finally:
        await eng.aclose()
        if plain is not None:
            await plain.aclose()

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in rows[name])

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}; "
          f"engine: embedded llama.cpp (xllamacpp), model {a.model}, n_parallel={a.n_parallel}, "
          f"share_prefix={bool(a.share_prefix)}, kv_store_mib={a.kv_store_mib}; "
          f"problems={len(problems)} N={a.n} M={a.beam_width} max_steps={a.max_steps} repeats={a.repeats}")
    print(f"{'strategy':<20} {'gen tokens':>10} {'requests':>8} {'wall s':>8} {'ms/token':>9} "
          f"{'prompt tok':>10} {'cached':>8} {'hit rate':>8} {'saves':>6} {'restores':>8} {'prefills':>8}")
    for name in rows:
        print(f"{name:<20} {med(name, 'tokens'):>10.0f} {med(name, 'requests'):>8.0f} {med(name, 'wall_s'):>8.1f} "
              f"{1000 * med(name, 's_per_tok'):>9.2f} {med(name, 'prompt'):>10.0f} {med(name, 'cached'):>8.0f} "
              f"{med(name, 'hit'):>8.2f} {med(name, 'saves'):>6.0f} {med(name, 'restores'):>8.0f} "
              f"{med(name, 'prefills'):>8.0f}")
    # paired per repeat (beam and best-of-N of one seed run back to back), then the median; against
    # the faster best-of-N of that repeat
    bons = [name for name in rows if name.startswith("best_of_n")]

    def paired(beam: str) -> float:
        return statistics.median(rows[beam][r]["s_per_tok"] / min(rows[b][r]["s_per_tok"] for b in bons)
                                 for r in range(a.repeats))

    ratio = paired("beam_search")
    line = f"RESULT beam_vs_bon_time_per_token={ratio:.3f} prefix_hit_rate={med('beam_search', 'hit'):.3f}"
    if plain is not None:
        line += (f" no_store_ratio={paired('beam (no store)'):.3f}"
                 f" no_store_hit_rate={med('beam (no store)', 'hit'):.3f}"
                 f" bon_store_vs_plain={med('best_of_n', 's_per_tok') / med('best_of_n (no store)', 's_per_tok'):.3f}")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
