"""Load test of ``ttscale serve``: N concurrent clients for a bounded time against the embedded engine.

The server runs as a subprocess (``python -m ttscale.serve.command``) on 127.0.0.1 with a free port
and a concurrency limit below N, so the excess must get 429s (with ``Retry-After``), not failures.
Clients (one asyncio task each, sharing one ``httpx.AsyncClient``) send chat completions in a loop
until the time is up; after a 429 a client waits ``--backoff-s`` (with jitter; or the server's
``Retry-After`` with ``--honour-retry-after``) and tries again.
Requests still in flight when the time is up are awaited (bounded by ``--request-timeout-s``).

Counted: requests/s (200 answers per second of wall time), p50/p99 latency of the 200 answers,
errors (any status other than 200 or 429, and transport failures) and rejected (429s). The server
must still answer ``/health`` at the end (no crash).

Usage: python bench/serve_load.py [--model smollm2-135m] [--clients 200] [--duration-s 30]
       [--max-concurrency 16] [--max-tokens 16] [--strategy self_consistency --n 2]
       [--url http://127.0.0.1:8000/v1]   (an already running server; then no subprocess)

Ends with: RESULT rps=<x> p50_ms=<y> p99_ms=<z> errors=<n> rejected=<m>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx

QUESTIONS = [
    "What is 2+3?", "Name a primary colour.", "What is 7 times 6?", "Say hello in French.",
    "What is the capital of Italy?", "Count from one to three.", "What is 10 minus 4?", "Spell cat backwards.",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "ttscale.serve.command", "--engine", args.engine, "--model", args.model,
           "--host", "127.0.0.1", "--port", str(port), "--max-concurrency", str(args.max_concurrency),
           "--timeout-s", str(args.request_timeout_s), "--log-level", "warning"]
    for kv in args.engine_param or []:
        cmd += ["--engine-param", kv]
    env = {k: v for k, v in os.environ.items() if k != "TTSCALE_SERVE_API_KEY"}
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + args.startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode} during startup")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.terminate()
    raise SystemExit(f"server did not become healthy within {args.startup_timeout_s:g} s")


async def load(url: str, args: argparse.Namespace, model: str) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    tokens = 0
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    timeout = httpx.Timeout(args.request_timeout_s + 10, connect=10)
    t_start = time.perf_counter()
    stop_at = t_start + args.duration_s
    rng = random.Random(0)

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        async def client(i: int) -> None:
            nonlocal tokens
            k = 0
            while time.perf_counter() < stop_at:
                body: dict[str, Any] = {
                    "model": f"{args.strategy}/{model}" if args.strategy else model,
                    "messages": [{"role": "user", "content": QUESTIONS[(i + k) % len(QUESTIONS)]}],
                    "max_tokens": args.max_tokens, "temperature": 0.7,
                }
                if args.strategy:
                    body["ttscale"] = {"params": {"n": args.n}}
                k += 1
                t0 = time.perf_counter()
                try:
                    r = await http.post(f"{url}/chat/completions", json=body)
                except httpx.HTTPError as e:
                    statuses[f"exc:{type(e).__name__}"] += 1
                    await asyncio.sleep(args.backoff_s)
                    continue
                dt = time.perf_counter() - t0
                statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    latencies.append(dt)
                    tokens += int(r.json()["usage"]["completion_tokens"])
                elif r.status_code == 429:
                    wait = args.backoff_s
                    if args.honour_retry_after:
                        try:
                            wait = float(r.headers.get("retry-after", wait))
                        except ValueError:
                            pass
                    await asyncio.sleep(min(wait, 5.0) * (0.5 + rng.random()))
                else:
                    await asyncio.sleep(args.backoff_s)

        await asyncio.gather(*(client(i) for i in range(args.clients)))
    wall = time.perf_counter() - t_start
    return {"latencies": latencies, "statuses": statuses, "wall": wall, "tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="embedded")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--engine-param", action="append", help="engine option key=value (repeatable)")
    ap.add_argument("--url", default=None, help="an already running server's base URL (no subprocess)")
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients")
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--max-concurrency", type=int, default=16, help="server's in-flight limit (below --clients)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--strategy", default=None, help="e.g. self_consistency (default: plain pass-through)")
    ap.add_argument("--n", type=int, default=2, help="samples per request with --strategy")
    ap.add_argument("--backoff-s", type=float, default=0.05, help="client pause after a 429 (or an error)")
    ap.add_argument("--honour-retry-after", action=argparse.BooleanOptionalAction, default=False,
                    help="after a 429 wait the server's Retry-After (with jitter) instead of --backoff-s")
    ap.add_argument("--request-timeout-s", type=float, default=120.0)
    ap.add_argument("--startup-timeout-s", type=float, default=300.0)
    args = ap.parse_args()
    if args.clients < 1 or args.duration_s <= 0:
        raise SystemExit("--clients must be >= 1 and --duration-s > 0")

    proc = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        proc, url = start_server(args)
    try:
        health = httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()
        model = health.get("model") or args.model
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        print(f"engine: {health.get('engine')} model={model} (server max_concurrency={health.get('max_concurrency')})")
        mode = f"{args.strategy} n={args.n}" if args.strategy else "pass-through"
        print(f"load: {args.clients} concurrent clients for {args.duration_s:g} s, {mode}, "
              f"max_tokens={args.max_tokens}, 429 backoff "
              f"{'Retry-After' if args.honour_retry_after else f'{args.backoff_s:g} s'}")
        res = asyncio.run(load(url, args, model))
        alive = httpx.get(url.removesuffix("/v1") + "/health", timeout=10).status_code == 200
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    st: Counter[str] = res["statuses"]
    ok = st.get("200", 0)
    rejected = st.get("429", 0)
    errors = sum(v for k, v in st.items() if k not in ("200", "429")) + (0 if alive else 1)
    lat = res["latencies"]
    rps = ok / res["wall"]
    p50 = percentile(lat, 50) * 1000
    p99 = percentile(lat, 99) * 1000
    print(f"wall {res['wall']:.1f} s: {ok} answered (200), {rejected} rejected (429), {errors} errors; "
          f"statuses {dict(st)}; server alive after: {alive}")
    print(f"throughput {rps:.2f} req/s, {res['tokens'] / res['wall']:.1f} completion tok/s; "
          f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    print(f"RESULT rps={rps:.2f} p50_ms={p50:.0f} p99_ms={p99:.0f} errors={errors} rejected={rejected}")


if __name__ == "__main__":
    main()
