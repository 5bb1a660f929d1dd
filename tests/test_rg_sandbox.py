"""reasoning-gym scorers that ``eval()`` answers run in the sandbox: a hostile answer is graded wrong
and changes nothing outside it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from ttscale.datasets import ReasoningGymGrader, load_dataset
from ttscale.lab.runner import read_results
from ttscale.sandbox import detect


@pytest.mark.skipif(detect().kind != "bwrap", reason="a read-only file system needs bubblewrap")
def test_cli_rg_string_insertion_answer_that_writes_a_file(tmp_path):
    target = tmp_path / "pwned"
    answer = f"__import__('pathlib').Path('{target}').write_text('y')"
    script = tmp_path / "script.json"
    script.write_text(json.dumps({f"string_insertion-{i}": [f"So the answer is \\boxed{{{answer}}}"]
                                  for i in range(2)}))
    out = tmp_path / "r.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "ttscale.cli", "run", "--engine", "scripted", "--model", str(script),
         "--dataset", "rg:string_insertion", "--limit", "2", "-p", "n=1", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    records, _ = read_results(out)
    assert [rec["answer"] for rec in records] == [answer, answer]
    assert [rec["correct"] for rec in records] == [False, False]
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "script.json"]


def test_rg_eval_scorers_grade_right_and_hostile_answers():
    grader = ReasoningGymGrader(timeout=5.0)
    try:
        for task in ("string_insertion", "spiral_matrix"):
            p = load_dataset(f"rg:{task}", size=1).problems[0]
            assert asyncio.run(grader.grade(p, p.answer)) is True
            t0 = time.monotonic()
            assert asyncio.run(grader.grade(p, "__import__('time').sleep(60)")) is False
            assert asyncio.run(grader.grade(p, "__import__('os').kill(__import__('os').getppid(), 9)")) is False
            assert time.monotonic() - t0 < 60
            assert asyncio.run(grader.grade(p, p.answer)) is True  # the scorer came back
    finally:
        grader.close()
