"""The pool engine: prefix-affinity routing, failover, health probes and per-replica counters."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.protocols import replica_stats
from ttscale.core.types import Completion, GenerationRequest, Problem
from ttscale.engines import make_engine
from ttscale.engines.pool import PoolEngine, classify
from ttscale.engines.routing import HashRing, Router, affinity_key
from ttscale.engines.scripted import ScriptedEngine
from ttscale.lab.runner import Runner, read_results
from ttscale.verifiers.math_answers import MathAnswers

from openai_stub_server import start_stub_server

ROOT = Path(__file__).resolve().parents[1]


def _req(pid: str | None, text: str = "q") -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": text},), problem_id=pid)


def test_ring_is_stable_and_moves_only_the_lost_replicas_keys():
    names = ["a", "b", "c"]
    full = HashRing([0, 1, 2], names)
    less = HashRing([0, 2], names)
    keys = [f"p:{i}" for i in range(300)]
    owners = [full.owner(k) for k in keys]
    assert owners == [HashRing([0, 1, 2], names).owner(k) for k in keys]  # deterministic
    assert {0, 1, 2} == set(owners) and min(owners.count(i) for i in range(3)) > 50  # spread
    for k, o in zip(keys, owners, strict=True):
        if o != 1:
            assert less.owner(k) == o  # keys of the surviving replicas stay put


def test_router_affinity_saturation_and_round_robin():
    r = Router(["a", "b"], policy="affinity", saturation=2)
    first = r.pick("p:7")
    assert all(r.pick("p:7") == first for _ in range(5))
    r.replicas[first].in_flight = 2  # saturated: spill to the other one
    assert r.pick("p:7") == 1 - first
    rr = Router(["a", "b"], policy="round_robin")
    assert [rr.pick("p:7") for _ in range(4)] == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="routing must be one of"):
        Router(["a"], policy="random")


def test_router_takes_failing_replica_out_and_probes_it_back():
    r = Router(["a", "b"], max_failures=2, probe_s=10.0)
    assert r.failed(0, "HTTP 503", fatal=False) is False
    assert r.failed(0, "HTTP 503", fatal=False) is True
    assert r.healthy() == [1] and r.pick("p:x") == 1
    assert r.due_for_probe(now=r.replicas[0].down_since + 5) == []
    assert r.due_for_probe(now=r.replicas[0].down_since + 11) == [0]
    r.probe_result(0, True)
    assert r.healthy() == [0, 1]
    assert r.failed(1, "refused", fatal=True) is True and r.healthy() == [0]


def test_affinity_key_problem_id_else_prompt():
    assert affinity_key(_req("p1", "x")) == affinity_key(_req("p1", "y"))
    assert affinity_key(_req(None, "x")) == affinity_key(_req(None, "x").with_(prefix="step 1"))
    assert affinity_key(_req(None, "x")) != affinity_key(_req(None, "y"))


def test_classify_errors():
    import httpx

    refused = EngineError("openai engine: cannot reach http://x")
    refused.__cause__ = httpx.ConnectError("refused")
    assert classify(refused) == "down"
    assert classify(EngineError("POST http://x failed after 2 attempts: HTTP 503: busy")) == "failure"
    assert classify(EngineError("failed with HTTP 400 (not retried)")) is None
    assert classify(RuntimeError("crash")) == "failure"


class _Cached(ScriptedEngine):
    """A scripted replica that reports a prefix-cache hit for every prompt it has seen before."""

    def __init__(self, model: str = "m") -> None:
        super().__init__(lambda req, k: "The answer is \\boxed{5}", model=model)
        self.seen: set[str] = set()

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        out = await super().generate(req)
        key = req.problem_id or ""
        hit = key in self.seen
        self.seen.add(key)
        return [Completion(text=c.text, completion_tokens=c.completion_tokens, prompt_tokens=10,
                           cached_prompt_tokens=10 if hit else 0) for c in out]


async def test_pool_affinity_keeps_problems_on_one_replica_and_counts_hits():
    for routing, want_hits in (("affinity", 5 * 3 * 10), ("round_robin", None)):
        a, b = _Cached(), _Cached()
        pool = PoolEngine([a, b], names=["a", "b"], routing=routing)
        for pid in ("p1", "p2", "p3", "p4", "p5"):
            for _ in range(4):
                await pool.generate(_req(pid))
        stats = {s["replica"]: s for s in replica_stats(pool)}
        assert stats["a"]["requests"] + stats["b"]["requests"] == 20
        hits = stats["a"]["cached_prompt_tokens"] + stats["b"]["cached_prompt_tokens"]
        if want_hits is not None:  # 4 requests per problem on one replica: 3 hits each
            assert hits == want_hits
            assert not (a.seen & b.seen) and len(a.seen | b.seen) == 5  # each problem on one replica
        else:  # alternating replicas: each problem's first visit to each replica misses
            assert hits == 5 * 2 * 10


async def test_pool_retries_on_other_replica_and_fails_when_all_down():
    class Broken(ScriptedEngine):
        async def generate(self, req):
            raise RuntimeError("replica crashed")

    good = ScriptedEngine(lambda req, k: "ok", model="m")
    pool = PoolEngine([Broken(lambda r, k: "", model="m"), good], names=["bad", "good"], max_failures=1,
                      probe_s=3600)
    for pid in ("p1", "p2", "p3", "p4"):
        assert [c.text for c in await pool.generate(_req(pid))] == ["ok"]
    stats = {s["replica"]: s for s in pool.replica_stats()}
    assert stats["bad"]["healthy"] is False and stats["bad"]["errors"] == 1
    assert stats["good"]["requests"] == 4
    dead = PoolEngine([Broken(lambda r, k: "", model="m")], names=["only"], probes=[_never])
    with pytest.raises(EngineError, match=r"all 1 replicas are down \(only: RuntimeError: replica crashed"):
        await dead.generate(_req("p1"))


async def _never() -> bool:
    return False


def test_pool_bad_urls_are_config_errors():
    with pytest.raises(ConfigError, match="replica URL 'localhost:8000' must look like http://HOST:PORT/v1"):
        make_engine("pool", "m", {"base_url": "http://127.0.0.1:1/v1,localhost:8000"})
    with pytest.raises(ConfigError, match="lists a replica twice"):
        make_engine("pool", "m", {"base_url": "http://a/v1,http://a/v1"})
    with pytest.raises(ConfigError, match="pool engine needs --engine-param base_url"):
        make_engine("pool", None, {})


async def test_two_upstreams_one_stopped_mid_run_loses_nothing(tmp_path, caplog):
    problems = [Problem(id=f"q{i}", prompt=f"What is {i}+1?", answer=str(i + 1)) for i in range(12)]
    script = {p.prompt: [f"so the answer is \\boxed{{{p.answer}}}"] for p in problems}
    out = tmp_path / "res.jsonl"
    with contextlib.ExitStack() as keep, contextlib.ExitStack() as doomed:
        url_a, _ = keep.enter_context(start_stub_server(script, delay_s=0.05))
        url_b, ctl_b = doomed.enter_context(start_stub_server(script, delay_s=0.05))
        pool = make_engine("pool", "stub-model", {"base_url": f"{url_a},{url_b}", "probe_s": 3600})
        done: list[str] = []
        closed: list[bool] = []

        def on_result(res):
            done.append(res.problem_id)
            if len(done) >= 3 and ctl_b.n_requests > 0 and not closed:  # b has served: stop it now,
                closed.append(True)  # holding the event loop meanwhile, so the problems left all
                doomed.close()  # start after it (closing from another thread let a loaded machine
                # finish the run first)

        runner = Runner(engine=pool, strategy="self_consistency", params={"n": 2}, answers=MathAnswers(),
                        grader=MathAnswers(), concurrency=3, progress=False, on_result=on_result)
        summary = await runner.run(problems, out)
        stats = {s["replica"]: s for s in pool.replica_stats()}
        await pool.aclose()
    assert stats[url_b]["requests"] - stats[url_b]["errors"] >= 1  # b served some before it stopped
    records, _ = read_results(out)
    ids = [r["problem_id"] for r in records]
    assert sorted(ids) == sorted(p.id for p in problems) and len(ids) == len(set(ids))
    assert summary.correct == 12 and not summary.errors
    assert stats[url_b]["healthy"] is False and stats[url_b]["errors"] >= 1
    assert stats[url_a]["requests"] > len(ctl_b.requests) - 1
    assert any("is down" in r.getMessage() for r in caplog.records)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "ttscale.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)


def test_cli_pool_all_replicas_down_is_one_error_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "What is 1+1?", "answer": "2"}) + "\n")
    p = _cli("run", "--engine", "pool", "--model", "m", "--engine-param", "base_url=http://127.0.0.1:9/v1",
             "--engine-param", "max_retries=0", "--dataset", str(data), "--out", str(tmp_path / "o.jsonl"),
             "--no-progress")
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "all 1 replicas are down" in errors[0], p.stderr
    bad = _cli("run", "--engine", "pool", "--model", "m", "--engine-param", "base_url=ftp://x/v1",
               "--dataset", str(data), "--no-progress")
    assert bad.returncode == 2 and "error: pool engine: replica URL 'ftp://x/v1' must look like" in bad.stderr


def test_serve_fronts_a_pool_and_exports_replica_counters_on_metrics():
    import httpx

    from ttscale.serve import ServeConfig, create_app
    from ttscale.serve.command import serve_in_thread

    pool = PoolEngine([_Cached("m"), _Cached("m")], names=["a", "b"])
    with serve_in_thread(create_app(ServeConfig(), engine=pool)) as url:
        for text in ("What is 2+3?", "What is 2+3?", "What is 4+4?"):
            r = httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": [
                {"role": "user", "content": text}], "max_tokens": 8}, timeout=30)
            assert r.status_code == 200, r.text
        metrics = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30).text
    lines = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("ttscale_replica_"))
    assert int(lines['ttscale_replica_requests_total{replica="a"}']) + int(
        lines['ttscale_replica_requests_total{replica="b"}']) == 3
    assert lines['ttscale_replica_up{replica="a"}'] == "1" and lines['ttscale_replica_errors_total{replica="b"}'] == "0"
    assert 'ttscale_replica_tokens_total{kind="cached_prompt",replica="a"}' in lines
