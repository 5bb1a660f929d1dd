"""CodeT (Chen et al. 2023, "CodeT: Code Generation with Generated Tests"): dual execution agreement.

The model writes N programs and, separately, test cases (``test_samples`` replies to a test prompt,
their asserts pooled). Every program runs on every test in the sandbox. Programs that pass exactly
the same set of tests form a consensus set; a set's score is (number of programs in it) x (number of
tests they pass). The answer is the first program of the highest-scoring set (ties: the set whose
first program came first). With ``public=true`` (the default; the paper uses generated tests only)
the docstring's examples join the generated tests.

``extra``: ``tests`` (how many), ``sets`` (the consensus sets as [programs, tests passed, score],
best first). Each candidate's ``score`` is its set's score.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.core.context import Context
from ttscale.core.execution import public_tests
from ttscale.core.registry import check_template, param
from ttscale.core.types import Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.code_common import TEST_PROMPT, generate_tests, run_each, sample_programs
from ttscale.strategies.turn import Temperature


@dataclass(frozen=True)
class CodeTParams:
    n: int = param(8, "number of sampled programs")
    temperature: Temperature = param(0.8, "sampling temperature of programs and tests, or turn (TURN)")
    top_p: float = param(0.95, "nucleus sampling (programs)")
    max_tokens: int = param(768, "max generated tokens per program")
    test_samples: int = param(2, "replies to the test prompt")
    tests_per_sample: int = param(5, "tests asked for in each reply")
    max_tests: int = param(20, "at most this many generated tests are used")
    test_max_tokens: int = param(384, "max generated tokens per test reply")
    public: bool = param(True, "add the docstring's example tests to the generated ones")
    time_limit: float = param(3.0, "seconds per test")
    test_prompt: str = param(TEST_PROMPT, "test prompt ({prompt}, {k}, {entry_point})")

    def __post_init__(self) -> None:
        check_template("test_prompt", self.test_prompt, ("prompt", "k", "entry_point"))


@strategy("codet", CodeTParams, "code: programs x generated tests, dual execution agreement (CodeT)")
async def codet(problem: Problem, ctx: Context, p: CodeTParams) -> Outcome:
    drawn = await sample_programs(ctx, p)
    if drawn is None:
        return Outcome(None, None, [])
    cands, t = drawn
    tests = await generate_tests(ctx, samples=p.test_samples, per_sample=p.tests_per_sample,
                                 temperature=t, max_tokens=p.test_max_tokens, limit=p.max_tests,
                                 template=p.test_prompt)
    if p.public:
        tests = list(dict.fromkeys([*public_tests(problem), *tests]))
    results = await run_each(ctx, cands, tests, p.time_limit)
    sets: dict[frozenset[int], list[int]] = {}
    for i, (c, r) in enumerate(zip(cands, results, strict=True)):
        if c.answer is None:
            continue
        key = frozenset(j for j, t in enumerate(r or ()) if t.passed)
        sets.setdefault(key, []).append(i)
    if not sets:
        return Outcome(None, None, cands, {"tests": len(tests), "sets": []})
    ranked = sorted(sets.items(), key=lambda kv: (-len(kv[1]) * len(kv[0]), kv[1][0]))
    score = {i: float(len(members) * len(key)) for key, members in sets.items() for i in members}
    cands = [c.with_(score=score.get(i)) for i, c in enumerate(cands)]
    chosen = cands[ranked[0][1][0]]
    table = [[members, len(key), len(members) * len(key)] for key, members in ranked]
    return Outcome(chosen.answer, chosen, cands, {"tests": len(tests), "sets": table})
