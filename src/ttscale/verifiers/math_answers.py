"""Math final answers: extraction from solution text, cheap normalisation, and equivalence.

:class:`MathAnswers` is both the :class:`~ttscale.core.protocols.AnswerSpace` (``extract``,
``group``) and the :class:`~ttscale.core.protocols.Grader` (``grade``) for math datasets.

Extraction and normalisation are pure Python regex work (microseconds). Equivalence first compares
normalised strings; only when they differ does it ask Math-Verify (``math_verify.parse`` /
``verify``, sympy underneath) in a worker *process* with a hard timeout: sympy can hang on
adversarial input, and Math-Verify's own SIGALRM timeouts only work on a main thread, which an
asyncio program does not give it. A stuck worker is killed by ``pebble`` and the pair counts as
not equivalent (and is counted in :attr:`MathAnswers.stats`).

The worker pool is one per process, started on first use and stopped on every way out: at exit
(``atexit``), when a broken pool is replaced, by :func:`shutdown_pool`, and on SIGTERM: SIGTERM's
default action ends the process without running ``atexit``, which leaves the pool's semaphores to
multiprocessing's resource tracker (it warns of "leaked semaphore objects"), so when the pool is
started from the main thread and SIGTERM still has its default action, SIGTERM is made to raise
``SystemExit(143)`` instead (a handler the program set itself is left alone).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import math
import multiprocessing
import os
import re
import signal
import threading
from collections.abc import Sequence
from typing import Any

from ttscale.core.answer_text import last_boxed
from ttscale.core.types import Problem

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# extraction

_THINK_END = "</think>"
_GSM_RE = re.compile(r"^\s*#{4}\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_RE = re.compile(
    r"\banswer\s*(?:is|:|=)(?=\s*(?:\*\*\s*)?:?[ \t]*(?P<rest>[^\n]*))", re.IGNORECASE
)
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
_NUMBER_RE = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|\.\d+)(?![\w])"
)
_NUM_THEN_WORDS = re.compile(
    r"^(?P<num>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?)\s*(?:%|\\%)?\s+[A-Za-z]{2,}"
)
_INLINE_MATH = re.compile(r"\$\$?(.+?)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)


def _clean_phrase(rest: str) -> str | None:
    """Tidy the text after "The answer is": cut "I hope ...", unwrap $...$ and **bold**."""
    s = _HOPE_RE.sub("", rest.strip())
    boxed = last_boxed(s)
    if boxed is not None:
        return boxed
    m = _INLINE_MATH.search(s)
    if m and s.lstrip("*( ").startswith(("$", "\\(", "\\[")):
        s = next(g for g in m.groups() if g is not None)
    s = s.strip().lstrip("*$ ").rstrip("*$. ")
    if not s:
        return None
    nw = _NUM_THEN_WORDS.match(s)  # "18 dollars" -> "18"
    if nw:
        s = nw.group("num")
    return s or None


def extract_answer(text: str) -> str | None:
    """The final answer in a solution text (see :meth:`MathAnswers.extract`)."""
    if not text:
        return None
    # Reasoning models: prefer what follows the end of thinking when it holds an answer.
    cut = text.rfind(_THINK_END)
    if cut >= 0:
        after = text[cut + len(_THINK_END):]
        got = _extract(after, numbers=True) if after.strip() else None
        if got is not None:
            return got
    # the delimiters are markup, not part of an answer ("... the answer is 7</think>" -> "7")
    return _extract(text.replace(_THINK_END, "\n").replace("<think>", "\n"), numbers=True)


def _extract(text: str, *, numbers: bool) -> str | None:
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    gsm = _GSM_RE.findall(text)
    if gsm:
        ans = _clean_phrase(gsm[-1])
        if ans:
            return ans
    matches = list(_ANSWER_RE.finditer(text))
    for m in reversed(matches):
        rest = m.group("rest")
        if not rest.strip():  # "The answer is:\n\n$$42$$" -> the next non-empty line
            following = text[m.end("rest"):].lstrip("\n").split("\n", 1)[0]
            rest = following
        ans = _clean_phrase(rest)
        if ans:
            return ans
    if numbers:
        nums = _NUMBER_RE.findall(text)
        if nums:
            return re.sub(r"\s+", "", nums[-1])
    return None


# ----------------------------------------------------------------------------------------------------
# normalisation

_TEXT_WRAP = re.compile(r"^\\(?:text|textbf|mathrm|mbox|textrm|operatorname)\{(.*)\}$", re.DOTALL)
_UNIT_TAIL = re.compile(r"^(?P<v>.*?[\d}])\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .^0-9/]*\}(?:\^\{?\d\}?)?$")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_SPACES = re.compile(r"\\[!,;: ]|\\quad|\\qquad|~")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
_ASSIGN = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?=.)")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUM = re.compile(r"^([-+]?)(\d*)(?:\.(\d*))?$")
_INT = re.compile(r"^-?\d+$")


def _canon_number(s: str) -> str:
    m = _PLAIN_NUM.match(s)
    if not m or not (m.group(2) or m.group(3)):
        return s
    sign, whole, frac = m.group(1), m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
    out = f"{whole}.{frac}" if frac else whole
    if sign == "-" and out != "0":
        out = "-" + out
    return out


def normalize_answer(answer: str) -> str:
    """A cheap canonical string for an answer (see :meth:`MathAnswers.normalize`)."""
    s = answer.strip()
    for _ in range(3):  # wrappers can nest: $\boxed{\text{5}}$
        before = s
        s = s.replace("\\$", "").strip().rstrip(".").strip().strip("$").strip()
        if s.startswith(("\\boxed", "\\fbox")):
            inner = last_boxed(s)
            if inner is not None and s.rstrip().endswith("}"):
                s = inner
        m = _TEXT_WRAP.match(s)
        if m:
            s = m.group(1).strip()
        if s == before:
            break
    s = _LEFT_RIGHT.sub("", s)
    s = _SPACES.sub("", s)
    s = s.replace("\\displaystyle", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _DEGREE.sub("", s)
    s = s.replace("\\%", "%")
    m = _UNIT_TAIL.match(s.strip())
    if m:
        s = m.group("v")
    s = _ASSIGN.sub("", s.strip())
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return _canon_number(s)


# ----------------------------------------------------------------------------------------------------
# the Math-Verify worker pool (one per process)

_POOL: Any = None
_POOL_PID: int | None = None
_POOL_LOCK = threading.Lock()


class _CountTimeouts(logging.Handler):
    """In a worker: swallows Math-Verify's own log lines and counts its SIGALRM timeouts."""

    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "imeout" in record.getMessage():
            _CountTimeouts.count += 1


def _worker_init() -> None:
    import math_verify  # noqa: F401  (import once, before any task's timer starts)

    for name in ("math_verify", "latex2sympy2_extended"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [_CountTimeouts()]
        lg.propagate = False
        lg.setLevel(logging.WARNING)


def _wrap(answer: str) -> str:
    s = answer.strip()
    if s.startswith("$") or "\\boxed" in s:
        return s
    return "\\boxed{" + s + "}"


def _mv_verify(pred: str, gold: str, inner_timeout: int) -> tuple[bool, int]:
    """Run in a worker: does ``pred`` match ``gold`` per Math-Verify? Also returns how many of
    Math-Verify's own timeouts fired (they make it answer False)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    before = _CountTimeouts.count
    # Both strings are bare answers, so wrap them in \boxed{} and let the boxed match win
    # (boxed_match_priority=0); ExprExtractionConfig catches plain forms like "1/2" or "10%".
    config = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    g = parse(_wrap(gold), config, parsing_timeout=inner_timeout)
    p = parse(_wrap(pred), config, parsing_timeout=inner_timeout)
    ok = bool(g) and bool(p) and verify(g, p, timeout_seconds=inner_timeout)
    return ok, _CountTimeouts.count - before


def _get_pool() -> Any:
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid() or not _POOL.active:
            import pebble

            if _POOL is not None and _POOL_PID == os.getpid():  # ours but broken: release it
                _stop(_POOL)

            ctx: Any = multiprocessing
            if "forkserver" in multiprocessing.get_all_start_methods():
                # Workers fork from a clean server process, not from this (threaded) one.
                ctx = multiprocessing.get_context("forkserver")
            _POOL = pebble.ProcessPool(
                max_workers=min(2, os.cpu_count() or 1), initializer=_worker_init, context=ctx
            )
            _POOL_PID = os.getpid()
        return _POOL


def _stop(pool: Any) -> None:
    pool.stop()
    pool.join(timeout=5)


def shutdown_pool() -> None:
    """Stop the shared Math-Verify worker pool (also done at exit); the next use starts a new one."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None and _POOL_PID == os.getpid():
        _stop(pool)


atexit.register(shutdown_pool)


def _sigterm_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit (so ``atexit`` stops the pool) where it would kill the process
    outright: only from the main thread and only while SIGTERM has its default action."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _sigterm_exit)
    except (ValueError, OSError):  # no signals here (embedded interpreters)
        pass


# ----------------------------------------------------------------------------------------------------
# the answer space / grader


class MathAnswers:
    """Math answer space and grader: ``extract`` / ``normalize`` / ``equivalent`` / ``group`` /
    ``grade``.

    ``timeout`` is the hard limit (seconds) on one symbolic comparison; ``symbolic=False`` compares
    normalised strings only (no Math-Verify, no worker processes).
    """

    def __init__(self, timeout: float = 5.0, symbolic: bool = True) -> None:
        self.timeout = float(timeout)
        self.symbolic = symbolic
        self._cache: dict[tuple[str, str], bool] = {}
        self._norm: dict[str, str] = {}
        self.stats: dict[str, int] = {
            "string_equal": 0, "integer_fast": 0, "cache_hits": 0, "symbolic": 0,
            "timeouts": 0, "inner_timeouts": 0, "errors": 0,
        }

    # --- AnswerSpace --------------------------------------------------------------------------
    def extract(self, text: str) -> str | None:
        """The final answer of a solution: the last ``\\boxed{...}`` / ``\\fbox{...}``; else a
        GSM8K ``#### X`` line; else "The (final) answer is X" / "Final Answer: X" / "answer: X";
        else the last number (``1,234``, ``-3.5``, ``3/4``). Text after ``</think>`` is preferred
        when it holds an answer. None when nothing is found."""
        return extract_answer(text)

    def normalize(self, answer: str) -> str:
        """Cheap canonical string: no spaces, ``$``, ``\\left``/``\\right``, thin spaces, trailing
        ``.``, ``\\text{}`` wrappers and units, degrees; ``dfrac`` -> ``frac``; ``1,000`` -> ``1000``;
        leading ``x=`` dropped; ``5.0`` -> ``5``."""
        got = self._norm.get(answer)
        if got is None:
            got = normalize_answer(answer)
            if len(self._norm) < 200_000:
                self._norm[answer] = got
        return got

    async def equivalent(self, a: str, b: str) -> bool:
        """Whether answer ``a`` matches ``b`` (``b`` plays Math-Verify's gold). Equal normalised
        strings are equivalent at once; two different integers are not; anything else goes to
        Math-Verify in a worker process (timeout or error -> False, counted in ``stats``)."""
        na, nb = self.normalize(a), self.normalize(b)
        if na == nb:
            self.stats["string_equal"] += 1
            return True
        if _INT.match(na) and _INT.match(nb):
            self.stats["integer_fast"] += 1
            return False
        if not self.symbolic or not na or not nb:
            return False
        key = (a, b)
        hit = self._cache.get(key)
        if hit is not None:
            self.stats["cache_hits"] += 1
            return hit
        result = await self._symbolic(a, b)
        if result is None:  # an error: False now, but try again next time
            return False
        if len(self._cache) > 500_000:
            self._cache.clear()
        self._cache[key] = result
        return result

    async def _symbolic(self, a: str, b: str) -> bool | None:
        """Math-Verify's verdict (False on a timeout); None on an error (not cached)."""
        self.stats["symbolic"] += 1
        pool = _POOL
        if pool is None or _POOL_PID != os.getpid() or not pool.active:
            _exit_cleanly_on_sigterm()
            pool = await asyncio.to_thread(_get_pool)
        inner = max(1, math.ceil(self.timeout))
        try:
            fut = pool.schedule(_mv_verify, args=(a, b, inner), timeout=self.timeout)
            ok, inner_timeouts = await asyncio.wrap_future(fut)
        except (TimeoutError, concurrent.futures.TimeoutError):
            self.stats["timeouts"] += 1
            log.debug("math-verify timed out after %.1fs comparing %r with %r", self.timeout, a, b)
            return False
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a crashed worker, an unpicklable result, a broken pool
            self.stats["errors"] += 1
            log.debug("math-verify failed comparing %r with %r: %r", a, b, e)
            return None
        if inner_timeouts:
            self.stats["inner_timeouts"] += inner_timeouts
            log.debug("math-verify hit %d internal timeout(s) comparing %r with %r", inner_timeouts, a, b)
        return bool(ok)

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """A label per answer (None for None); equal labels = equivalent answers. Answers are
        grouped by normalised string, then a new group merges into the first earlier group whose
        representative is equivalent. Labels are 0, 1, ... in order of first appearance."""
        by_norm: dict[str, int] = {}
        reps: list[str] = []  # representative (first raw answer) of each label
        labels: list[int | None] = []
        for ans in answers:
            if ans is None:
                labels.append(None)
                continue
            norm = self.normalize(ans)
            label = by_norm.get(norm)
            if label is None:
                if reps:
                    same = await asyncio.gather(*(self.equivalent(ans, r) for r in reps))
                    label = next((i for i, s in enumerate(same) if s), None)
                if label is None:
                    label = len(reps)
                    reps.append(ans)
                by_norm[norm] = label
            labels.append(label)
        return labels

    # --- Grader -------------------------------------------------------------------------------
    async def grade(self, problem: Problem, answer: str | None) -> bool | None:
        """None when the problem has no reference; False for a missing answer; else equivalence
        with the reference."""
        if problem.answer is None:
            return None
        if answer is None:
            return False
        return await self.equivalent(answer, problem.answer)
