"""Real results files for the ``ttscale view`` tests and screenshots, made with the scripted engine
and a scripted step verifier (the same mechanics as tests/test_tree_search.py): beam search (rounds
with kept / finished / pruned beams) and adaptive-consistency (a vote trace with a stop point).

``python tests/view_fixtures.py`` rewrites tests/fixtures/beam_search.jsonl and
tests/fixtures/adaptive.jsonl (wall times zeroed so the files are reproducible)."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

from ttscale.core.protocols import Verifier
from ttscale.core.types import GenerationRequest, Problem
from ttscale.engines.scripted import ScriptedEngine, ScriptedReply
from ttscale.lab.runner import Runner
from ttscale.verifiers.math_answers import MathAnswers

D = "\n\n"
FIXTURES = Path(__file__).parent / "fixtures"

# per problem: the step table (prefix -> sampled next steps) and the reference answer
BEAM_PROBLEMS: dict[str, tuple[str, dict[str, list[str]], str]] = {
    "add-1": ("What is 2 + 3?", {
        "": ["alpha Start from 2.", "beta Guess.", "gamma Count up from 2.", "delta Add 3."],
        "alpha Start from 2." + D: ["afin Add three: \\boxed{5}", "acont Then add 1 three times."],
        "gamma Count up from 2." + D: ["gcont 3, 4, 5.", "gfin So \\boxed{7}"],
        "gamma Count up from 2." + D + "gcont 3, 4, 5." + D: ["gx The count ends at \\boxed{5}",
                                                                "gy Off by two: \\boxed{7}"],
        "alpha Start from 2." + D + "acont Then add 1 three times." + D: ["az That is \\boxed{7}", ""],
    }, "5"),
    "mul-2": ("What is 4 * 6?", {
        "": ["alpha Four sixes.", "beta Six fours.", "gamma Guess.", "delta Double 12."],
        "alpha Four sixes." + D: ["afin 6+6+6+6 = \\boxed{24}", "acont 12 + 12."],
        "beta Six fours." + D: ["bfin 4*6 = \\boxed{20}", "bcont 8, 12, 16."],
        "alpha Four sixes." + D + "acont 12 + 12." + D: ["ax \\boxed{24}", "ay \\boxed{22}"],
        "beta Six fours." + D + "bcont 8, 12, 16." + D: ["bx \\boxed{24}", "by \\boxed{20}"],
    }, "24"),
    "sub-3": ("What is 10 - 7?", {
        "": ["alpha Take 7 from 10.", "beta Guess 4.", "gamma Count down.", "delta Use 10 = 7 + 3."],
        "delta Use 10 = 7 + 3." + D: ["dfin So \\boxed{3}", "dcont The rest is 3."],
        "gamma Count down." + D: ["gfin \\boxed{4}", "gcont 9, 8, 7."],
        "delta Use 10 = 7 + 3." + D + "dcont The rest is 3." + D: ["dx \\boxed{3}", "dy \\boxed{4}"],
        "gamma Count down." + D + "gcont 9, 8, 7." + D: ["gx \\boxed{4}", "gy \\boxed{3}"],
    }, "3"),
}
STEP_SCORES = {"alpha": 0.9, "beta": 0.2, "gamma": 0.8, "delta": 0.5, "afin": 0.7, "acont": 0.6,
               "gcont": 0.95, "gfin": 0.3, "gx": 0.9, "gy": 0.4, "az": 0.5, "bfin": 0.35, "bcont": 0.75,
               "ax": 0.85, "ay": 0.25, "bx": 0.8, "by": 0.45, "dfin": 0.9, "dcont": 0.7, "dx": 0.88,
               "dy": 0.3, "guess": 0.1}


class StepTable(Verifier):
    """Scripted PRM: a step's score is ``STEP_SCORES[first word of the step]`` (0.5 if absent)."""

    name = "steps"

    async def score(self, problem, candidates, ctx):
        return [STEP_SCORES.get(c.steps[-1].split()[0], 0.5) if c.steps else 0.0 for c in candidates]

    async def score_steps(self, problem, candidates, ctx):
        return [[STEP_SCORES.get(s.split()[0] if s.split() else "", 0.5) for s in c.steps] for c in candidates]


def _tree_script():
    seen: dict[tuple[str, str], int] = defaultdict(int)

    def script(req: GenerationRequest, k: int) -> str:
        table = BEAM_PROBLEMS[req.problem_id or ""][1]
        texts = table.get(req.prefix)
        if texts is None:
            return "guess Not sure: \\boxed{0}"
        i = seen[(req.problem_id or "", req.prefix)]
        seen[(req.problem_id or "", req.prefix)] += 1
        return texts[i % len(texts)]

    return script


async def _run(out: Path, strategy: str, params: dict, engine: ScriptedEngine, problems: list[Problem],
               verifiers: dict | None = None) -> Path:
    await Runner(engine=engine, strategy=strategy, params=params, answers=MathAnswers(), grader=MathAnswers(),
                 verifiers=verifiers or {}, progress=False, concurrency=1).run(problems, out)
    return out


def _zero_wall_times(path: Path) -> None:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in recs:
        r["cost"]["wall_time_s"] = 0.0
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))


def make_beam_results(out: Path) -> Path:
    """Beam search (N=4, M=2) over the three BEAM_PROBLEMS: 12 generations each."""
    problems = [Problem(id=pid, prompt=q, answer=ref) for pid, (q, _, ref) in BEAM_PROBLEMS.items()]
    asyncio.run(_run(out, "beam_search", {"n": 4, "beam_width": 2, "verifier": "steps", "max_steps": 6},
                     ScriptedEngine(_tree_script(), model="scripted-steps"), problems,
                     {"steps": StepTable()}))
    _zero_wall_times(out)
    return out


def make_tree_results(out: Path, strategy: str, params: dict) -> Path:
    """Any step-wise tree search over the three BEAM_PROBLEMS (not committed: made in tests)."""
    problems = [Problem(id=pid, prompt=q, answer=ref) for pid, (q, _, ref) in BEAM_PROBLEMS.items()]
    asyncio.run(_run(out, strategy, {"verifier": "steps", **params},
                     ScriptedEngine(_tree_script(), model="scripted-steps"), problems, {"steps": StepTable()}))
    return out


def _conf_reply(conf: list[float], answer: str) -> ScriptedReply:
    """A trace of len(conf) words whose token confidences are ``conf``."""
    words = [f"w{i}" for i in range(len(conf) - 1)] + [f"\\boxed{{{answer}}}"]
    return ScriptedReply(" ".join(words), logprobs=[-c for c in conf], answer=answer)


DEEPCONF_SCRIPT = [_conf_reply([2.0] * 5, "7"), _conf_reply([1.0] * 5, "5"), _conf_reply([3.0] * 5, "7"),
                   _conf_reply([1.5] * 5, "5"), _conf_reply([2, 2, 2, 2, 0.5, 0.5, 0.5, 2, 2, 2], "5"),
                   _conf_reply([2.0] * 8, "5")]


def make_deepconf_results(out: Path) -> Path:
    """DeepConf online on one problem: warm-up of 4 (threshold 1.75), then one trace cut early."""
    params = {"mode": "online", "n": 6, "warmup": 4, "eta": 50, "window": 3, "batch": 2, "consensus": None}
    asyncio.run(_run(out, "deepconf", params, ScriptedEngine(lambda req, k: DEEPCONF_SCRIPT[k], model="scripted-conf"),
                     [Problem(id="dc-1", prompt="What is 3 + 4?", answer="7")]))
    return out


ADAPTIVE_ANSWERS = {"ac-1": ["5", "7", "5", "5", "5", "5", "5", "5", "5", "5"],
                    "ac-2": ["3", "4", "4", "3", "4", "4", "4", "4", "4", "4", "4", "4"]}


def make_adaptive_results(out: Path) -> Path:
    """Adaptive-consistency (one sample at a time) on two problems: it stops once the leader is
    probably the majority (P > 0.95)."""
    script = {pid: [f"Work it out.{D}So \\boxed{{{a}}}" for a in ans] for pid, ans in ADAPTIVE_ANSWERS.items()}
    problems = [Problem(id="ac-1", prompt="What is 2 + 3?", answer="5"),
                Problem(id="ac-2", prompt="What is 7 - 3?", answer="4")]
    asyncio.run(_run(out, "adaptive_consistency", {"max_samples": 12, "batch": 1},
                     ScriptedEngine(script, model="scripted-votes"), problems))
    _zero_wall_times(out)
    return out


if __name__ == "__main__":
    FIXTURES.mkdir(exist_ok=True)
    for f in (FIXTURES / "beam_search.jsonl", FIXTURES / "adaptive.jsonl"):
        f.unlink(missing_ok=True)
    make_beam_results(FIXTURES / "beam_search.jsonl")
    make_adaptive_results(FIXTURES / "adaptive.jsonl")
    print("wrote", FIXTURES)
