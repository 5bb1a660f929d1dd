"""The one-import Python API (ttscale.solve / ttscale.run) on the scripted engine."""

import json

import pytest

import ttscale
from ttscale.core.errors import ConfigError
from ttscale.engines.scripted import ScriptedEngine


def _votes(req, k):
    # samples 0, 1 and 3 say 5; sample 2 says 6: majority 5, single-sample accuracy 3/4
    return "2 + 3 = \\boxed{6}" if k == 2 else "2 + 3 = \\boxed{5}"


def test_solve_returns_the_cli_result_type_graded_against_the_reference():
    eng = ScriptedEngine(_votes)
    r = ttscale.solve("What is 2+3?", reference="5", engine=eng, strategy="self_consistency", n=4)
    assert isinstance(r, ttscale.Result)
    assert r.answer == "5" and r.correct is True
    assert [c.answer for c in r.candidates] == ["5", "5", "6", "5"]
    assert r.extra["votes"] == {"5": 3.0, "6": 1.0}
    assert r.cost.generations == 4 and r.cost.generated_tokens > 0
    assert r.params["n"] == 4 and r.strategy == "self_consistency"


def test_solve_without_reference_is_ungraded_and_respects_an_int_budget():
    eng = ScriptedEngine(_votes)
    r = ttscale.solve("What is 2+3?", engine=eng, n=8, budget=2)
    assert r.correct is None and r.cost.generations == 2
    assert r.budget["max_generations"] == 2


def test_bad_parameters_fail_before_any_engine_is_built():
    with pytest.raises(ConfigError, match="bogus"):
        ttscale.solve("x", engine="no-such-engine", bogus=3)


def test_run_writes_the_same_results_file_as_the_cli_and_resumes(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "question": "What is 2+3?", "answer": "5"}) + "\n"
                            for i in range(3)))
    out = tmp_path / "r.jsonl"
    s = ttscale.run(str(data), engine=ScriptedEngine(_votes), n=4, out=out, progress=False)
    assert isinstance(s, ttscale.RunSummary)
    assert (s.total, s.done_now, s.accuracy) == (3, 3, 1.0)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["problem_id"] for r in sorted(rows, key=lambda r: r["problem_id"])] == ["0", "1", "2"]
    again = ttscale.run(str(data), engine=ScriptedEngine(_votes), n=4, out=out, progress=False)
    assert (again.done_before, again.done_now) == (3, 0)
