"""The program inside a :class:`ttscale.sandbox.worker.SandboxWorker` process (stdlib only; its source
is passed to ``python -c``, it is never imported by ttscale).

Protocol, one JSON object a line: stdin first holds ``{"limits": {...}, "setup": str}``; the worker
applies the limits, runs ``setup`` once (imports: the expensive part) and answers ``{"ready": true}``
or ``{"setup_error": ...}``. Then each request ``{"expr": str, "data": {...}, "timeout": float}`` (optionally ``"warm"``:
an expression from ttscale, never model text, run in the worker itself first with ``"warm_data"``) is
evaluated in a forked child (so that nothing a call does can change the next one), with ``data``'s
keys as variables; the answer is ``{"status": "pass", "value": ...}`` (the value as JSON, ``repr`` for
what JSON cannot hold) or ``{"status": "fail" | "timeout" | "crash", "message": ...}``.
"""

import json
import os
import resource
import select
import signal
import sys

MESSAGE_CHARS = 600


def describe(exc):
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:MESSAGE_CHARS]


def apply_limits(limits):
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    pairs = [("memory_mb", resource.RLIMIT_AS, 1 << 20), ("file_size_mb", resource.RLIMIT_FSIZE, 1 << 20),
             ("open_files", resource.RLIMIT_NOFILE, 1)]
    for key, which, scale in pairs:
        if limits.get(key) is not None:
            v = int(limits[key]) * scale
            resource.setrlimit(which, (v, v))
    if limits.get("processes") is not None:
        v = int(limits["processes"]) + int(limits.get("processes_base", 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (v, v))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def child(expr, data, timeout, env, w):
    resource.setrlimit(resource.RLIMIT_CPU, (int(timeout) + 1, int(timeout) + 1))
    signal.alarm(int(timeout) + 1)
    try:
        ns = dict(env)
        ns.update(data)
        value = eval(compile(expr, "<call>", "eval"), ns)
        msg = {"status": "pass", "value": json.loads(json.dumps(value, default=repr))}
    except BaseException as e:
        msg = {"status": "fail", "message": describe(e)}
    os.write(w, (json.dumps(msg) + "\n").encode())
    os._exit(0)


def warm(req, env):
    """Evaluate the request's trusted ``warm`` expression in this process (not a fork), so that what
    it builds (a cached scorer) is inherited by every later call; its errors are left to the call."""
    if req.get("warm"):
        ns = dict(env)
        ns.update(req.get("warm_data") or {})
        try:
            eval(compile(req["warm"], "<warm>", "eval"), ns)
        except Exception:
            pass


def call(req, env):
    warm(req, env)
    timeout = float(req.get("timeout", 5.0))
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        return {"status": "crash", "message": "could not fork: " + describe(e)}
    if pid == 0:
        os.close(r)
        child(req["expr"], req.get("data") or {}, timeout, env, w)
    os.close(w)
    ready, _, _ = select.select([r], [], [], timeout)
    chunks = []
    if ready:
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    os.close(r)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if not ready:
        return {"status": "timeout", "message": f"the call ran past {timeout:g}s"}
    try:
        return json.loads(b"".join(chunks).decode())
    except ValueError:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return {"status": "crash", "message": f"the call's process died (signal {sig})"}


def main():
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    stdin = sys.stdin
    head = json.loads(stdin.readline())
    apply_limits(head.get("limits") or {})
    env = {"__name__": "worker"}
    try:
        exec(compile(head["setup"], "<setup>", "exec"), env)
    except BaseException as e:
        results.write(json.dumps({"setup_error": describe(e)}) + "\n")
        return
    results.write(json.dumps({"ready": True}) + "\n")
    for line in stdin:
        if line.strip():
            results.write(json.dumps(call(json.loads(line), env)) + "\n")


if __name__ == "__main__":
    main()
