import asyncio
import time

import pytest

from ttscale.core.types import Problem
from ttscale.verifiers.math_answers import MathAnswers, last_boxed


@pytest.fixture
def ma():
    return MathAnswers()


@pytest.mark.parametrize("text, expected", [
    # boxed (the last one wins; nested braces; \fbox; inside $...$)
    ("so \\boxed{\\frac{1}{\\sqrt{2}}} done", "\\frac{1}{\\sqrt{2}}"),
    ("first \\boxed{1}, then \\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("$\\boxed{-3}$.", "-3"),
    ("\\fbox{9}", "9"),
    ("\\boxed {x^{2}+1}", "x^{2}+1"),
    ("The answer is \\boxed{7}. Also 99.", "7"),
    # answer phrases
    ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    ("**Final Answer:** 42", "42"),
    ("The final answer is **12**.", "12"),
    ("The answer is 18 dollars.", "18"),
    ("The answer is:\n\n$$42$$", "42"),
    ("The answer is \\(\\dfrac{1}{2}\\)", "\\dfrac{1}{2}"),
    ("answer: x = 3", "x = 3"),
    # GSM8K
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("blah\n#### 1,234", "1,234"),
    # last number
    ("we get 3/4 then -3.5 and finally 1,234 of them", "1,234"),
    ("halve it: -3.5", "-3.5"),
    ("the ratio is 3/4", "3/4"),
    # reasoning models: after </think> is preferred, else the thinking itself
    ("<think>maybe 5 or \\boxed{6}</think>\nThe answer is 7.", "7"),
    ("<think>Let me try 4 then \\boxed{8}</think>", "8"),
    ("<think>hmm, 4 apples", "4"),
    ("<think>so the answer is 7</think>", "7"),  # no delimiter inside the answer
    # none
    ("no numbers here", None),
    ("", None),
])
def test_extract(ma, text, expected):
    assert ma.extract(text) == expected


def test_last_boxed_unclosed_and_escaped_braces():
    assert last_boxed("\\boxed{5") is None
    assert last_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert last_boxed("no box") is None


@pytest.mark.parametrize("raw, norm", [
    ("$5.0$", "5"), (" 1,000 ", "1000"), ("12,345.50", "12345.5"), ("0.50", "0.5"), ("-0", "0"),
    ("+3", "3"), (".5", "0.5"), ("007", "7"),
    ("\\left( 1, 2 \\right)", "(1,2)"), ("x = 3", "3"), ("k=\\frac{1}{2}", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}"), ("\\tfrac12", "\\frac12"),
    ("90^\\circ", "90"), ("90^{\\circ}", "90"), ("5\\text{ cm}", "5"), ("\\text{Monday}", "Monday"),
    ("\\boxed{7}.", "7"), ("\\$5", "5"), ("3\\!\\,000", "3000"), ("10\\%", "10%"),
])
def test_normalize(ma, raw, norm):
    assert ma.normalize(raw) == norm


@pytest.mark.parametrize("a, b, expected", [
    ("5", "5.0", True),                         # equal after normalisation, no worker needed
    ("1/2", "\\frac{1}{2}", True),
    ("0.5", "\\frac{1}{2}", True),
    ("0.5", "1/2", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
    ("5", "\\frac{10}{2}", True),
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("\\dfrac{3}{4}", "0.75", True),
    # Math-Verify accepts a percentage both as its fraction and as the bare number
    ("10\\%", "0.1", True),
    ("10\\%", "10", True),
    # Math-Verify rounds floats to 6 places: 0.333333 ~ 1/3, 0.333 is not
    ("0.333333", "\\frac{1}{3}", True),
    ("0.333", "\\frac{1}{3}", False),
    ("\\pi", "3.14", False),
    ("3", "4", False),                          # two integers: decided without a worker
    ("3.5", "4", False),
])
async def test_equivalent(ma, a, b, expected):
    assert await ma.equivalent(a, b) is expected


async def test_equivalent_fast_paths_and_cache(ma):
    assert await ma.equivalent("1,000", "1000")
    assert not await ma.equivalent("12", "13")
    assert ma.stats["string_equal"] == 1 and ma.stats["integer_fast"] == 1 and ma.stats["symbolic"] == 0
    assert await ma.equivalent("1/2", "0.5")
    assert await ma.equivalent("1/2", "0.5")
    assert ma.stats["symbolic"] == 1 and ma.stats["cache_hits"] == 1


async def test_symbolic_off_compares_strings_only():
    m = MathAnswers(symbolic=False)
    assert await m.equivalent("5.0", "5")
    assert not await m.equivalent("1/2", "0.5")
    assert m.stats["symbolic"] == 0


async def test_group_labels_in_first_appearance_order(ma):
    answers = ["7", None, "5", "\\frac{10}{2}", "7.0", "1/2", "x=5", "0.5", None, "3"]
    assert await ma.group(answers) == [0, None, 1, 1, 0, 2, 1, 2, None, 3]
    assert await ma.group([]) == []
    assert await ma.group([None, None]) == [None, None]


async def test_group_64_answers_is_quick(ma):
    pool = ["5", "\\frac{10}{2}", "5.0", "7", "\\frac{1}{2}", "0.5", "3/4", "0.75", "\\sqrt{2}", "12", None]
    answers = [pool[(i * 7) % len(pool)] for i in range(64)]
    await ma.group(answers[:4])  # warm the worker pool
    t0 = time.perf_counter()
    labels = await ma.group(answers)
    assert time.perf_counter() - t0 < 10.0
    by = {a: lab for a, lab in zip(answers, labels, strict=True)}
    assert by["5"] == by["\\frac{10}{2}"] == by["5.0"] and by["\\frac{1}{2}"] == by["0.5"]
    assert by["3/4"] == by["0.75"] and len({by["5"], by["7"], by["0.5"], by["3/4"], by["12"]}) == 5
    assert by[None] is None


async def test_timeout_is_false_and_counted(caplog):
    m = MathAnswers(timeout=0.3)
    caplog.set_level("DEBUG", logger="ttscale.verifiers.math_answers")
    t0 = time.perf_counter()
    # expanding two huge powers takes sympy far longer than 0.3 s: the worker is killed
    assert await m.equivalent("(x+1)^{3000}", "(x+2)^{3000}") is False
    assert time.perf_counter() - t0 < 30
    assert m.stats["timeouts"] == 1
    assert "timed out" in caplog.text
    assert await m.equivalent("(x+1)^{3000}", "(x+2)^{3000}") is False  # cached, not re-run
    assert m.stats["timeouts"] == 1 and m.stats["cache_hits"] == 1
    # the pool recovers: a fresh worker answers the next question
    assert await m.equivalent("1/3", "\\frac{2}{6}") is True


async def test_concurrent_equivalence_calls(ma):
    pairs = [(f"{i}/2", f"{i / 2}") for i in range(1, 9)]
    got = await asyncio.gather(*(ma.equivalent(a, b) for a, b in pairs))
    assert all(got)


async def test_grade(ma):
    p = Problem(id="p", prompt="q", answer="\\frac{1}{2}")
    assert await ma.grade(p, "0.5") is True
    assert await ma.grade(p, "2") is False
    assert await ma.grade(p, None) is False
    assert await ma.grade(Problem(id="p", prompt="q"), "5") is None


async def test_worker_error_is_false_counted_and_not_cached(monkeypatch, caplog):
    import ttscale.verifiers.math_answers as mod

    class BrokenPool:
        active = True

        def schedule(self, *args, **kwargs):
            raise RuntimeError("pool is broken")

    monkeypatch.setattr(mod, "_POOL", BrokenPool())
    monkeypatch.setattr(mod, "_POOL_PID", mod.os.getpid())
    caplog.set_level("DEBUG", logger="ttscale.verifiers.math_answers")
    m = MathAnswers()
    assert await m.equivalent("1/2", "0.5") is False
    assert m.stats["errors"] == 1 and "pool is broken" in caplog.text
    assert await m.equivalent("1/2", "0.5") is False
    assert m.stats["errors"] == 2 and m.stats["cache_hits"] == 0


POOL_USER = """
import asyncio, os, signal, sys
from ttscale.verifiers.answer_check import AnswerCheck  # noqa: F401  (the oracle shares the pool)
from ttscale.verifiers.math_answers import MathAnswers

async def main():
    m = MathAnswers()
    assert await m.equivalent("1/2", "0.5") and m.stats["symbolic"] == 1
    print("compared", flush=True)
    if sys.argv[1] == "raise":
        raise RuntimeError("ends with an error")
    if sys.argv[1] == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.mark.parametrize(("how", "rc"), [("return", 0), ("raise", 1), ("sigterm", 143)])
def test_math_verify_pool_is_closed_on_every_exit(tmp_path, how, rc):
    """A process that used the Math-Verify worker pool leaves no semaphores behind for
    multiprocessing's resource tracker to warn about, whether it returns, fails or is sent SIGTERM."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import ttscale

    script = tmp_path / "use_pool.py"
    script.write_text(POOL_USER)
    src = str(Path(ttscale.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=180, env=env)
    assert "compared" in r.stdout, r.stderr
    assert r.returncode == rc, r.stderr
    assert "leaked semaphore" not in r.stderr and "resource_tracker" not in r.stderr, r.stderr
