"""Scale-out: throughput of 1 vs 2 engine replicas through Ray, and the prefix-cache hit rate of a
tree search over 2 replicas with affinity routing vs round-robin.

1. **Ray throughput.** ``ttscale run --ray``'s code path (:func:`ttscale.lab.ray_run.run_on_ray`) on a
   local Ray cluster of ``--cpus`` CPUs, with 1 and then 2 actors, each owning an embedded llama.cpp
   replica (``--model``, 1 thread, ``ignore_eos`` so every problem generates exactly n x max_tokens);
   self-consistency over the first ``--limit`` problems of the bundled dataset. Throughput =
   generated tokens / the runner's wall time (actors are started, models loaded, before the clock).
2. **Prefix hits.** A ``pool`` engine of 2 embedded replicas (1 thread each) runs step-wise beam
   search (free seeded random step scores, so only generation is measured; one line per step, so
   that a small model's paths run several steps deep) over ``--tree-limit`` problems concurrently, once with ``routing=affinity`` and once with ``round_robin`` (fresh
   replicas each time). hit rate = sum of cached prompt tokens / sum of prompt tokens over all
   requests, as the replicas report them.

Usage: python bench/scale_out.py [--model smollm2-135m] [--limit 8] [--n 2] [--max-tokens 64]
       [--per-actor 4] [--cpus 2] [--tree-limit 4] [--beam-n 4] [--beam-width 2] [--max-steps 8]
       [--max-step-tokens 48] [--skip-ray]
Ends with: RESULT ray_2_vs_1=<ratio> affinity_hit=<x> roundrobin_hit=<y>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ttscale.core.budget import Budget
from ttscale.datasets import load_dataset
from ttscale.engines.embedded import EmbeddedEngine, EmbeddedParams
from ttscale.engines.pool import PoolEngine
from ttscale.lab.ray_backend import EngineSpecR, RaySettings, RunSpec
from ttscale.lab.ray_run import run_on_ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree_vs_bon import RandomSteps  # a sibling bench script: free seeded step scores

from ttscale.lab.runner import DEFAULT_SYSTEM_PROMPT, Runner
from ttscale.verifiers.math_answers import MathAnswers


def ray_throughput(a: argparse.Namespace, actors: int, tmp: Path) -> dict[str, float]:
    ds = load_dataset("default", limit=a.limit)
    spec = EngineSpecR("embedded", a.model, {"threads": 1, "n_parallel": a.per_actor, "ignore_eos": True,
                                             "kv_store_mib": 0})
    params = {"n": a.n, "max_tokens": a.max_tokens, "temperature": 0.8}
    run = RunSpec(key=f"bench{actors}", strategy="self_consistency", params=params, budget=Budget().to_dict(),
                  seed=0, system_prompt=DEFAULT_SYSTEM_PROMPT, grader=ds.grader)
    settings = RaySettings(address="local", actors=actors, options={"num_cpus": 1.0}, per_actor=a.per_actor,
                           local_cpus=a.cpus)
    summary, stats = run_on_ray(settings, spec, ds.problems, run, out=tmp / f"ray{actors}.jsonl", progress=False)
    tps = summary.generated_tokens / summary.wall_time_s
    print(f"ray, {actors} actor(s): {summary.done_now} problems, {summary.generated_tokens} tokens in "
          f"{summary.wall_time_s:.1f}s = {tps:.1f} tok/s; per replica: "
          + ", ".join(f"{s['problems']} problems {s['generated_tokens']} tok" for s in stats), file=sys.stderr)
    return {"tokens": summary.generated_tokens, "wall_s": summary.wall_time_s, "tps": tps}


async def tree_hits(a: argparse.Namespace, routing: str) -> dict[str, Any]:
    problems = load_dataset("default", limit=a.tree_limit).problems
    members = [EmbeddedEngine(a.model, EmbeddedParams(n_parallel=a.beam_n, n_ctx=a.beam_n * 2048, threads=1))
               for _ in range(2)]
    pool = PoolEngine(members, names=["r0", "r1"], routing=routing)
    params = {"n": a.beam_n, "beam_width": a.beam_width, "max_steps": a.max_steps,
              "max_step_tokens": a.max_step_tokens, "max_tokens": a.max_steps * a.max_step_tokens,
              "verifier": "random", "delimiter": "\n"}
    runner = Runner(engine=pool, strategy="beam_search", params=params, answers=MathAnswers(),
                    verifiers={"random": RandomSteps(0)}, progress=False)
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(runner.solve(p) for p in problems))
        wall = time.perf_counter() - t0
        stats = pool.replica_stats()
    finally:
        await pool.aclose()
    prompt = sum(s["prompt_tokens"] for s in stats)
    cached = sum(s["cached_prompt_tokens"] for s in stats)
    print(f"beam search over 2 replicas, routing={routing}: {sum(s['requests'] for s in stats)} requests "
          f"({', '.join(str(s['requests']) for s in stats)} per replica), {prompt} prompt tokens, {cached} cached "
          f"-> hit rate {cached / max(1, prompt):.3f} in {wall:.1f}s", file=sys.stderr)
    return {"hit": cached / max(1, prompt), "prompt": prompt, "cached": cached, "wall_s": wall}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=8, help="problems of the Ray throughput runs")
    ap.add_argument("--n", type=int, default=2, help="self-consistency samples per problem")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--per-actor", type=int, default=4, help="problems in flight per actor (= llama.cpp slots)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--tree-limit", type=int, default=4, help="problems of the beam-search runs")
    ap.add_argument("--beam-n", type=int, default=4)
    ap.add_argument("--beam-width", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--max-step-tokens", type=int, default=48)
    ap.add_argument("--skip-ray", action="store_true", help="only the prefix-hit part")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, load average {load:.1f} at start, python "
          f"{platform.python_version()}; engine: embedded llama.cpp (xllamacpp), model {a.model}, 1 thread per "
          f"replica; ray: local cluster of {a.cpus} CPUs, 1 CPU per actor, {a.per_actor} problems per actor; "
          f"throughput runs: {a.limit} problems x n={a.n} x {a.max_tokens} tokens (ignore_eos); tree runs: "
          f"beam_search N={a.beam_n} M={a.beam_width} steps<={a.max_steps}x{a.max_step_tokens} tok on "
          f"{a.tree_limit} problems")
    ratio = float("nan")
    if not a.skip_ray:
        with tempfile.TemporaryDirectory() as d:
            one = ray_throughput(a, 1, Path(d))
            two = ray_throughput(a, 2, Path(d))
        ratio = two["tps"] / one["tps"]
        print(f"{'replicas':<10} {'tokens':>8} {'wall s':>8} {'tok/s':>8}")
        for k, r in (("1", one), ("2", two)):
            print(f"{k:<10} {r['tokens']:>8.0f} {r['wall_s']:>8.1f} {r['tps']:>8.1f}")
    aff = asyncio.run(tree_hits(a, "affinity"))
    rr = asyncio.run(tree_hits(a, "round_robin"))
    print(f"{'routing':<12} {'prompt tok':>10} {'cached':>8} {'hit rate':>8}")
    for k, r in (("affinity", aff), ("round_robin", rr)):
        print(f"{k:<12} {r['prompt']:>10} {r['cached']:>8} {r['hit']:>8.3f}")
    print(f"RESULT ray_2_vs_1={ratio:.3f} affinity_hit={aff['hit']:.3f} roundrobin_hit={rr['hit']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
