"""DeepConf online with and without early termination, on the embedded llama.cpp engine.

Same model, same problems (the bundled dataset), same seed, same parameters; the only difference is
``early_stop``. With ``early_stop=True`` the strategy hands each post-warm-up trace a stream monitor
and llama.cpp stops generating as soon as a full window of token confidences falls below the warm-up
threshold; with ``early_stop=False`` every trace runs to its end. The generated tokens are the cost
meter's (what the engine really produced), summed by the ``Runner``.

By construction (see ``ttscale.strategies.deepconf``) both runs vote over the same traces when the
engine gives the same samples for the same seeds, so accuracy should match. In practice llama.cpp is
not bit-exact across runs for the same seed (different batch compositions and prompt-cache states
change the numerics; observed even with one slot for the first sample of a prompt), so the two runs'
samples drift apart and the comparison is statistical: use a larger ``--limit`` for firm numbers. The
script reports how many final answers agree.

Usage: python bench/deepconf_embedded.py [--model smollm2-135m] [--limit 4] [--n 6] [--warmup 3]
       [--window 32] [--eta 10] [--max-tokens 256] [--consensus 0.95|none] [--seed 0]
Ends with: RESULT deepconf_token_saving=<percent> acc_early=<x> acc_full=<y>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from ttscale.datasets import load_dataset, make_grader
from ttscale.engines.embedded import EmbeddedEngine, EmbeddedParams
from ttscale.lab.runner import Runner
from ttscale.verifiers.math_answers import MathAnswers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b", help="embedded model name (smollm2-135m: quick)")
    ap.add_argument("--dataset", default="default")
    ap.add_argument("--limit", type=int, default=4, help="problems")
    ap.add_argument("--n", type=int, default=6, help="traces per problem (budget)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=3, help="traces per post-warm-up wave")
    ap.add_argument("--eta", type=float, default=10.0, help="keep top eta%% (threshold = (100-eta)th percentile)")
    ap.add_argument("--window", type=int, default=32, help="confidence window (short traces: 64-256)")
    ap.add_argument("--measure", default="lowest_window")
    ap.add_argument("--consensus", default="0.95", help="consensus stop share, or none")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=4, help="problems in flight")
    ap.add_argument("--n-parallel", type=int, default=8, help="llama.cpp slots")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all)")
    ap.add_argument("--out-dir", default=None, help="where the two results files go (default: a temp dir)")
    return ap.parse_args(argv)


async def run_one(engine: EmbeddedEngine, problems, grader, params: dict, seed: int, concurrency: int,
                  out: Path) -> tuple[object, list[dict]]:
    runner = Runner(engine=engine, strategy="deepconf", params=params, answers=MathAnswers(), grader=grader,
                    seed=seed, concurrency=concurrency, progress=False)
    summary = await runner.run(problems, out)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return summary, rows


async def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    ds = load_dataset(a.dataset, limit=a.limit)
    problems = list(ds.problems)
    grader = make_grader(ds)
    consensus = None if a.consensus.lower() in ("none", "off", "") else float(a.consensus)
    base = {"mode": "online", "n": a.n, "warmup": a.warmup, "batch": a.batch, "eta": a.eta,
            "window": a.window, "measure": a.measure, "consensus": consensus,
            "max_tokens": a.max_tokens, "temperature": a.temperature}
    t0 = time.perf_counter()
    slot_ctx = 1024 + a.max_tokens
    engine = EmbeddedEngine(a.model, EmbeddedParams(n_parallel=a.n_parallel, n_ctx=a.n_parallel * slot_ctx,
                                                    threads=a.threads or 0))
    print(f"model {engine.model} ({engine.model_path.name}), {len(problems)} problems of {ds.name}, "
          f"{os.cpu_count()} cpus, load {time.perf_counter() - t0:.1f}s", flush=True)
    print("params", json.dumps(base), f"seed={a.seed}", flush=True)
    out_dir = Path(a.out_dir) if a.out_dir else Path(tempfile.mkdtemp(prefix="deepconf_bench_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {}
    try:
        for tag, early in (("early", True), ("full", False)):
            path = out_dir / f"deepconf_{tag}.jsonl"
            if path.exists():
                path.unlink()
            t = time.perf_counter()
            summary, rows = await run_one(engine, problems, grader, {**base, "early_stop": early}, a.seed,
                                          a.concurrency, path)
            wall = time.perf_counter() - t
            if summary.errors or summary.interrupted or len(rows) != len(problems):
                print(f"{tag}: run incomplete ({len(rows)}/{len(problems)} problems)", file=sys.stderr)
                return 1
            traces = sum(r["extra"].get("traces", 0) for r in rows)
            cut = sum(r["extra"].get("stopped_early", 0) for r in rows)
            res[tag] = {
                "acc": summary.accuracy or 0.0,
                "tokens": summary.generated_tokens / len(rows),
                "traces": traces / len(rows),
                "cut": cut,
                "wall": wall,
                "answers": {r["problem_id"]: r["answer"] for r in rows},
                "thresholds": [r["extra"].get("threshold") for r in rows],
            }
            print(f"{tag:5s}: acc {res[tag]['acc']:.3f}  mean generated tokens/problem {res[tag]['tokens']:.1f}  "
                  f"traces/problem {res[tag]['traces']:.2f}  traces cut {cut}  wall {wall:.0f}s", flush=True)
    finally:
        await engine.aclose()
    e, f = res["early"], res["full"]
    saving = 100.0 * (1.0 - e["tokens"] / f["tokens"]) if f["tokens"] else 0.0
    agree = sum(e["answers"][k] == f["answers"].get(k) for k in e["answers"])
    print()
    print(f"{'run':<8}{'accuracy':>10}{'tokens/problem':>16}{'traces cut':>12}")
    print(f"{'early':<8}{e['acc']:>10.3f}{e['tokens']:>16.1f}{e['cut']:>12d}")
    print(f"{'full':<8}{f['acc']:>10.3f}{f['tokens']:>16.1f}{f['cut']:>12d}")
    print(f"token saving of early termination: {saving:.1f}%  (same final answer on {agree}/{len(e['answers'])} problems)")
    print(f"results: {out_dir}")
    print(f"RESULT deepconf_token_saving={saving:.1f} acc_early={e['acc']:.3f} acc_full={f['acc']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
