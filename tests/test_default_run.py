"""What a bare `ttscale run` does: the default configuration, its problems, and the gain it prints."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from ttscale.lab import run_command as rc
from ttscale.lab.report import gain_over_one_sample


def test_default_strategy_fills_in_only_what_the_user_left_out() -> None:
    said: list[str] = []
    s, p, v, vp = rc.default_strategy("embedded", None, {"n": 4}, [], {}, say=said.append)
    assert (s, p, v, vp) == ("weighted_best_of_n", {"n": 4, "max_tokens": 384, "logprobs": 5, "verifier": "confidence"},
                             ["confidence"], {"window": 32, "top_k": 5})
    assert said and "weighted_best_of_n (the default) n=4" in said[0]
    # a named strategy, or another engine, is left alone
    assert rc.default_strategy("embedded", "beam_search", {}, [], {}, say=said.append) == ("beam_search", {}, [], {})
    assert rc.default_strategy("openai", None, {"n": 2}, [], {}, say=said.append) == (
        "self_consistency", {"n": 2}, [], {})
    # the user's verifier wins; its params are not mixed with the default verifier's
    assert rc.default_strategy("embedded", None, {}, ["llm_judge"], {"x": 1}, say=said.append)[2:] == (
        ["llm_judge"], {"x": 1})


def test_bare_run_uses_the_medium_problems_and_limit_the_first_n() -> None:
    out = Console(file=io.StringIO())
    bare = rc.run_dataset("default", question_field=None, answer_field=None, split=None, limit=None, seed=0,
                          no_grade=False, out=out)
    assert [p.id for p in bare.problems] == list(rc.DEFAULT_PROBLEMS)
    first = rc.run_dataset("default", question_field=None, answer_field=None, split=None, limit=3, seed=0,
                           no_grade=False, out=out)
    assert [p.id for p in first.problems] == ["gsm_symbolic-00", "gsm_symbolic-01", "gsm_symbolic-02"]


def test_gain_over_one_sample_is_paired_per_problem(tmp_path: Path) -> None:
    strategy = "best_of_n"

    def rec(pid: str, correct: bool, cands: list[bool]) -> str:
        return json.dumps({"problem_id": pid, "strategy": strategy, "correct": correct, "cost": {},
                           "candidates": [{"correct": c} for c in cands]}) + "\n"

    f = tmp_path / "r.jsonl"
    f.write_text(rec("a", True, [True, False, False, False]) + rec("b", True, [True, True, False, False])
                 + rec("c", False, [False, False]) + rec("d", True, [True, None]))  # d: ungraded candidate
    g = gain_over_one_sample(f)
    assert g is not None and g["problems"] == 3
    assert g["accuracy"] == 2 / 3 and abs(g["sample_accuracy"] - (0.25 + 0.5 + 0) / 3) < 1e-12
    assert abs(g["gain"] - (0.75 + 0.5 + 0) / 3) < 1e-12
    assert g["gain_low"] <= g["gain"] <= g["gain_high"] and g["gain_low"] >= 0.0 and g["gain_high"] <= 0.75
    f.write_text(rec("a", True, []))
    assert gain_over_one_sample(f) is None
    strategy = "beam_search"  # final beams are not independent samples: no "single sample" figure
    f.write_text(rec("a", True, [True, False]))
    assert gain_over_one_sample(f) is None
