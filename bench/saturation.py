"""Does a strategy keep the embedded engine saturated?

Measures, on the embedded llama.cpp engine with fixed-length generations (``ignore_eos``):

- single: one request alone (tokens/s of one stream, for reference);
- raw: K = problems x n single-sample requests fired concurrently straight at the engine;
- strategy: the same problems run concurrently through ``Context`` + self-consistency (``n``
  samples each), i.e. the same total generated tokens through ttscale's strategy layer.

``saturation = strategy_tok_s / raw_tok_s`` (goal >= 0.9). Each mode is repeated and the median
reported. The last line is ``RESULT saturation=<ratio> raw_tok_s=<x> strategy_tok_s=<y>``.

    python bench/saturation.py [--model qwen2.5-coder-1.5b] [--problems 4] [--n 2] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Sequence

from ttscale.core.budget import Budget, CostMeter
from ttscale.core.context import Context
from ttscale.core.types import GenerationRequest, Problem
from ttscale.engines.embedded import EmbeddedEngine, EmbeddedParams

QUESTIONS = [
    "A baker makes 24 muffins and sells 3/4 of them. How many are left?",
    "What is the sum of the first 20 positive integers?",
    "A train travels 180 km in 2.5 hours. What is its average speed in km/h?",
    "If 5x + 7 = 42, what is x?",
    "How many minutes are there in 3 days?",
    "A rectangle has perimeter 36 and width 7. What is its area?",
    "What is 15% of 240?",
    "Tom has twice as many apples as Ann, who has 9. How many do they have together?",
]
SYSTEM = "Solve the problem step by step, then give the final answer as \\boxed{...}."


class _NoAnswers:
    """A stub answer space: nothing is extracted, nothing groups."""

    def extract(self, text: str) -> str | None:
        return None

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        return [None for _ in answers]


def _answer_space():
    if importlib.util.find_spec("ttscale.verifiers.math_answers") is not None:
        try:
            from ttscale.verifiers.math_answers import MathAnswers  # type: ignore[import-not-found]

            return MathAnswers()
        except Exception:
            pass
    return _NoAnswers()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _problems(k: int) -> list[Problem]:
    return [Problem(id=f"q{i}", prompt=QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" ({i})"))
            for i in range(k)]


async def run_single(eng: EmbeddedEngine, problems: list[Problem], args) -> tuple[int, float]:
    before = eng.generated_tokens
    t = time.perf_counter()
    await eng.generate(GenerationRequest(messages=tuple(problems[0].chat(SYSTEM)), max_tokens=args.max_tokens,
                                         temperature=args.temperature, seed=1))
    return eng.generated_tokens - before, time.perf_counter() - t


async def run_raw(eng: EmbeddedEngine, problems: list[Problem], args, rep: int) -> tuple[int, float]:
    reqs = [GenerationRequest(messages=tuple(p.chat(SYSTEM)), max_tokens=args.max_tokens,
                              temperature=args.temperature, seed=1000 * rep + 10 * i + j)
            for i, p in enumerate(problems) for j in range(args.n)]
    before = eng.generated_tokens
    t = time.perf_counter()
    await asyncio.gather(*(eng.generate(r) for r in reqs))
    return eng.generated_tokens - before, time.perf_counter() - t


async def run_strategy(eng: EmbeddedEngine, problems: list[Problem], args, rep: int) -> tuple[int, float]:
    answers = _answer_space()
    try:
        from ttscale.strategies.self_consistency import SelfConsistencyParams, self_consistency

        params = SelfConsistencyParams(n=args.n, temperature=args.temperature, max_tokens=args.max_tokens)

        async def one(ctx: Context) -> None:
            await self_consistency(ctx.problem, ctx, params)
    except ImportError:
        async def one(ctx: Context) -> None:
            await ctx.sample(args.n, temperature=args.temperature, max_tokens=args.max_tokens)

    ctxs = [Context(problem=p, engine=eng, answers=answers, meter=CostMeter(Budget(), eng.params_count),
                    seed=rep, system_prompt=SYSTEM) for p in problems]
    before = eng.generated_tokens
    t = time.perf_counter()
    await asyncio.gather(*(one(c) for c in ctxs))
    return eng.generated_tokens - before, time.perf_counter() - t


async def main_async(args) -> None:
    t0 = time.perf_counter()
    eng = EmbeddedEngine(args.model, EmbeddedParams(n_parallel=args.n_parallel or args.problems * args.n,
                                                    threads=args.threads or 0, ignore_eos=True, poll=args.poll))
    load_s = time.perf_counter() - t0
    problems = _problems(args.problems)
    k = args.problems * args.n
    print(f"machine : {os.cpu_count()} cores, {_cpu_model()}, {platform.system()} {platform.release()}")
    print(f"engine  : embedded (llama.cpp via xllamacpp), model {eng.model} ({eng.model_path.name}), "
          f"loaded in {load_s:.1f}s")
    print(f"settings: n_parallel={eng.n_parallel} threads={eng.threads} poll={args.poll} slot_ctx={eng.slot_ctx} | "
          f"{args.problems} problems x n={args.n} = {k} samples x {args.max_tokens} tokens, "
          f"temperature {args.temperature}, {args.repeats} repeats")
    # warm-up: every slot gets a problem's prompt, so both modes start from the same prompt cache
    await run_raw(eng, problems, argparse.Namespace(**{**vars(args), "max_tokens": 2}), -1)

    rows: dict[str, list[tuple[int, float]]] = {"single": [], "raw": [], "strategy": []}
    for rep in range(args.repeats):
        rows["single"].append(await run_single(eng, problems, args))
        order = ("raw", "strategy") if rep % 2 == 0 else ("strategy", "raw")  # cancel drift
        for mode in order:
            fn = run_raw if mode == "raw" else run_strategy
            rows[mode].append(await fn(eng, problems, args, rep))
        print(f"  repeat {rep + 1}: " + "  ".join(
            f"{m} {tok} tok / {s:.2f}s = {tok / s:.1f} tok/s" for m, runs in rows.items() for tok, s in runs[-1:]))
    await eng.aclose()

    med = {m: statistics.median(tok / s for tok, s in runs) for m, runs in rows.items()}
    print()
    print(f"{'mode':<10}{'tokens':>8}{'median s':>10}{'median tok/s':>14}")
    for m, runs in rows.items():
        print(f"{m:<10}{runs[0][0]:>8}{statistics.median(s for _, s in runs):>10.2f}{med[m]:>14.1f}")
    ratio = med["strategy"] / med["raw"] if med["raw"] else 0.0
    print(f"batching speed-up over one stream: {med['raw'] / med['single']:.2f}x")
    print(f"RESULT saturation={ratio:.3f} raw_tok_s={med['raw']:.1f} strategy_tok_s={med['strategy']:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--n", type=int, default=2, help="samples per problem")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-parallel", type=int, default=0, help="llama.cpp slots (0 = problems x n)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    ap.add_argument("--poll", type=int, default=0, help="llama.cpp busy-wait level (0-100)")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
