"""``ttscale serve`` on loopback, called with the official ``openai`` client (and raw httpx where the
client would hide what is being tested: malformed bodies, disconnects)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from ttscale.core.protocols import Verifier
from ttscale.core.types import GenerationRequest
from ttscale.engines.scripted import ScriptedEngine, ScriptedReply
from ttscale.serve import ServeConfig, create_app
from ttscale.serve.app import ServeState, text_pieces
from ttscale.serve.command import build_config, serve_in_thread
from ttscale.serve.metrics import Metrics

MODEL = "tiny-upstream"
KEY = "sk-test-123"

# The k-th sample for a question ending in "votes" answers 5, 5, 7, 5, 9, ...
VOTES = ["5", "5", "7", "5", "9"]


def script(req: GenerationRequest, k: int) -> str | ScriptedReply:
    last = req.messages[-1]["content"] if req.messages else (req.raw_prompt or "")
    if "votes" in last:
        return f"Let me think.\n\nSo the answer is \\boxed{{{VOTES[k % len(VOTES)]}}}"
    if "echo" in last:
        return ScriptedReply("alpha beta gamma STOP delta", logprobs=[-0.1, -0.2, -0.3, -0.4, -0.5])
    return f"reply {k} to: {last}"


class ObservedEngine(ScriptedEngine):
    """A scripted engine that records (thread-safely) when a generate call starts and is cancelled."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.cancel_count = 0

    async def generate(self, req: GenerationRequest) -> Any:
        self.started.set()
        try:
            return await super().generate(req)
        except asyncio.CancelledError:
            self.cancel_count += 1
            self.cancelled.set()
            raise


@contextmanager
def serving(engine: ScriptedEngine | None = None, **cfg: Any) -> Iterator[tuple[str, ServeState, ScriptedEngine]]:
    eng = engine or ObservedEngine(script, model=MODEL)
    app = create_app(ServeConfig(**cfg), engine=eng)
    with serve_in_thread(app) as url:
        yield url, app.state.ttscale, eng


def client(url: str, key: str = "none", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=kw.pop("timeout", 30), **kw)


def root(url: str) -> str:
    return url.removesuffix("/v1")


# ------------------------------------------------------------------------------------------ plain


def test_plain_passthrough_honours_sampling_fields() -> None:
    with serving() as (url, _st, eng):
        c = client(url)
        r = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "say hello"}], n=2, temperature=0.3, top_p=0.9,
            max_tokens=3, stop=["never"], seed=42,
        )
        assert [ch.message.content for ch in r.choices] == ["reply 0 to:", "reply 1 to:"]
        assert [ch.finish_reason for ch in r.choices] == ["length", "length"]
        assert r.model == MODEL and r.object == "chat.completion"
        req = eng.calls[-1]
        assert (req.n, req.temperature, req.top_p, req.max_tokens, req.stop, req.seed) == (
            2, 0.3, 0.9, 3, ("never",), 42)
        assert req.messages == ({"role": "user", "content": "say hello"},)
        assert r.usage is not None
        assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (2, 6, 8)
        assert r.model_extra["ttscale"]["strategy"] is None

        # stop strings and logprobs (chat format)
        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "echo"}],
                                      stop="STOP", logprobs=True, top_logprobs=1)
        assert r.choices[0].message.content == "alpha beta gamma"
        lp = r.choices[0].logprobs.content
        assert [t.token for t in lp] == ["alpha", "beta", "gamma"]
        assert [t.logprob for t in lp] == [-0.1, -0.2, -0.3]
        assert lp[0].top_logprobs[0].token == "alpha"


def test_plain_completions_endpoint_uses_raw_prompt() -> None:
    with serving() as (url, _st, eng):
        r = client(url).completions.create(model=MODEL, prompt="echo this", max_tokens=10, logprobs=2)
        assert r.choices[0].text == "alpha beta gamma STOP delta"
        assert r.choices[0].logprobs.tokens == ["alpha", "beta", "gamma", "STOP", "delta"]
        assert r.object == "text_completion"
        assert eng.calls[-1].raw_prompt == "echo this" and not eng.calls[-1].messages


# ------------------------------------------------------------------------------------------ strategies


def test_strategy_prefixed_self_consistency_majority_and_usage() -> None:
    with serving() as (url, _st, eng):
        question = "How many? votes"
        r = client(url).chat.completions.create(
            model=f"self_consistency/{MODEL}", messages=[{"role": "user", "content": question}],
            extra_body={"ttscale": {"params": {"n": 5, "max_tokens": 64}}},
        )
        # samples answer 5, 5, 7, 5, 9 -> majority 5; the first sample with it is returned in full
        text = "Let me think. So the answer is \\boxed{5}"  # the scripted engine joins words by spaces
        assert r.choices[0].message.content == text
        assert r.choices[0].finish_reason == "stop"
        tt = r.model_extra["ttscale"]
        assert tt["strategy"] == "self_consistency" and tt["answer"] == "5" and tt["candidates"] == 5
        assert tt["params"] == {"n": 5, "temperature": 0.7, "top_p": 1.0, "max_tokens": 64}
        # one engine request of n=5: prompt = 3 words once, 5 samples x 8 words
        assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 40, 43)
        tu = r.model_extra["ttscale_usage"]
        assert (tu["prompt_tokens"], tu["generated_tokens"], tu["generations"], tu["engine_calls"]) == (3, 40, 5, 1)
        assert tu["verifier_prompt_tokens"] == tu["verifier_generated_tokens"] == 0
        assert tu["total_tokens"] == 43 and tu["wall_time_s"] >= 0
        assert eng.calls[-1].n == 5 and eng.calls[-1].max_tokens == 64


def test_strategy_via_extra_body_request_fields_and_budget() -> None:
    with serving() as (url, _st, eng):
        r = client(url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "votes"}], temperature=0.2, max_tokens=50,
            extra_body={"ttscale": {"strategy": "self_consistency", "params": {"n": 5},
                                    "budget": {"max_generations": 3}}},
        )
        tt = r.model_extra["ttscale"]
        assert tt["strategy"] == "self_consistency"
        # request fields become the strategy's params of the same name
        assert tt["params"]["temperature"] == 0.2 and tt["params"]["max_tokens"] == 50
        assert tt["budget"] == {"max_generations": 3, "max_generated_tokens": 262144}  # the server default caps tokens
        # the budget clips n=5 to 3 samples: 5, 5, 7
        assert eng.calls[-1].n == 3
        assert r.model_extra["ttscale_usage"]["generations"] == 3
        assert tt["answer"] == "5"


def test_unknown_strategy_or_param_is_400_with_registry_message() -> None:
    with serving() as (url, _st, _eng):
        c = client(url)
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=f"nope/{MODEL}", messages=[{"role": "user", "content": "x"}])
        assert "unknown strategy 'nope'" in e.value.message and "self_consistency" in e.value.message
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                      extra_body={"ttscale": {"strategy": "nope"}})
        assert "unknown strategy 'nope'" in e.value.message
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=f"self_consistency/{MODEL}", messages=[{"role": "user", "content": "x"}],
                                      extra_body={"ttscale": {"params": {"bogus": 1}}})
        assert "has no parameter bogus" in e.value.message
        assert e.value.body["code"] == "invalid_request"  # OpenAI's error shape
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=f"self_consistency/{MODEL}", messages=[{"role": "user", "content": "x"}],
                                      extra_body={"ttscale": {"params": {"n": "many"}}})
        assert "not a valid int" in e.value.message


class JudgeVerifier(Verifier):
    """Asks the engine once per candidate (charged as verifier tokens); longer answers score higher."""

    name = "judge"

    async def score(self, problem: Any, candidates: Any, ctx: Any) -> list[float]:
        for c in candidates:
            await ctx.generate(GenerationRequest(messages=({"role": "user", "content": f"judge {c.text}"},),
                                                 max_tokens=4), role="verifier")
        return [float(len(c.text)) for c in candidates]


def test_usage_counts_verifier_tokens() -> None:
    eng = ObservedEngine(script, model=MODEL)
    app = create_app(ServeConfig(), engine=eng, make_verifier=lambda name: JudgeVerifier())
    with serve_in_thread(app) as url:
        r = client(url).chat.completions.create(
            model=f"best_of_n/{MODEL}", messages=[{"role": "user", "content": "two words"}],
            extra_body={"ttscale": {"params": {"n": 2, "verifier": "judge"}}},
        )
    # policy: one request, prompt 2 words, samples "reply 0 to: two words" / "reply 1 ..." (5 words each);
    # verifier: two requests of max 4 words, prompts "judge reply k to: two words" (6 words each)
    tu = r.model_extra["ttscale_usage"]
    assert (tu["prompt_tokens"], tu["generated_tokens"]) == (2, 10)
    assert (tu["verifier_calls"], tu["verifier_prompt_tokens"], tu["verifier_generated_tokens"]) == (2, 12, 8)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (14, 18, 32)
    assert r.model_extra["ttscale"]["strategy"] == "best_of_n"
    assert r.choices[0].message.content == "reply 0 to: two words"


# ------------------------------------------------------------------------------------------ streaming


def test_streaming_progress_then_final_text() -> None:
    eng = ObservedEngine(script, model=MODEL, delay_s=0.35)
    with serving(eng, heartbeat_s=0.1) as (url, _st, _eng):
        stream = client(url).chat.completions.create(
            model=f"self_consistency/{MODEL}", messages=[{"role": "user", "content": "votes"}], stream=True,
            stream_options={"include_usage": True}, extra_body={"ttscale": {"params": {"n": 5}}},
        )
        chunks = list(stream)
    progress = [ch.model_extra["ttscale_progress"] for ch in chunks if "ttscale_progress" in ch.model_extra]
    events = [p["event"] for p in progress]
    assert events[0] == "start" and "heartbeat" in events and events[-1] == "generate"
    assert progress[-1]["generations"] == 5 and progress[-1]["generated_tokens"] == 40
    first_text = next(i for i, ch in enumerate(chunks) if ch.choices and ch.choices[0].delta.content)
    last_progress = max(i for i, ch in enumerate(chunks) if "ttscale_progress" in ch.model_extra)
    assert last_progress < first_text
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Let me think. So the answer is \\boxed{5}"
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert finals[0].model_extra["ttscale"]["answer"] == "5"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (1, 40)
    assert all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)


def test_streaming_passthrough_and_completions() -> None:
    with serving() as (url, _st, _eng):
        c = client(url)
        chunks = list(c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a b"}],
                                                stream=True, n=2))
        by_index: dict[int, str] = {}
        for ch in chunks:
            for choice in ch.choices:
                by_index[choice.index] = by_index.get(choice.index, "") + (choice.delta.content or "")
        assert by_index == {0: "reply 0 to: a b", 1: "reply 1 to: a b"}
        chunks = list(c.completions.create(model=MODEL, prompt="echo", stream=True, max_tokens=10))
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "alpha beta gamma STOP delta"


def test_text_pieces_round_trip() -> None:
    for s in ["", "a", "  a b\n\nc  ", "x\n", "\n"]:
        assert "".join(text_pieces(s)) == s


# ------------------------------------------------------------------------------------------ multi-turn


def test_multi_turn_and_system_prompt_reach_upstream_intact() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": [{"type": "text", "text": "And times "}, {"type": "text", "text": "3? votes"}]},
    ]
    expected = tuple({**m, "content": "And times 3? votes"} if i == 3 else m for i, m in enumerate(messages))
    with serving() as (url, _st, eng):
        c = client(url)
        c.chat.completions.create(model=MODEL, messages=messages)
        assert eng.calls[-1].messages == expected
        r = c.chat.completions.create(model=f"self_consistency/{MODEL}", messages=messages,
                                      extra_body={"ttscale": {"params": {"n": 3}}})
        assert eng.calls[-1].messages == expected
        assert r.model_extra["ttscale"]["answer"] == "5"
        # a prompt without a system message gets none added (config.system_prompt is None)
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert eng.calls[-1].messages == ({"role": "user", "content": "hi"},)


def test_server_system_prompt_only_when_client_has_none() -> None:
    with serving(system_prompt="Be brief.") as (url, _st, eng):
        c = client(url)
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert eng.calls[-1].messages[0] == {"role": "system", "content": "Be brief."}
        c.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "Mine."},
                                                         {"role": "user", "content": "hi"}])
        assert eng.calls[-1].messages[0] == {"role": "system", "content": "Mine."}
        assert len(eng.calls[-1].messages) == 2


# ------------------------------------------------------------------------------------------ limits


def test_api_key_required_when_set() -> None:
    with serving(api_key=KEY) as (url, _st, _eng):
        with pytest.raises(openai.AuthenticationError) as e:
            client(url, key="wrong").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 401 and e.value.body["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            client(url, key="wrong").models.list()
        r = httpx.post(f"{url}/chat/completions", json={"model": MODEL, "messages": []})
        assert r.status_code == 401
        r = client(url, key=KEY).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content == "reply 0 to: x"
        assert httpx.get(f"{root(url)}/health").status_code == 200  # health stays open


def test_over_limit_gets_429_with_retry_after() -> None:
    eng = ObservedEngine(script, model=MODEL, delay_s=1.5)
    with serving(eng, max_concurrency=1, retry_after_s=2) as (url, st, _eng):
        result: dict[str, Any] = {}

        def first() -> None:
            result["r"] = client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "1"}])

        t = threading.Thread(target=first)
        t.start()
        assert eng.started.wait(10)
        with pytest.raises(openai.RateLimitError) as e:
            client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "2"}])
        assert e.value.status_code == 429
        assert e.value.response.headers["retry-after"] == "2"
        assert e.value.body["code"] == "too_many_requests"
        assert httpx.get(f"{url}/models").status_code == 200  # only generation requests count
        t.join(10)
        assert result["r"].choices[0].message.content == "reply 0 to: 1"
        assert st.in_flight == 0
        # the slot is free again
        r = client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "3"}])
        assert r.choices[0].message.content == "reply 0 to: 3"
        assert len(eng.calls) == 2  # the rejected request never reached the engine


def test_malformed_bodies_get_openai_shaped_errors() -> None:
    with serving(max_body_bytes=4096) as (url, _st, eng):
        def post(content: bytes | str) -> httpx.Response:
            return httpx.post(f"{url}/chat/completions", content=content, headers={"Content-Type": "application/json"})

        for bad in [b"{not json", b"[1, 2]", json.dumps({"messages": [{"role": "user", "content": "x"}]}),
                    json.dumps({"model": MODEL}), json.dumps({"model": MODEL, "messages": [{"role": "alien",
                                                                                         "content": "x"}]}),
                    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": "two"}),
                    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 9}),
                    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                "ttscale": {"budget": {"max_generations": 0}}})]:
            r = post(bad)
            assert r.status_code == 400, (bad, r.text)
            err = r.json()["error"]
            assert set(err) >= {"message", "type", "code"} and err["type"] == "invalid_request_error"
        r = post(json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}))
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        r = httpx.get(f"{url}/nowhere")
        assert r.status_code == 404 and "error" in r.json()
        with pytest.raises(openai.BadRequestError):
            client(url).chat.completions.create(model=MODEL, messages=[])
        assert not eng.calls


def test_timeout_gives_504_and_cancels_upstream() -> None:
    eng = ObservedEngine(script, model=MODEL, delay_s=30)
    with serving(eng, timeout_s=0.5) as (url, st, _eng):
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as e:
            client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 504 and e.value.body["type"] == "timeout"
        assert time.monotonic() - t0 < 10
        assert eng.cancelled.wait(5)
        # streaming: the error arrives as an SSE error event, which the client raises
        eng.cancelled.clear()
        with pytest.raises(openai.APIError):
            list(client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                     stream=True))
        assert eng.cancelled.wait(5)
        assert 'ttscale_requests_cancelled_total{reason="timeout"} 2' in st.metrics.render()


def test_client_disconnect_cancels_upstream_work() -> None:
    eng = ObservedEngine(script, model=MODEL, delay_s=30)
    with serving(eng, disconnect_poll_s=0.05) as (url, st, _eng):
        body = {"model": f"self_consistency/{MODEL}", "messages": [{"role": "user", "content": "votes"}]}
        # non-streaming: the client gives up (read timeout closes the connection)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/chat/completions", json=body, timeout=httpx.Timeout(10, read=0.5))
        assert eng.cancelled.wait(5), "the engine call was not cancelled after the client left"
        # streaming: read the first events, then hang up
        eng.cancelled.clear()
        eng.started.clear()
        with httpx.Client(timeout=10) as h, h.stream("POST", f"{url}/chat/completions",
                                                     json={**body, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(ln for ln in lines if ln.startswith("data: "))
            assert json.loads(first[6:])["object"] == "chat.completion.chunk"
            assert eng.started.wait(5)
        assert eng.cancelled.wait(5), "the engine call was not cancelled after the stream was closed"
        assert eng.cancel_count == 2
        deadline = time.monotonic() + 5
        while st.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        assert st.in_flight == 0
        assert 'ttscale_requests_cancelled_total{reason="disconnect"} 2' in st.metrics.render()


# ------------------------------------------------------------------------------------------ info


def test_models_health_and_metrics() -> None:
    with serving(api_key=KEY) as (url, _st, _eng):
        c = client(url, key=KEY)
        ids = [m.id for m in c.models.list()]
        assert ids[0] == MODEL
        assert f"self_consistency/{MODEL}" in ids and f"best_of_n/{MODEL}" in ids
        assert c.models.retrieve(f"self_consistency/{MODEL}").id == f"self_consistency/{MODEL}"
        c.chat.completions.create(model=f"self_consistency/{MODEL}", messages=[{"role": "user", "content": "votes"}],
                                  extra_body={"ttscale": {"params": {"n": 5}}})
        with pytest.raises(openai.AuthenticationError):
            client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        h = httpx.get(f"{root(url)}/health").json()
        assert h["status"] == "ok" and h["model"] == MODEL and h["in_flight"] == 0
        m = httpx.get(f"{root(url)}/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = m.text
        assert 'ttscale_requests_total{endpoint="/v1/chat/completions",status="200"} 1' in text
        assert 'ttscale_requests_total{endpoint="/v1/chat/completions",status="401"} 1' in text
        assert 'ttscale_requests_rejected_total{reason="unauthorized"} 1' in text
        assert 'ttscale_strategy_requests_total{strategy="self_consistency"} 1' in text
        assert 'ttscale_tokens_total{kind="generated"} 40' in text
        assert "ttscale_generations_total 5" in text
        assert "# TYPE ttscale_request_duration_seconds histogram" in text
        assert 'ttscale_request_duration_seconds_count{endpoint="/v1/chat/completions"} 2' in text
        for line in text.splitlines():  # every sample line is NAME{labels} VALUE
            if not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                float(value)
                assert name.startswith("ttscale_")


def test_metrics_render_escapes_labels() -> None:
    m = Metrics()
    m.observe_request('a"b', 200, 0.01)
    assert 'endpoint="a\\"b"' in m.render()


def test_build_config_merges_file_and_flags(tmp_path: Any) -> None:
    f = tmp_path / "serve.yaml"
    f.write_text("engine: scripted\nmodel: s.json\nport: 9000\nmax_concurrency: 4\nengine_params: {delay_s: 0.1}\n")
    cfg = build_config(f, port=9100, engine_params={"x": "1"}, api_key=None)
    assert (cfg.engine, cfg.model, cfg.port, cfg.max_concurrency) == ("scripted", "s.json", 9100, 4)
    assert cfg.engine_params == {"delay_s": 0.1, "x": "1"}
    from ttscale.core.errors import ConfigError

    f.write_text("bogus: 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        build_config(f)
    with pytest.raises(ConfigError, match="max_concurrency"):
        build_config(None, max_concurrency=0)


def test_serve_command_is_a_typer_command() -> None:
    import typer
    from typer.testing import CliRunner

    from ttscale.serve.command import serve_command

    app = typer.Typer()
    app.command("serve")(serve_command)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["serve", "--help"])
    assert res.exit_code == 0
    for flag in ("--engine", "--model", "--host", "--port", "--api-key", "--max-concurrency", "--timeout-s",
                 "--engine-param", "--config"):
        assert flag in res.output


# ------------------------------------------------------------------------------------------ real model


@pytest.mark.model
def test_embedded_smollm_end_to_end() -> None:
    pytest.importorskip("xllamacpp")
    try:
        from ttscale.engines import make_engine

        eng = make_engine("embedded", "smollm2-135m", {"n_parallel": 4})
    except Exception as e:  # model files not installed here
        pytest.skip(f"embedded smollm2-135m unavailable: {e}")
    try:
        with serve_in_thread(create_app(ServeConfig(), engine=eng)) as url:
            c = client(url, timeout=300)
            r = c.chat.completions.create(model=eng.model, messages=[{"role": "user", "content": "What is 2+3?"}],
                                          max_tokens=32, temperature=0)
            assert r.choices[0].message.content and r.usage.completion_tokens > 0
            r = c.chat.completions.create(model=f"self_consistency/{eng.model}",
                                          messages=[{"role": "system", "content": "Answer briefly."},
                                                    {"role": "user", "content": "What is 2+3?"}],
                                          extra_body={"ttscale": {"params": {"n": 3, "max_tokens": 48}}})
            tu = r.model_extra["ttscale_usage"]
            assert tu["generations"] == 3 and r.usage.completion_tokens == tu["generated_tokens"] > 0
            chunks = list(c.chat.completions.create(model=f"self_consistency/{eng.model}",
                                                    messages=[{"role": "user", "content": "Say hi."}],
                                                    stream=True, extra_body={"ttscale": {"params": {"n": 2,
                                                                                                    "max_tokens": 16}}}))
            assert any("ttscale_progress" in ch.model_extra for ch in chunks)
    finally:
        asyncio.run(eng.aclose())
