"""A long-lived sandboxed process that imports a library once and evaluates each call in a forked
child: for graders that may evaluate model text (reasoning-gym scorers) and are too slow to import
per call. Same isolation as :mod:`ttscale.sandbox.process`; a call that hangs is killed after its
timeout, a worker that stops answering is killed and started afresh on the next call.

Calls are served one at a time by one thread the worker owns, which also starts the process: the
sandbox dies with the thread that started it (``--die-with-parent``), so that thread must outlive
every caller's (an event loop's executor threads end with the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from importlib import resources
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.sandbox.isolation import detect
from ttscale.sandbox.process import Limits, python_argv

log = logging.getLogger(__name__)

WORKER_LIMITS = Limits(cpu_seconds=24 * 3600, memory_mb=4096, processes=16)


def _source() -> str:
    return (resources.files("ttscale.sandbox") / "worker_main.py").read_text(encoding="utf-8")


class _Proc:
    """One running worker process and its temporary directory."""

    def __init__(self, setup: str, limits: Limits, startup_timeout: float) -> None:
        iso = detect()
        self.work = tempfile.mkdtemp(prefix="ttscale-sbw-")
        if iso.drop_uid is not None:
            os.chown(self.work, iso.drop_uid, iso.drop_uid)
        self.popen = subprocess.Popen(
            iso.command(python_argv(_source()), self.work), cwd=self.work, env=iso.environment(self.work),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self._finalizer = weakref.finalize(self, _kill, self.popen, self.work)
        self._buf = b""
        self.send({"limits": limits.for_harness(), "setup": setup})
        head = self.receive(startup_timeout)
        if head is None or "ready" not in head:
            self.close()
            why = (head or {}).get("setup_error", "no answer (it died or ran past its start-up time)")
            raise ConfigError(f"the sandboxed grader could not start: {why}")

    def send(self, obj: Any) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write((json.dumps(obj) + "\n").encode())
        self.popen.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next answer line, or None when none comes within ``timeout`` seconds."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = _now() + timeout
        while b"\n" not in self._buf:
            left = deadline - _now()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return None

    def close(self) -> None:
        self._finalizer()


def _now() -> float:
    import time

    return time.monotonic()


def _kill(popen: subprocess.Popen[bytes], work: str) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        popen.kill()
    with contextlib.suppress(Exception):
        popen.wait(timeout=5)
    for f in (popen.stdin, popen.stdout):
        with contextlib.suppress(Exception):
            f.close()  # type: ignore[union-attr]
    shutil.rmtree(work, ignore_errors=True)


class SandboxWorker:
    """Evaluates expressions after a one-time ``setup`` (run in the sandbox, never here).

    ``await worker.call("f(x)", {"x": 1}, time_limit=5)`` -> ``{"status": "pass", "value": ...}`` or
    ``{"status": "fail" | "timeout" | "crash", "message": ...}``; never raises for what the evaluated
    text does (a setup that fails is a ConfigError).
    """

    def __init__(self, setup: str, *, limits: Limits | None = None, startup_timeout: float = 120.0) -> None:
        self.setup = setup
        self.limits = limits or WORKER_LIMITS
        self.startup_timeout = startup_timeout
        self._proc: _Proc | None = None
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ttscale-sandbox-worker")
        self.starts = 0

    def call_sync(self, expr: str, data: dict[str, Any], time_limit: float = 10.0, *,
                  warm: str | None = None, warm_data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate ``expr`` with ``data`` in a fresh fork. ``warm`` (trusted code, never model text)
        runs in the worker itself first, with ``warm_data``, so what it caches serves later calls."""
        return self._thread.submit(self._call, expr, data, time_limit, warm, warm_data).result()

    def _call(self, expr: str, data: dict[str, Any], time_limit: float, warm: str | None,
              warm_data: dict[str, Any] | None) -> dict[str, Any]:
        with self._lock:
            if self._proc is None or self._proc.popen.poll() is not None:
                self._proc = _Proc(self.setup, replace(self.limits), self.startup_timeout)
                self.starts += 1
            proc = self._proc
            try:
                proc.send({"expr": expr, "data": data, "timeout": time_limit, "warm": warm,
                           "warm_data": warm_data or {}})
                answer = proc.receive(time_limit + 60.0)
            except (BrokenPipeError, OSError):
                answer = None
            if answer is None:  # hung or died: start afresh next time
                proc.close()
                self._proc = None
                return {"status": "crash", "message": "the sandboxed grader stopped answering"}
            return answer

    async def call(self, expr: str, data: dict[str, Any], time_limit: float = 10.0, *,
                   warm: str | None = None, warm_data: dict[str, Any] | None = None) -> dict[str, Any]:
        fut = self._thread.submit(self._call, expr, data, time_limit, warm, warm_data)
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        def stop() -> None:
            if self._proc is not None:
                self._proc.close()
                self._proc = None

        self._thread.submit(stop).result()
