"""The embedded llama.cpp engine (end to end on SmolLM2-135M) and model-file resolution."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import json
import time
import uuid
from pathlib import Path

import pytest

from ttscale.core.errors import ModelFileError
from ttscale.core.protocols import Engine
from ttscale.core.types import GenerationRequest
from ttscale.engines import model_files as mf

POEM = ({"role": "user", "content": "Write a long poem about the sea."},)


# --- model files ------------------------------------------------------------------------------
def _fake_chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: list[bytes],
                  *, install: list[int] | None = None, sha: str | None = None) -> mf.ChunkedModel:
    """Fake chunk packages ``<prefix>N`` (whose __init__ would fail if imported) under tmp_path."""
    prefix = f"ttsfake{uuid.uuid4().hex[:8]}_part"
    site = tmp_path / "site"
    for i, data in enumerate(parts, 1):
        if install is not None and i not in install:
            continue
        pkg = site / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    whole = b"".join(parts)
    m = mf.ChunkedModel(
        name="fake", filename="fake.gguf", package=prefix.replace("_", "-"), module=prefix, version="1.0",
        parts=len(parts), size=len(whole), sha256=sha or hashlib.sha256(whole).hexdigest(), params_count=1e6,
    )
    monkeypatch.setitem(mf.MODELS, "fake", m)
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))
    return m


def test_assemble_joins_parts_in_order_and_marks(tmp_path, monkeypatch):
    parts = [bytes([i]) * (1000 + i) for i in range(1, 12)]
    _fake_chunked(tmp_path, monkeypatch, parts)
    p = mf.resolve_model("fake")
    assert p == tmp_path / "cache" / "fake.gguf"
    assert p.read_bytes() == b"".join(parts)
    marker = json.loads(p.with_name("fake.gguf.verified").read_text())
    assert marker["size"] == p.stat().st_size
    assert not list(p.parent.glob("*.part"))

    # second start: the marker spares the hash
    def boom(_):
        raise AssertionError("hash recomputed")

    monkeypatch.setattr(mf, "_sha256_file", boom)
    assert mf.resolve_model("fake") == p
    assert mf.params_count("fake") == 1e6


def test_assemble_redoes_truncated_file(tmp_path, monkeypatch):
    parts = [b"a" * 500, b"b" * 700]
    _fake_chunked(tmp_path, monkeypatch, parts)
    p = mf.resolve_model("fake")
    p.write_bytes(b"short")
    assert mf.resolve_model("fake").read_bytes() == b"".join(parts)


def test_assemble_hash_mismatch(tmp_path, monkeypatch):
    _fake_chunked(tmp_path, monkeypatch, [b"x" * 100, b"y" * 100], sha="0" * 64)
    with pytest.raises(ModelFileError, match="sha256"):
        mf.resolve_model("fake")
    cache = tmp_path / "cache"
    assert not (cache / "fake.gguf").exists()
    assert not list(cache.glob("*.part"))


def test_missing_part_package_names_pip_command(tmp_path, monkeypatch):
    m = _fake_chunked(tmp_path, monkeypatch, [b"x", b"y", b"z"], install=[1, 3])
    with pytest.raises(ModelFileError) as ei:
        mf.resolve_model("fake")
    msg = str(ei.value)
    assert f"{m.package}2" in msg and f"pip install {m.package}2==1.0" in msg


def test_paths_and_unknown_names(tmp_path):
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF")
    assert mf.resolve_model(str(g)) == g
    assert mf.params_count(str(g)) is None
    with pytest.raises(ModelFileError, match="does not exist"):
        mf.resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelFileError, match=r"qwen2\.5-coder-1\.5b"):
        mf.resolve_model("no-such-model")
    assert mf.params_count(None) == pytest.approx(1.54e9)


def test_packaged_model_missing(monkeypatch):
    monkeypatch.setitem(mf.MODELS, "ghost", mf.PackagedModel(
        name="ghost", package="ghost-pkg", module="ghost_pkg_not_installed", version="0.1",
        filename="g.gguf", params_count=1.0))
    with pytest.raises(ModelFileError, match=r"pip install ghost-pkg==0\.1"):
        mf.resolve_model("ghost")


# --- the engine, end to end ------------------------------------------------------------------


@pytest.mark.model
async def test_basic_generation(embedded_small):
    e = embedded_small
    assert isinstance(e, Engine)
    assert e.name == "embedded" and e.model == "smollm2-135m"
    assert e.params_count == pytest.approx(1.35e8)
    (c,) = await e.generate(GenerationRequest(messages=POEM, max_tokens=16, seed=3))
    assert c.text and c.completion_tokens > 0 and c.prompt_tokens > 0
    assert c.token_ids is not None and len(c.token_ids) == c.completion_tokens
    assert c.logprobs is None
    assert c.finish_reason in ("stop", "length")


@pytest.mark.model
async def test_n_samples_are_distinct_and_seeded(embedded_small):
    req = GenerationRequest(messages=POEM, n=3, max_tokens=12, temperature=1.0, seed=11)
    out = await embedded_small.generate(req)
    assert len(out) == 3
    assert len({c.text for c in out}) == 3
    again = await embedded_small.generate(req.with_(n=1, seed=12))
    assert again[0].token_ids == out[1].token_ids  # sample i uses seed + i


@pytest.mark.model
async def test_logprobs_top_k(embedded_small):
    (c,) = await embedded_small.generate(GenerationRequest(messages=POEM, max_tokens=8, logprobs=3, seed=1))
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
    for t, tid in zip(c.logprobs, c.token_ids, strict=True):
        assert t.token_id == tid
        assert len(t.top) == 3
        assert t.logprob <= 0.0
    assert "".join(t.token for t in c.logprobs) == c.text


@pytest.mark.model
async def test_stop_strings(embedded_small):
    base = GenerationRequest(messages=POEM, max_tokens=40, temperature=0)
    (full,) = await embedded_small.generate(base)
    assert "\n" in full.text
    (cut,) = await embedded_small.generate(base.with_(stop=("\n",)))
    assert cut.finish_reason == "stop"
    assert "\n" not in cut.text
    assert full.text.startswith(cut.text)
    assert cut.completion_tokens < full.completion_tokens


@pytest.mark.model
async def test_continuation_from_token_ids(embedded_small):
    e = embedded_small
    base = GenerationRequest(messages=POEM, temperature=0)
    (g20,) = await e.generate(base.with_(max_tokens=20))
    assert g20.completion_tokens == 20
    (g10,) = await e.generate(base.with_(max_tokens=10))
    (c10,) = await e.generate(base.with_(max_tokens=10, prefix=g10.text, prefix_token_ids=g10.token_ids))
    assert g10.token_ids + c10.token_ids == g20.token_ids
    assert g10.text + c10.text == g20.text
    assert c10.prompt_tokens == g10.prompt_tokens + 10
    # from the prefix text alone (re-tokenised) it continues too
    (t10,) = await e.generate(base.with_(max_tokens=10, prefix=g10.text))
    assert t10.completion_tokens > 0
    # raw prompt (no chat template)
    (r,) = await e.generate(GenerationRequest(raw_prompt="The capital of France is", max_tokens=5, temperature=0))
    assert r.completion_tokens > 0 and r.token_ids


@pytest.mark.model
async def test_monitor_stops_sample(embedded_small):
    seen: list[int] = []

    def monitor(tokens, text):
        seen.append(len(tokens))
        return len(tokens) >= 5

    (c,) = await embedded_small.generate(
        GenerationRequest(messages=POEM, max_tokens=60, temperature=0, monitor=monitor))
    assert c.finish_reason == "cancelled"
    assert c.completion_tokens == 5 and len(c.token_ids) == 5
    assert seen[-1] == 5


async def _wait_until(pred, seconds: float) -> None:
    for _ in range(int(seconds / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)


@pytest.mark.model
async def test_task_cancellation_stops_backend(embedded_small):
    e = embedded_small
    plain = e.params
    e.params = dataclasses.replace(plain, ignore_eos=True)
    try:
        before = e.generated_tokens
        task = asyncio.create_task(e.generate(GenerationRequest(messages=POEM, max_tokens=1500, n=2)))
        await _wait_until(lambda: e.active_streams >= 2, 10)
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t0 = time.monotonic()
        await _wait_until(lambda: e.active_streams == 0, 5)
        assert e.active_streams == 0
        assert time.monotonic() - t0 < 3.0
        assert 0 < e.generated_tokens - before < 2 * 1500 / 2
    finally:
        e.params = plain


@pytest.mark.model
async def test_many_concurrent_requests(embedded_small):
    e = embedded_small
    reqs = [GenerationRequest(messages=({"role": "user", "content": f"Say a word about the number {i}."},),
                              n=2, max_tokens=10, seed=i) for i in range(12)]
    outs = await asyncio.wait_for(asyncio.gather(*(e.generate(r) for r in reqs)), 300)  # generous: a loaded 2-core machine is slow
    assert [len(o) for o in outs] == [2] * 12
    assert all(c.completion_tokens > 0 and c.token_ids for o in outs for c in o)
    assert e.active_streams == 0


def test_registered_factory():
    from ttscale.engines.base import load_engines
    entry = load_engines().get("embedded")
    p = entry.make_params({"n_parallel": "2", "threads": "1"})
    assert p.n_parallel == 2 and p.threads == 1 and p.n_ctx == 0


@pytest.mark.model
async def test_monitor_exception_propagates(embedded_small):
    def monitor(tokens, text):
        raise ValueError("bad monitor")

    with pytest.raises(ValueError, match="bad monitor"):
        await embedded_small.generate(GenerationRequest(messages=POEM, max_tokens=20, monitor=monitor))
    assert embedded_small.active_streams == 0


def test_priority_pool_runs_earlier_problems_first_and_cancels_queued_jobs() -> None:
    import threading

    from ttscale.engines.priority_pool import PriorityPool

    pool = PriorityPool(1, "t")
    gate = threading.Event()
    order: list[int] = []
    first = pool.submit(0, gate.wait)  # occupies the only worker
    futs = [pool.submit(p, order.append, p) for p in (5, 1, 3, 1)]
    dropped = pool.submit(9, order.append, 9)
    assert dropped.cancel()  # still queued: cancelled, never runs
    gate.set()
    for f in futs:
        f.result(timeout=5)
    assert first.result(timeout=5) is True
    assert order == [1, 1, 3, 5]  # lowest priority first, ties in submission order
    pool.shutdown()
    assert all(not t.is_alive() for t in pool._threads)


@pytest.mark.model
async def test_host_kv_store_restores_evicted_continuations_and_fans_out_prompts():
    import os

    from ttscale.engines.embedded import EmbeddedEngine, EmbeddedParams

    e = EmbeddedEngine("smollm2-135m", EmbeddedParams(n_parallel=1, n_ctx=2048, kv_min_gain=8))
    try:
        kv_dir = e.kv_dir
        assert kv_dir and os.path.isdir(kv_dir)
        (a,) = await e.generate(GenerationRequest(messages=POEM, max_tokens=60, temperature=0, stop=("\n",)))
        assert a.finish_reason == "stop" and e._slots.continuable == [True]  # ended at its stop string
        other = ({"role": "user", "content": "Name three colours."},)
        await e.generate(GenerationRequest(messages=other, max_tokens=5, temperature=0))
        assert e._slots.saves == 1  # the only slot was reused: the poem's KV went to the store first
        (c,) = await e.generate(GenerationRequest(messages=POEM, prefix=a.text + "\n", prefix_token_ids=a.token_ids,
                                                  max_tokens=5, temperature=0))
        assert e._slots.restores == 1
        assert c.cached_prompt_tokens >= c.prompt_tokens - 2  # continued from the snapshot, not recomputed
        assert c.prompt_tokens > 30

        # fan-out: three samples of a new prompt on one slot: the prompt is computed once
        long = ({"role": "user", "content": "Summarise: " + " ".join(f"item {i}" for i in range(80))},)
        before = e.prefills
        outs = await e.generate(GenerationRequest(messages=long, max_tokens=4, n=3, seed=3))
        assert e.prefills == before + 1
        computed = sum(o.prompt_tokens - o.cached_prompt_tokens for o in outs)
        assert outs[0].prompt_tokens > 150
        assert computed <= outs[0].prompt_tokens + 3  # not 3x
    finally:
        await e.aclose()
    assert not os.path.exists(kv_dir)


def test_stale_kv_store_dirs_of_dead_processes_are_removed(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from ttscale.engines.llama_kv_store import make_store_dir, remove_stale_stores

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"ttscale-kv-{dead_pid}-abc"
    mine = tmp_path / f"ttscale-kv-{os.getpid()}-def"
    other = tmp_path / "ttscale-kv-notapid-x"
    for d in (stale, mine, other):
        d.mkdir()
        (d / "snap").write_bytes(b"kv")
    remove_stale_stores(str(tmp_path))
    assert not stale.exists() and mine.exists() and other.exists()
    made = make_store_dir(str(tmp_path), 1)
    assert os.path.dirname(made) == str(tmp_path) and os.path.basename(made).startswith(f"ttscale-kv-{os.getpid()}-")


def test_chunk_sink_fills_streams_and_stops_on_monitor_error_and_cancel() -> None:
    import threading

    from ttscale.engines.llama_stream import ChunkSink, Stream, to_completion

    def chunk(index: int, tok: str, tid: int, finish: str | None = None) -> dict:
        return {"choices": [{"index": index, "text": tok, "finish_reason": finish, "logprobs": {"content": [
            {"token": tok, "logprob": -0.5, "id": tid, "top_logprobs": [{"token": tok, "logprob": -0.5},
                                                                       {"token": "x", "logprob": -2.0}]}]}}]}

    ev = threading.Event()
    a, b = Stream(cancel=ev), Stream(cancel=ev)
    sink = ChunkSink([a, b], None, 1)
    assert sink(chunk(0, "Hi", 5)) is False and sink(chunk(1, "Yo", 7)) is False
    assert sink(chunk(0, "!", 9, "stop")) is False
    assert (a.text, a.ids, a.finish, b.text, b.ids) == ("Hi!", [5, 9], "stop", "Yo", [7])
    assert a.tokens[0].top == (("Hi", -0.5),)  # top_k = 1
    ev.set()
    assert sink(chunk(1, " there", 8)) is True and b.cancelled and not a.cancelled
    req = GenerationRequest(messages=POEM, logprobs=1)
    c = to_completion(b, req, (1, 2, 3), shared=True)
    assert (c.text, c.finish_reason, c.completion_tokens, c.token_ids, c.cached_prompt_tokens) == (
        "Yo there", "cancelled", 2, (7, 8), 3)

    s = Stream(cancel=threading.Event())
    boom = ChunkSink([s], lambda toks, text: 1 / 0, 0)
    assert boom(chunk(0, "a", 1)) is True and isinstance(s.failure, ZeroDivisionError)
    s2 = Stream(cancel=threading.Event())
    stop = ChunkSink([s2], lambda toks, text: len(toks) >= 2, 0)
    assert stop(chunk(0, "a", 1)) is False and stop(chunk(0, "b", 2)) is True and s2.cancelled
    err = ChunkSink([s2], None, 0)
    assert err({"error": {"message": "slot busy"}}) is True and s2.error == "slot busy"


def test_chunk_sink_reports_live_tokens_per_sample_and_ignores_hook_errors() -> None:
    import threading

    from ttscale.engines.llama_stream import ChunkSink, Stream

    def chunk(index: int, ids: list[int], finish: str | None = None) -> dict:
        return {"choices": [{"index": index, "text": "t" * len(ids), "finish_reason": finish, "logprobs": {
            "content": [{"token": "t", "logprob": -0.1, "id": i, "top_logprobs": []} for i in ids]}}]}

    heard: list[tuple[int, bool]] = []
    ev = threading.Event()
    sink = ChunkSink([Stream(cancel=ev), Stream(cancel=ev)], None, 0, lambda n, done: heard.append((n, done)))
    sink(chunk(0, [1, 2]))
    sink(chunk(1, [3]))
    sink(chunk(0, [], "stop"))
    sink(chunk(1, [4, 5, 6], "length"))
    assert heard == [(2, False), (1, False), (0, True), (3, True)]

    def broken(n: int, done: bool) -> None:
        raise RuntimeError("display gone")

    s = Stream(cancel=threading.Event())
    assert ChunkSink([s], None, 0, broken)(chunk(0, [7], "stop")) is False and s.ids == [7]
