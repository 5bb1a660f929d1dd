"""One sandboxed Python process: a fresh temporary directory, the isolation of
:mod:`ttscale.sandbox.isolation`, resource limits, a clean environment, a wall-clock timeout that
kills the whole process group, and stdout/stderr captured and cut to a size."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from ttscale.sandbox.isolation import detect, process_base

RESULTS_BYTES = 4 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed process."""

    cpu_seconds: int = 10
    memory_mb: int = 2048
    """Address space: an allocation past it raises MemoryError."""
    file_size_mb: int = 16
    processes: int = 16
    """Processes and threads the program may add (on top of what its uid runs already)."""
    open_files: int = 256
    output_bytes: int = 16_384
    """stderr (the program's prints) kept per process; the rest is dropped."""

    def for_harness(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("output_bytes")
        d["processes_base"] = process_base()
        return d


@dataclass(frozen=True)
class ProcessOutput:
    """What a sandboxed process left: its results channel (stdout), its prints (stderr, cut), its
    exit status (negative: killed by that signal) and whether the wall clock ran out."""

    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    truncated: bool = False


def harness_source() -> str:
    """The source of :mod:`ttscale.sandbox.harness`, run with ``python -c`` (never imported here)."""
    return (resources.files("ttscale.sandbox") / "harness.py").read_text(encoding="utf-8")


def python_argv(source: str) -> list[str]:
    """A Python command that runs ``source`` without user site-packages or the working directory on
    ``sys.path`` (its environment is set by the sandbox)."""
    return [sys.executable, "-s", "-P", "-B", "-c", source]


async def _drain(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    buf = bytearray()
    cut = False
    if stream is None:
        return b"", False
    while chunk := await stream.read(65536):
        room = limit - len(buf)
        if room > 0:
            buf += chunk[:room]
        cut = cut or len(chunk) > room
    return bytes(buf), cut


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_sandboxed(source: str, stdin: bytes, *, wall_timeout: float, limits: Limits) -> ProcessOutput:
    """Run Python ``source`` in a fresh sandbox with ``stdin`` as its input; never raises for what the
    program does (an OSError starting the process does raise)."""
    iso = detect()
    with tempfile.TemporaryDirectory(prefix="ttscale-sbx-", ignore_cleanup_errors=True) as work:
        if iso.drop_uid is not None:
            os.chown(work, iso.drop_uid, iso.drop_uid)
        proc = await asyncio.create_subprocess_exec(
            *iso.command(python_argv(source), work), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=work,
            env=iso.environment(work), start_new_session=True,
        )
        out_task = asyncio.create_task(_drain(proc.stdout, RESULTS_BYTES))
        err_task = asyncio.create_task(_drain(proc.stderr, limits.output_bytes))
        timed_out = False

        async def feed_and_wait() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(stdin)
                await proc.stdin.drain()
                proc.stdin.close()
            await proc.wait()

        try:
            await asyncio.wait_for(feed_and_wait(), wall_timeout)
        except TimeoutError:
            timed_out = True
        finally:
            _kill_group(proc.pid)  # the program's own children too, when it has left some behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            done, pending = await asyncio.wait({out_task, err_task}, timeout=2.0)
            for t in pending:  # a pipe held open by an escaped grandchild (no PID namespace)
                t.cancel()
        out, _ = out_task.result() if out_task in done else (b"", False)
        err, cut = err_task.result() if err_task in done else (b"", False)
        return ProcessOutput(out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                             proc.returncode, timed_out, cut)


def job_bytes(**job: Any) -> bytes:
    return json.dumps(job).encode("utf-8")
