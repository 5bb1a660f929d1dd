import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.types import GenerationRequest, Problem
from ttscale.engines.replay import ReplayEngine, read_recorded
from ttscale.engines.scripted import ScriptedEngine
from ttscale.lab.runner import Runner, read_results
from ttscale.verifiers.math_answers import MathAnswers

from helpers import write_recorded

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "recorded"


def expected_majority(path: Path, n: int, seed: int) -> float:
    """Independent majority@n over the replay draw order documented in engines/replay.py."""
    correct = 0
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        pid = str(row["problem_num"])
        idx = list(range(len(row["all_answers"])))
        random.Random(f"replay:{seed}:{pid}").shuffle(idx)
        drawn = [row["all_answers"][i][0] for i in idx[:n]]
        counts = Counter(drawn)
        best = max(counts.values())
        winner = next(a for a in drawn if counts[a] == best)  # ties: first seen
        correct += winner == row["gold_answer"]
    return correct / len(rows)


async def test_replay_draws_without_replacement_and_charges_tokens(tmp_path):
    f = write_recorded(tmp_path / "rec.jsonl", n_problems=1, n_samples=10)
    eng = ReplayEngine.from_file(f)
    req = GenerationRequest(raw_prompt="x", problem_id="0", run_seed=3, n=4)
    a = await eng.generate(req)
    b = await eng.generate(req.with_(n=6))
    samples = read_recorded(f)["0"]
    got = [(c.answer_hint, c.completion_tokens) for c in a + b]
    assert sorted(got) == sorted((s.answer, s.tokens) for s in samples)
    with pytest.raises(EngineError, match=r"has 10 recorded samples; 10 drawn already, 1 more asked"):
        await eng.generate(req.with_(n=1))
    # same seed, fresh engine -> same order; other seed -> another order
    again = await ReplayEngine.from_file(f).generate(req.with_(n=10))
    other = await ReplayEngine.from_file(f).generate(req.with_(n=10, run_seed=4))
    assert [c.completion_tokens for c in again] == [c.completion_tokens for c in a + b]
    assert [c.completion_tokens for c in other] != [c.completion_tokens for c in again]


def test_replay_rejects_unknown_format(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"foo": 1}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1 has neither all_answers"):
        read_recorded(f)


def cli(*args, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "ttscale.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, **kw)


@pytest.mark.parametrize("n", [1, 16])
def test_cli_replay_self_consistency_equals_majority(tmp_path, n):
    rec = write_recorded(tmp_path / "rec.jsonl", n_problems=6, n_samples=40)
    out = tmp_path / "r.jsonl"
    r = cli("run", "--engine", "replay", "--model", str(rec), "--dataset", str(rec), "--strategy",
            "self_consistency", "--param", f"n={n}", "--seed", "5", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    rep = cli("report", str(out), "--json")
    rows = json.loads(rep.stdout)
    assert len(rows) == 1 and rows[0]["problems"] == 6
    assert rows[0]["accuracy"] == pytest.approx(expected_majority(rec, n, 5))
    assert rows[0]["mean_generations"] == n
    recorded = read_recorded(rec)
    results, _ = read_results(out)
    for res in results:  # cost = sum of the recorded token counts of the drawn samples
        assert res["cost"]["generated_tokens"] == sum(c["completion_tokens"] for c in res["candidates"])
        assert {c["answer"] for c in res["candidates"]} <= {s.answer for s in recorded[res["problem_id"]]}


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/reference/recorded (not in a user's clone)")
def test_cli_replay_on_real_recorded_file(tmp_path):
    rec = SHARED / "analysis_aime2024_Qwen3-4B.jsonl"
    out = tmp_path / "r.jsonl"
    r = cli("run", "--engine", "replay", "--model", str(rec), "--strategy", "self_consistency",
            "--param", "n=16", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = json.loads(cli("report", str(out), "--json").stdout)
    assert rows[0]["accuracy"] == pytest.approx(expected_majority(rec, 16, 0))


async def test_runner_resumes_without_recomputing(tmp_path):
    problems = [Problem(id=f"q{i}", prompt=f"q{i}", answer="5") for i in range(6)]
    script = {f"q{i}": ["x \\boxed{5}", "y \\boxed{4}", "z \\boxed{5}"] for i in range(6)}
    out = tmp_path / "r.jsonl"
    eng = ScriptedEngine(script)
    def mk(e):
        return Runner(engine=e, strategy="self_consistency", params={"n": 3}, answers=MathAnswers(),
                      grader=MathAnswers(), progress=False)

    s1 = await mk(eng).run(problems[:4], out)
    assert s1.done_now == 4 and s1.accuracy == 1.0
    first = out.read_bytes()
    with out.open("ab") as f:
        f.write(b'{"problem_id": "q4", "torn')  # a crash mid-write
    eng2 = ScriptedEngine(script)
    s2 = await mk(eng2).run(problems, out)
    assert s2.done_before == 4 and s2.done_now == 2
    assert sorted(c.problem_id for c in eng2.calls) == ["q4", "q5"]
    assert out.read_bytes().startswith(first)
    records, _ = read_results(out)
    assert sorted(r["problem_id"] for r in records) == [f"q{i}" for i in range(6)]
    assert all(r["correct"] for r in records)
    assert all(r["cost"]["generations"] == 3 for r in records)


async def test_runner_refuses_other_configuration(tmp_path):
    problems = [Problem(id="q0", prompt="q", answer="5")]
    out = tmp_path / "r.jsonl"
    eng = ScriptedEngine({"q0": ["\\boxed{5}"]})
    await Runner(engine=eng, strategy="self_consistency", params={"n": 2}, answers=MathAnswers(),
                 progress=False).run(problems, out)
    with pytest.raises(ConfigError, match="already holds results of another configuration"):
        await Runner(engine=eng, strategy="self_consistency", params={"n": 3}, answers=MathAnswers(),
                     progress=False).run(problems, out)


async def test_runner_shares_engine_across_problems_concurrently(tmp_path):
    problems = [Problem(id=f"q{i}", prompt="q") for i in range(20)]
    eng = ScriptedEngine({f"q{i}": ["\\boxed{1}"] for i in range(20)}, delay_s=0.2)
    t0 = time.perf_counter()
    s = await Runner(engine=eng, strategy="self_consistency", params={"n": 2}, answers=MathAnswers(),
                     concurrency=20, progress=False).run(problems, tmp_path / "r.jsonl")
    assert s.done_now == 20 and time.perf_counter() - t0 < 2.0  # 20 x 0.2 s would be 4 s serially


def test_killed_run_resumes(tmp_path):
    n = 12
    script = {str(i): ["\\boxed{1}"] for i in range(n)}
    (tmp_path / "script.json").write_text(json.dumps(script))
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "question": "q", "answer": "1"}) + "\n" for i in range(n)))
    out = tmp_path / "r.jsonl"
    args = ["run", "--engine", "scripted", "--model", str(tmp_path / "script.json"), "--engine-param",
            "delay_s=0.5", "--dataset", str(data), "--concurrency", "1", "--param", "n=1", "--out", str(out),
            "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "ttscale.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_results(out)[0]
    assert 3 <= len(before) < n
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"({n - len(before)} now, {len(before)} resumed)" in r.stdout.replace("\n", " ")
    after = read_results(out)[0]
    assert after[: len(before)] == before and len(after) == n
    assert sorted(int(x["problem_id"]) for x in after) == list(range(n))


def test_ctrl_c_saves_finished_and_exits_130(tmp_path):
    n = 30
    (tmp_path / "script.json").write_text(json.dumps({str(i): ["\\boxed{1}"] for i in range(n)}))
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "question": "q", "answer": "1"}) + "\n" for i in range(n)))
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "ttscale.cli", "run", "--engine", "scripted", "--model",
                             str(tmp_path / "script.json"), "--engine-param", "delay_s=0.3", "--dataset",
                             str(data), "--concurrency", "2", "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a suite started in the background (`cmd &`) inherits SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err
    done = read_results(out)[0]
    assert 2 <= len(done) < n and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "nope"], "unknown strategy 'nope'; available:"),
        (["--param", "bogus=1"], "has no parameter bogus"),
        (["--param", "n=x"], "n='x' is not a valid int"),
        (["--dataset", "/nonexistent/data.jsonl"], "/nonexistent/data.jsonl"),
        (["--engine", "embedded", "--model", "/nonexistent/model.gguf"], "/nonexistent/model.gguf"),
        (["--engine", "warp"], "unknown engine 'warp'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    rec = write_recorded(tmp_path / "rec.jsonl", n_problems=2)
    base = ["run", "--engine", "replay", "--model", str(rec), "--dataset", str(rec), "--out", str(tmp_path / "o.jsonl"),
            "--no-progress"]
    r = cli(*base, *args)
    assert r.returncode != 0
    assert message in r.stderr and "Traceback" not in r.stderr


def test_answer_field_missing_is_clear(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "1", "question": "q", "answer": "1"}) + "\n")
    r = cli("run", "--engine", "replay", "--model", str(data), "--dataset", str(data), "--answer-field", "gold",
            "--no-progress")
    assert r.returncode != 0 and "gold" in r.stderr and "Traceback" not in r.stderr


def test_strategies_lists_parameters():
    r = cli("strategies")
    assert r.returncode == 0
    for s in ("self_consistency", "best_of_n", "weighted_best_of_n", "n: int = 8"):
        assert s in r.stdout


async def test_ensemble_engine_from_cli_spec(tmp_path):
    from ttscale.engines import make_engine

    a = write_recorded(tmp_path / "a.jsonl", n_problems=1, n_samples=20, seed=1)
    b = write_recorded(tmp_path / "b.jsonl", n_problems=1, n_samples=20, seed=2)
    eng = make_engine("ensemble", f"replay:{a},replay:{b}", {"weights": "3,1"})
    assert eng.weights == [0.75, 0.25]
    out = await eng.generate(GenerationRequest(raw_prompt="x", problem_id="0", run_seed=0, n=12))
    assert len(out) == 12 and sorted(set(eng.drawn)) == [0, 1]
    with pytest.raises(ConfigError, match="must look like ENGINE:MODEL"):
        make_engine("ensemble", str(a))
