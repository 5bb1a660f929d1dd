"""Mind Evolution and its evaluators: the meeting puzzle (generator, parser, checker, dataset,
grader), Boltzmann selection, and the search's control flow on the scripted engine."""

import math
import random

import pytest

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.core.types import Problem
from ttscale.datasets import load_dataset, make_grader
from ttscale.engines.scripted import ScriptedEngine
from ttscale.evaluators import Evaluation, make_evaluator
from ttscale.evaluators.meeting import (
    Constraint,
    MeetingEvaluator,
    MeetingSpec,
    check_schedule,
    format_schedule,
    generate_meeting,
    parse_schedule,
)
from ttscale.strategies.base import load_strategies
from ttscale.strategies.mind_evolution import NO_FEEDBACK, boltzmann_select
from ttscale.verifiers.llm_judge import LLMJudge
from ttscale.verifiers.math_answers import MathAnswers

from helpers import make_ctx

# --------------------------------------------------------------------------------------------------
# the meeting puzzle

TWO = MeetingSpec(
    ("Ana", "Ben"),
    (Constraint("window", "Ana", start=10, end=12), Constraint("before", "Ana", "Ben")),
)
TWO_PROBLEM = Problem(id="m", prompt=TWO.describe(), metadata={"meeting": TWO.to_dict()})


def test_generator_is_deterministic_and_exact():
    spec, hidden = generate_meeting(0, 0)
    assert spec.people == ("Ana", "Ben", "Cara", "Eve")
    assert hidden == {"Ana": 15, "Ben": 16, "Cara": 9, "Eve": 12}
    assert spec.constraints == (
        Constraint("window", "Ben", start=10, end=17),
        Constraint("before", "Eve", "Ben"),
        Constraint("before", "Cara", "Ben"),
        Constraint("before", "Ana", "Ben"),
        Constraint("apart", "Ana", "Cara"),
    )
    text = spec.describe().splitlines()
    assert text[0] == "Schedule one one-hour meeting for each of these people: Ana, Ben, Cara, Eve."
    assert text[3:8] == [
        "1. Ben is available only from 10:00 to 17:00.",
        "2. Eve's meeting must end before Ben's meeting starts.",
        "3. Cara's meeting must end before Ben's meeting starts.",
        "4. Ana's meeting must end before Ben's meeting starts.",
        "5. Ana's and Cara's meetings must not overlap.",
    ]
    assert "`Name: H`" in text[-1]
    assert generate_meeting(0, 0) == (spec, hidden)
    assert generate_meeting(1, 0) != (spec, hidden)


def test_every_generated_puzzle_is_solved_by_its_hidden_schedule():
    for seed in range(20):
        for i in range(9):
            spec, hidden = generate_meeting(seed, i)
            assert len(spec.people) == 4 + i % 3
            assert check_schedule(spec, hidden) == []
            assert parse_schedule(spec, format_schedule(spec, hidden)) == hidden
            assert MeetingSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match=r"people must be in 2\.\.8, got 9"):
        generate_meeting(0, 0, people=9)


def test_parser_formats_and_last_mention():
    spec = MeetingSpec(("Ana", "Ben", "Cara", "Dan", "Eve"), ())
    text = (
        "First try: Ana: 9\n"
        "**Ben** = 2pm\n"
        "Cara at 11:00\n"
        "Dan: 10:30\n"  # not on the hour: not read
        "Eve - 12am, Zed: 10\n"
        "Final: Ana: 13"
    )
    assert parse_schedule(spec, text) == {"Ana": 13, "Ben": 14, "Cara": 11, "Eve": 0}
    assert parse_schedule(spec, "\\boxed{Ana: 10, Ben: 12}") == {"Ana": 10, "Ben": 12}
    assert parse_schedule(spec, "Anastasia: 10 and Bend: 9") == {}
    assert format_schedule(spec, {"Eve": 9, "Ana": 10}) == "Ana: 10, Eve: 9"


def test_checker_lists_every_violation_in_words():
    spec = MeetingSpec(
        ("Ana", "Ben", "Cara", "Dan"),
        (
            Constraint("window", "Ana", start=10, end=12),
            Constraint("apart", "Ana", "Ben"),
            Constraint("before", "Ben", "Cara"),
            Constraint("before", "Dan", "Ana"),  # Dan missing: not checked
        ),
    )
    bad = check_schedule(spec, {"Ana": 12, "Ben": 12, "Cara": 18})
    assert bad == [
        "Dan has no meeting time.",
        "Cara's meeting at 18:00 is outside the working day (9:00 to 17:00).",
        "Ana is available only from 10:00 to 12:00, but Ana's meeting is at 12:00.",
        "Ana's and Ben's meetings overlap (both at 12:00).",
    ]
    bad = check_schedule(spec, {"Ana": 11, "Ben": 13, "Cara": 13, "Dan": 11})
    assert bad == [
        "Ben's meeting (at 13:00) must end before Cara's meeting (at 13:00) starts.",
        "Dan's meeting (at 11:00) must end before Ana's meeting (at 11:00) starts.",
    ]
    assert check_schedule(spec, {"Ana": 11, "Ben": 12, "Cara": 13, "Dan": 9}) == []


def test_spec_from_bad_metadata_is_a_clear_error():
    with pytest.raises(ConfigError, match="meeting spec is malformed"):
        MeetingSpec.from_dict({"constraints": []})
    with pytest.raises(ConfigError, match="unknown constraint type 'after'"):
        MeetingSpec.from_dict({"people": ["Ana"], "constraints": [{"type": "after", "a": "Ana", "b": "Ana"}]})


async def test_meeting_evaluator_fitness_feedback_answer():
    ev = make_evaluator("meeting")
    got = await ev.evaluate(TWO_PROBLEM, "Ana: 9\nBen: 9", None)
    assert got == Evaluation(
        fitness=-2.0,
        feedback="Ana is available only from 10:00 to 12:00, but Ana's meeting is at 9:00.\n"
                 "Ana's meeting (at 9:00) must end before Ben's meeting (at 9:00) starts.",
        solved=False, answer="Ana: 9, Ben: 9", details={"violations": 2},
    )
    ok = await ev.evaluate(TWO_PROBLEM, "Ana: 11 Ben: 16", None)
    assert (ok.fitness, ok.solved, ok.answer, ok.feedback) == (0.0, True, "Ana: 11, Ben: 16",
                                                               "All constraints are satisfied.")
    none = await ev.evaluate(TWO_PROBLEM, "no idea", None)
    assert (none.fitness, none.answer) == (-2.0, None)
    with pytest.raises(ConfigError, match="needs a meeting puzzle"):
        await MeetingEvaluator().evaluate(Problem(id="x", prompt="2+2?"), "4", None)
    with pytest.raises(ConfigError, match="unknown evaluator 'nope'"):
        make_evaluator("nope")


async def test_meeting_dataset_and_grader():
    ds = load_dataset("meeting", limit=3, seed=2)
    assert ds.name == "meeting-s2" and ds.grader == "meeting"
    assert [p.id for p in ds.problems] == ["meeting-0", "meeting-1", "meeting-2"]
    spec, hidden = generate_meeting(2, 1)
    p1 = ds.problems[1]
    assert p1.prompt == spec.describe() and p1.answer == format_schedule(spec, hidden)
    assert MeetingSpec.from_dict(p1.metadata["meeting"]) == spec
    assert len(load_dataset("meeting")) == 20 and len(load_dataset("meeting", size=5)) == 5
    grader = make_grader(ds)
    assert await grader.grade(p1, p1.answer) is True
    # the reference with one person dropped is wrong; no answer is wrong
    assert await grader.grade(p1, p1.answer.split(", ", 1)[1]) is False
    assert await grader.grade(p1, None) is False
    assert await grader.grade(Problem(id="x", prompt="q", answer="1"), "1") is None
    assert await grader.grade(TWO_PROBLEM, "Ana: 10, Ben: 15") is True  # not the only solution


# --------------------------------------------------------------------------------------------------
# Boltzmann tournament selection


def test_boltzmann_selection():
    assert boltzmann_select(random.Random(0), [-3.0, 0.0, -1.0], 3, 1e-6) == [1, 2, 0]
    assert boltzmann_select(random.Random(0), [0.0, 0.0], 5, 1.0) in ([0, 1], [1, 0])
    assert boltzmann_select(random.Random(0), [], 2, 1.0) == []
    # P(first pick = 0) = 1 / (1 + e^-ln3) = 0.75 at temperature 1
    rng = random.Random(7)
    firsts = [boltzmann_select(rng, [0.0, -math.log(3)], 1, 1.0)[0] for _ in range(4000)]
    assert abs(firsts.count(0) / 4000 - 0.75) < 0.03
    # a high temperature flattens it
    firsts = [boltzmann_select(rng, [0.0, -math.log(3)], 1, 100.0)[0] for _ in range(4000)]
    assert abs(firsts.count(0) / 4000 - 0.5) < 0.03


# --------------------------------------------------------------------------------------------------
# the search on the scripted engine

SHORT = {
    "init_prompt": "INIT {problem}",
    "recombine_prompt": "RECOMBINE {parents}",
    "parent_template": "[{index}|{fitness}|{solution}|{feedback}]",
    "critic_prompt": "CRITIC {solution} // {fitness} // {feedback}",
    "author_prompt": "AUTHOR {solution} // {critique}",
    "selection_temperature": 1e-6,  # greedy: the best parents, deterministic
}


def replies(texts):
    """A script answering the k-th request with texts[k] (critic requests included)."""
    return lambda req, k: texts[k]


async def run_me(params, texts, *, problem=TWO_PROBLEM, budget=None, **kw):
    eng = ScriptedEngine(replies(texts) if isinstance(texts, list) else texts)
    entry = load_strategies().get("mind_evolution")
    ctx = make_ctx(eng, MathAnswers(), problem=problem, budget=budget, **kw)
    out = await entry.target(ctx.problem, ctx, entry.make_params({**SHORT, **params}))
    return out, ctx, eng


def contents(eng):
    return [[m["content"] for m in c.messages] for c in eng.calls]


async def test_one_island_sequence_refines_then_recombines_and_stops_when_solved():
    texts = ["Ana: 9 Ben: 9", "move Ana later", "Ana: 10 Ben: 9", "Ana: 10 Ben: 11", "never used"]
    out, ctx, eng = await run_me(
        {"islands": 1, "population": 1, "generations": 3, "refine_turns": 1, "parents": 1},
        texts, system_prompt="SYS",
    )
    f0 = ("Ana is available only from 10:00 to 12:00, but Ana's meeting is at 9:00.\n"
          "Ana's meeting (at 9:00) must end before Ben's meeting (at 9:00) starts.")
    f2 = "Ana's meeting (at 10:00) must end before Ben's meeting (at 9:00) starts."
    assert contents(eng) == [
        ["SYS", f"INIT {TWO.describe()}"],
        [f"CRITIC Ana: 9 Ben: 9 // -2 // {f0}"],  # the critic gets no system prompt
        ["SYS", "AUTHOR Ana: 9 Ben: 9 // move Ana later"],
        ["SYS", f"RECOMBINE [1|-1|Ana: 10 Ben: 9|{f2}]"],  # generation 1: the best parent
    ]  # solved by the recombination: no critic turn, no third generation
    assert [c.n for c in eng.calls] == [1, 1, 1, 1]
    assert [c.max_tokens for c in eng.calls] == [512, 256, 512, 512]
    assert [c.temperature for c in eng.calls] == [0.8] * 4
    assert out.answer == "Ana: 10, Ben: 11" and out.chosen.id == 2 and out.chosen.score == 0.0
    assert [(c.id, c.parent, c.score, c.extra["op"], c.extra["generation"]) for c in out.candidates] == [
        (0, None, -2.0, "init", 0), (1, 0, -1.0, "refine", 0), (2, 1, 0.0, "recombine", 1),
    ]
    assert out.candidates[1].extra["critique"] == "move Ana later"
    assert out.candidates[2].extra["parents"] == [1] and out.candidates[2].extra["solved"] is True
    assert out.extra["solved"] is True and out.extra["generations"] == 2
    assert out.extra["best_fitness"] == [[-1.0], [0.0]] and out.extra["evaluator"] == "meeting"
    cost = ctx.meter.snapshot()
    assert cost.generations == 4 and cost.engine_calls == 4 and cost.verifier_calls == 0
    assert cost.generated_tokens == sum(len(t.split()) for t in texts[:4])
    assert not ctx.meter.stopped_by_budget


async def test_budget_stops_the_search_and_answers_from_what_exists():
    texts = ["Ana: 9 Ben: 9", "critique", "Ana: 10 Ben: 9", "x"]
    out, ctx, eng = await run_me({"islands": 1, "population": 1, "generations": 3}, texts,
                                 budget=Budget(max_generations=3))
    assert len(eng.calls) == 3 and ctx.meter.snapshot().generations == 3
    assert ctx.meter.stopped_by_budget and out.extra["stopped_by_budget"] is True
    assert out.answer == "Ana: 10, Ben: 9" and out.chosen.score == -1.0
    # generation 1 started and its first call found the budget spent
    assert out.extra["generations"] == 2 and out.extra["best_fitness"] == [[-1.0], [-1.0]]


async def test_token_budget_clips_each_request():
    texts = ["Ana: 9 Ben: 9 and some more words here"] * 10
    out, ctx, eng = await run_me({"islands": 1, "population": 2, "generations": 2, "refine_turns": 0},
                                 texts, budget=Budget(max_generated_tokens=20))
    assert ctx.meter.snapshot().generated_tokens <= 20
    assert [c.max_tokens for c in eng.calls] == [20, 11, 2]
    assert out.extra["stopped_by_budget"] is True and out.answer == "Ana: 9, Ben: 9"


async def test_islands_migrate_and_the_worst_island_is_reset():
    # gen 0: island 0 -> cand 0 (fitness -2), island 1 -> cand 1 (-1); gen 1: recombinations
    texts = ["Ana: 9 Ben: 9", "Ana: 10 Ben: 9", "Ana: 9 Ben: 12", "Ana: 12 Ben: 14", "z 42", "z"]
    out, _, eng = await run_me(
        {"islands": 2, "population": 1, "generations": 3, "refine_turns": 0, "parents": 2,
         "migrants": 1, "reset_interval": 2, "reset_islands": 1, "reset_top": 1},
        texts,
    )
    msgs = contents(eng)
    assert [m[0].split()[0] for m in msgs] == ["INIT", "INIT", "RECOMBINE", "RECOMBINE", "RECOMBINE", "RECOMBINE"]
    # after gen 0 each island's best went to the other: both pools are {0, 1}; best parent first
    assert msgs[2][0].startswith("RECOMBINE [1|-1|Ana: 10 Ben: 9|") and "[2|-2|Ana: 9 Ben: 9|" in msgs[2][0]
    assert msgs[3][0].startswith("RECOMBINE [1|-1|Ana: 10 Ben: 9|") and "[2|-2|" in msgs[3][0]
    assert out.extra["migrations"] == [
        {"generation": 0, "from": 0, "to": 1, "candidate": 0},
        {"generation": 0, "from": 1, "to": 0, "candidate": 1},
    ]  # after gen 1 each island's best (cand 1) is already in the other island: no duplicates
    # gen 1: island 0 made cand 2 (-1: Ana 9), island 1 made cand 3 (-1: Ana 12);
    # after migration both islands' best is -1: the later island (1) is reset to the overall best
    assert out.extra["resets"] == [{"generation": 1, "island": 1, "candidates": [1]}]
    assert msgs[5] == ["RECOMBINE [1|-1|Ana: 10 Ben: 9|Ana's meeting (at 10:00) must end before Ben's "
                       "meeting (at 9:00) starts.]"]
    assert out.extra["best_fitness"] == [[-2.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]]
    assert out.extra["generations"] == 3 and out.extra["solved"] is False
    assert out.answer == "Ana: 10, Ben: 9" and out.chosen.id == 1
    assert [c.extra["island"] for c in out.candidates] == [0, 1, 0, 1, 0, 1]
    # the meeting evaluator reads answers itself: no schedule = no answer (not the number 42)
    assert [c.answer for c in out.candidates][3:] == ["Ana: 12, Ben: 14", None, None]


async def test_math_evaluator_uses_verifier_score_charged_as_verifier_tokens():
    problem = Problem(id="q", prompt="What is 2+3?", answer="5")

    def script(req, k):
        c = req.messages[-1]["content"]
        if c.startswith("Here is a problem"):  # the llm_judge verifier
            return "Yes" if "\\boxed{5}" in c else "No"
        return ["x \\boxed{4}", "crit", "y \\boxed{5}", "never"][sum(
            1 for r in eng.calls if not r.messages[-1]["content"].startswith("Here is")) - 1]

    eng = ScriptedEngine(script)
    entry = load_strategies().get("mind_evolution")
    ctx = make_ctx(eng, MathAnswers(), problem=problem, verifiers={"llm_judge": LLMJudge()})
    params = {**SHORT, "islands": 1, "population": 1, "generations": 2, "solved_threshold": 0.9}
    out = await entry.target(problem, ctx, entry.make_params(params))
    policy = [c for c in contents(eng) if not c[-1].startswith("Here is")]
    assert policy == [["INIT What is 2+3?"], [f"CRITIC x \\boxed{{4}} // 0 // {NO_FEEDBACK}"],
                      ["AUTHOR x \\boxed{4} // crit"]]
    assert out.answer == "5" and out.chosen.score == 1.0 and out.extra["solved"] is True
    assert out.extra["evaluator"] == "math" and out.extra["best_fitness"] == [[1.0]]
    cost = ctx.meter.snapshot()
    assert cost.generations == 3 and cost.verifier_calls == 2 and cost.verifier_generated_tokens == 2
    assert cost.verifier_prompt_tokens > 0


def test_bad_parameters_are_config_errors_naming_them():
    entry = load_strategies().get("mind_evolution")
    for values, msg in [
        ({"islands": 0}, "islands must be >= 1, got 0"),
        ({"refine_turns": -1}, "refine_turns must be >= 0, got -1"),
        ({"selection_temperature": 0}, "selection_temperature must be > 0, got 0.0"),
        ({"evaluator": "nope"}, "evaluator='nope' is unknown; known: auto, math, meeting"),
        ({"critic_prompt": "{solutoin}"}, "critic_prompt may use only"),
        ({"islands": "two"}, "islands='two' is not a valid int"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            entry.make_params(values)


async def test_meeting_evaluator_on_a_plain_problem_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs a meeting puzzle"):
        await run_me({"evaluator": "meeting"}, ["4"], problem=Problem(id="p", prompt="2+2?"))


@pytest.mark.model
async def test_mind_evolution_end_to_end_on_embedded(embedded_small):
    ds = load_dataset("meeting", limit=1)
    entry = load_strategies().get("mind_evolution")
    ctx = make_ctx(embedded_small, MathAnswers(), problem=ds.problems[0], budget=Budget(max_generated_tokens=80))
    p = entry.make_params({"islands": 1, "population": 1, "generations": 2, "max_tokens": 24,
                           "critic_max_tokens": 8})
    out = await entry.target(ctx.problem, ctx, p)
    cost = ctx.meter.snapshot()
    assert out.candidates and 0 < cost.generated_tokens <= 80
    assert all(c.score is not None and c.score <= 0 for c in out.candidates)
    assert out.extra["best_fitness"] and out.chosen is not None
