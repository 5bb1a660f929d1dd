"""The program that runs *inside* a sandboxed process (stdlib only; its source is passed to
``python -c``, it is never imported by ttscale).

Protocol: stdin holds one JSON object ``{"limits": {...}, "program": str, "tests": [str], "timeout":
float}``. The harness applies the resource limits, moves file descriptor 1 to its own results channel
(the program's prints go to stderr), loads the program, then runs each test under a per-test alarm.
It writes one JSON line per event to the results channel as it goes, so a process that dies part way
still reports what finished:

- ``{"load": "ok"}`` / ``{"load": "fail" | "timeout", "message": ...}``
- ``{"i": k, "status": "pass" | "fail" | "timeout", "message": ..., "value": ...}``
"""

import ast
import json
import os
import resource
import signal
import sys

MESSAGE_CHARS = 600
VALUE_CHARS = 2000

RLIMITS = {
    "cpu_seconds": (resource.RLIMIT_CPU, 1),
    "memory_mb": (resource.RLIMIT_AS, 1 << 20),
    "file_size_mb": (resource.RLIMIT_FSIZE, 1 << 20),
    "processes": (resource.RLIMIT_NPROC, 1),
    "open_files": (resource.RLIMIT_NOFILE, 1),
}


class HarnessTimeout(BaseException):
    """Raised by the alarm; a BaseException so that ``except Exception`` in the program misses it."""


def _alarm(signum, frame):
    raise HarnessTimeout()


def apply_limits(limits):
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, (which, scale) in RLIMITS.items():
        value = limits.get(key)
        if value is None:
            continue
        value = int(value) * scale
        if key == "processes":
            value += int(limits.get("processes_base", 0))
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead


def describe(exc):
    text = str(exc)
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:MESSAGE_CHARS]


def left_side(test):
    """For ``assert A == B``: the code of ``A`` (to report what it evaluated to), else None."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    cmp = tree.body[0].test
    if isinstance(cmp, ast.Compare) and len(cmp.ops) == 1 and isinstance(cmp.ops[0], ast.Eq):
        return compile(ast.Expression(cmp.left), "<test>", "eval")
    return None


def timed(fn, seconds):
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def run_test(test, env, seconds):
    try:
        code, is_expr = compile(test, "<test>", "eval"), True
    except SyntaxError:
        try:
            code, is_expr = compile(test, "<test>", "exec"), False
        except SyntaxError as e:
            return {"status": "fail", "message": "the test does not parse: " + describe(e)}
    try:
        value = timed(lambda: (lambda v: repr(v)[:VALUE_CHARS] if is_expr else None)(eval(code, env)), seconds)
        return {"status": "pass", "value": value}
    except HarnessTimeout:
        return {"status": "timeout", "message": f"the test ran past {seconds:g}s"}
    except AssertionError as e:
        message = describe(e)
        lhs = left_side(test)
        if lhs is not None:
            try:
                got = timed(lambda: repr(eval(lhs, env))[:VALUE_CHARS], seconds)
                message += f" (the left side evaluated to {got})"
            except BaseException:
                pass
        return {"status": "fail", "message": message}
    except BaseException as e:
        return {"status": "fail", "message": describe(e)}


def main():
    job = json.loads(sys.stdin.read())
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)

    def emit(obj):
        results.write(json.dumps(obj) + "\n")
        results.flush()

    apply_limits(job.get("limits") or {})
    signal.signal(signal.SIGALRM, _alarm)
    seconds = float(job.get("timeout", 3.0))
    env = {"__name__": "candidate"}
    try:
        code = compile(job["program"], "<candidate>", "exec")
        timed(lambda: exec(code, env), seconds)
    except HarnessTimeout:
        emit({"load": "timeout", "message": f"loading the program ran past {seconds:g}s"})
        return
    except BaseException as e:
        emit({"load": "fail", "message": "the program raised while loading: " + describe(e)})
        return
    emit({"load": "ok"})
    for i, test in enumerate(job.get("tests") or []):
        emit({"i": i, **run_test(test, env, seconds)})


if __name__ == "__main__":
    main()
