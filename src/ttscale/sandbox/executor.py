"""The sandbox as a :class:`ttscale.core.execution.CodeExecutor`: each program in its own sandboxed
process, a bounded number at once so that candidates do not starve the engine."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ttscale.core.execution import TestResult
from ttscale.sandbox.process import Limits, ProcessOutput, harness_source, job_bytes, run_sandboxed

STARTUP_S = 5.0
"""Wall-clock allowance for starting the sandbox and Python, on top of the tests' own time."""


def default_concurrency() -> int:
    """Sandboxed processes at once: half the CPUs (at least 1), leaving the rest to the engine."""
    return max(1, (os.cpu_count() or 2) // 2)


class SandboxExecutor:
    """Runs programs against tests in the sandbox (see :mod:`ttscale.sandbox`).

    ``concurrency`` bounds the processes running at once across every caller of this executor.
    """

    def __init__(self, *, limits: Limits | None = None, concurrency: int | None = None,
                 max_wall_s: float = 120.0) -> None:
        self.limits = limits or Limits()
        self.concurrency = max(1, concurrency or default_concurrency())
        self.max_wall_s = max_wall_s
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.processes = 0
        """Sandboxed processes started so far (for tests and reports)."""

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    async def run_tests(self, program: str, tests: Sequence[str], time_limit: float = 3.0) -> list[TestResult]:
        tests = list(tests)
        if not tests:
            return []
        wall = min(self.max_wall_s, STARTUP_S + time_limit * (len(tests) + 1))
        limits = self.limits
        cpu = int(time_limit * (len(tests) + 1)) + 2
        if cpu < limits.cpu_seconds:
            limits = replace(limits, cpu_seconds=cpu)
        job = job_bytes(limits=limits.for_harness(), program=program, tests=tests, timeout=time_limit)
        async with self._semaphore():
            self.processes += 1
            out = await run_sandboxed(harness_source(), job, wall_timeout=wall, limits=limits)
        return results_from(out, tests)


def _events(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn last line: the process died while writing
        if isinstance(obj, dict):
            events.append(obj)
    return events


def _death(out: ProcessOutput) -> tuple[str, str]:
    """Status and message for the tests a process did not report."""
    import signal

    if out.timed_out:
        return "timeout", "the program ran past its wall-clock limit and was killed"
    rc = out.returncode
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        if -rc == signal.SIGXCPU:
            return "timeout", "the program ran out of CPU time (SIGXCPU)"
        return "crash", f"the process was killed by {name}"
    tail = out.stderr.strip().splitlines()[-1:] if out.stderr.strip() else []
    detail = f": {tail[0][:300]}" if tail else ""
    return "crash", f"the process exited with code {rc} before finishing the tests{detail}"


def results_from(out: ProcessOutput, tests: Sequence[str]) -> list[TestResult]:
    """Per-test results from what the harness reported; tests it never reached get the status of the
    process's end (timeout or crash)."""
    events = _events(out.stdout)
    load = next((e for e in events if "load" in e), None)
    if load is not None and load["load"] != "ok":
        status = "timeout" if load["load"] == "timeout" else "fail"
        return [TestResult(t, status, str(load.get("message", ""))) for t in tests]
    by_index = {int(e["i"]): e for e in events if "i" in e}
    missing: tuple[str, str] | None = None
    results = []
    for i, t in enumerate(tests):
        e = by_index.get(i)
        if e is None:
            missing = missing or _death(out)
            results.append(TestResult(t, missing[0], missing[1]))  # type: ignore[arg-type]
            continue
        status = e.get("status")
        if status not in ("pass", "fail", "timeout"):
            status = "crash"
        results.append(TestResult(t, status, str(e.get("message") or ""), e.get("value")))
    return results


_shared: SandboxExecutor | None = None


def shared_executor() -> SandboxExecutor:
    """The process-wide executor (one bound on sandboxed processes for strategies and graders)."""
    global _shared
    if _shared is None:
        _shared = SandboxExecutor()
    return _shared
