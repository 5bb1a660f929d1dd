"""Self-consistency on program behaviour (Shi et al. 2022, MBR-exec; Li et al. 2022, AlphaCode
clustering): sample N programs, run each on the same inputs, group programs whose outputs agree on
every input, and answer with the first program of the largest group (ties: the group whose first
program came first).

Inputs are the calls of the public tests (``f(x)`` of ``assert f(x) == y``) plus, when
``input_samples`` > 0, the calls of tests the model writes for the purpose (their expected values are
ignored: only the inputs are used). A program's behaviour on an input is what the call returned
(its ``repr``), or the kind of failure. Programs without code, and programs that fail on every input
(while some program runs), do not vote; a problem with no inputs
at all falls back to grouping identical programs (normalised syntax).

``extra``: ``inputs`` (how many), ``groups`` (member indices per group, largest first). Each
candidate's ``score`` is its group's share of the votes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.execution import public_tests
from ttscale.core.registry import param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.code_common import (
    call_of,
    entry_point,
    generate_tests,
    run_each,
    sample_programs,
)
from ttscale.strategies.turn import Temperature


@dataclass(frozen=True)
class CodeVoteParams:
    n: int = param(8, "number of sampled programs")
    temperature: Temperature = param(0.8, "sampling temperature, or turn (TURN: the entropy turning point)")
    top_p: float = param(0.95, "nucleus sampling")
    max_tokens: int = param(768, "max generated tokens per program")
    input_samples: int = param(1, "model replies asked for extra test inputs (0: public test inputs only)")
    max_inputs: int = param(16, "at most this many inputs")
    test_max_tokens: int = param(384, "max generated tokens per input reply")
    time_limit: float = param(3.0, "seconds per input")


@strategy("code_vote", CodeVoteParams, "code: majority over programs grouped by their outputs on inputs")
async def code_vote(problem: Problem, ctx: Context, p: CodeVoteParams) -> Outcome:
    drawn = await sample_programs(ctx, p)
    if drawn is None:
        return Outcome(None, None, [])
    cands, t = drawn
    ep = entry_point(ctx)
    written = await generate_tests(ctx, samples=p.input_samples, per_sample=5, temperature=t,
                                   max_tokens=p.test_max_tokens, limit=p.max_inputs)
    calls = [c for c in (call_of(t, ep) for t in [*public_tests(problem), *written]) if c is not None]
    inputs = list(dict.fromkeys(calls))[: p.max_inputs]
    results = await run_each(ctx, cands, inputs, p.time_limit)
    labels = await ctx.answers.group([c.answer for c in cands]) if not inputs else None
    groups: dict[object, list[int]] = {}
    runs = [i for i, c in enumerate(cands) if c.answer is not None
            and (labels is not None or any(r.passed for r in results[i] or ()))]
    voters_idx = runs or [i for i, c in enumerate(cands) if c.answer is not None]
    for i in voters_idx:
        if labels is not None:
            key: object = labels[i]
        else:
            key = tuple((r.status, r.value if r.passed else None) for r in results[i] or ())
        groups.setdefault(key, []).append(i)
    if not groups:
        return Outcome(None, None, cands, {"inputs": len(inputs), "groups": []})
    ranked = sorted(groups.values(), key=lambda members: (-len(members), members[0]))
    voters = sum(len(m) for m in ranked)
    share = {i: len(m) / voters for m in ranked for i in m}
    cands = [c.with_(score=share.get(i)) for i, c in enumerate(cands)]
    chosen = cands[ranked[0][0]]
    return Outcome(chosen.answer, chosen, cands, {"inputs": len(inputs), "groups": ranked})
