"""Hardening of ``ttscale serve``: hostile numbers and nesting are 400s that keep the connection,
strategy parameters are checked, per-request ceilings refuse or bound a request that would stall
the server, and a non-loopback bind needs an API key."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from test_serve import MODEL, ObservedEngine, root, script, serving
from ttscale.core.errors import ConfigError
from ttscale.serve import ServeConfig
from ttscale.serve.config import API_KEY_ENV, is_loopback
from ttscale.serve.jobs import info_jsonable

USER = [{"role": "user", "content": "How many? votes"}]


def raw_body(model: str = MODEL, **fields: str) -> bytes:
    """A chat body whose extra fields are given as raw JSON text (to send what json.dumps won't)."""
    extra = "".join(f', "{k}": {v}' for k, v in fields.items())
    return f'{{"model": "{model}", "messages": {json.dumps(USER)}{extra}}}'.encode()


def post(client: httpx.Client, body: bytes | dict[str, Any]) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/chat/completions", content=content, headers={"Content-Type": "application/json"})


# ------------------------------------------------------------------------------------------ item 1


HOSTILE = [
    # (raw body, words the 400's message must hold, param)
    (raw_body(max_tokens="1" + "0" * 400), ["max_tokens", "about 401 digits", "--max-request-tokens"], "max_tokens"),
    (raw_body(seed="9" * 5000), ["number too large to read", "4300"], None),
    (raw_body(extra="[" * 100_000 + "]" * 100_000), ["too deeply", "32 levels"], None),
    (raw_body(extra="[" * 40 + "]" * 40), ["too deeply", "32 levels"], None),
    (raw_body(temperature="NaN"), ["NaN is not a JSON value"], None),
    (raw_body(top_p="NaN"), ["NaN is not a JSON value"], None),
    (raw_body(top_p="-Infinity"), ["-Infinity is not a JSON value"], None),
    (raw_body(temperature="1e400"), ["'temperature' must be a finite number", "inf"], "temperature"),
    (raw_body(top_p="1e-400"), [], None),  # reads as 0.0: valid
    (raw_body(n="1e400"), ["'n' must be an integer"], "n"),
    (raw_body(seed=str(2**63)), ["'seed' must be between"], "seed"),
]


def test_hostile_numbers_and_nesting_are_400_and_the_connection_survives() -> None:
    with serving() as (url, _st, eng), httpx.Client(base_url=url, timeout=30) as client:
        for body, words, param in HOSTILE:
            r = post(client, body)
            if not words:
                assert r.status_code == 200, r.text
                continue
            assert r.status_code == 400, (body[:80], r.text[:300])
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["code"] == "invalid_request"
            assert err["param"] == param
            for w in words:
                assert w in err["message"], (w, err["message"])
            assert len(err["message"]) < 400  # huge values are not echoed back
            # the same keep-alive connection still serves the next request
            ok = post(client, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
            assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "reply 0 to: hi"
        assert len(eng.calls) == len(HOSTILE)  # a good request after each 400, and the valid 1e-400 one


@pytest.mark.parametrize(("params", "message"), [
    ({"n": 0}, "ttscale.params.n must be >= 1, got 0"),
    ({"n": -3}, "ttscale.params.n must be >= 1, got -3"),
    ({"max_tokens": 0}, "ttscale.params.max_tokens must be >= 1, got 0"),
    ({"temperature": -1}, "ttscale.params.temperature must be >= 0, got -1.0"),
    ({"top_p": 1.5}, "ttscale.params.top_p must be between 0 and 1, got 1.5"),
    ({"temperature": "nan"}, "ttscale.params.temperature must be a finite number, got nan"),
    ({"temperature": 1e400}, None),  # json.dumps writes Infinity: refused as JSON
    ({"n": 10**400}, "ttscale.params.n=an integer of about 401 digits exceeds this server's limit of 256"),
])
def test_bad_strategy_params_are_400(params: dict[str, Any], message: str | None) -> None:
    with serving() as (url, _st, eng), httpx.Client(base_url=url, timeout=30) as client:
        r = post(client, {"model": f"self_consistency/{MODEL}", "messages": USER, "ttscale": {"params": params}})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["message"].startswith(message or "the request body is not valid JSON: Infinity"), err
        assert not eng.calls


def test_other_strategy_params_are_bounded() -> None:
    with serving() as (url, _st, eng), httpx.Client(base_url=url, timeout=30) as client:
        def error(strategy: str, params: dict[str, Any]) -> str:
            r = post(client, {"model": f"{strategy}/{MODEL}", "messages": USER, "ttscale": {"params": params}})
            assert r.status_code == 400, r.text
            return r.json()["error"]["message"]

        assert error("best_of_infinity", {"draws": 0}) == "ttscale.params.draws must be >= 1, got 0"
        assert error("best_of_infinity", {"draws": 10**6}) == "ttscale.params.draws must be <= 10000, got 1000000"
        assert error("deepconf", {"top_k": 21}) == "ttscale.params.top_k must be <= 20, got 21"
        assert error("self_verify", {"verify_temperature": -0.5}) == (
            "ttscale.params.verify_temperature must be >= 0, got -0.5")
        assert error("particle_filtering", {"resample_temperature": 0}) == (  # the strategy's own check
            "strategy 'particle_filtering': resample_temperature must be > 0, got 0.0")
        assert error("ab_mcts", {"temperatures": [0.5, -1]}) == "ttscale.params.temperatures must be >= 0, got -1.0"
        assert "--max-request-tokens" in error("self_verify", {"verify_max_tokens": 300_000})
        assert "--max-request-generations" in error("self_verify", {"k_tie": 257})
        assert not eng.calls


def test_non_finite_values_in_a_strategy_summary_are_strings() -> None:
    # best_of_infinity's Bayes factor is inf after one unanimous draw: strict JSON has no inf
    with serving() as (url, _st, _eng), httpx.Client(base_url=url, timeout=30) as client:
        r = post(client, {"model": f"best_of_infinity/{MODEL}", "messages": USER,
                          "ttscale": {"params": {"draws": 1, "max_tokens": 8}}})
        assert r.status_code == 200, r.text
        assert r.json()["ttscale"]["extra"]["stat"] == "inf"
    assert info_jsonable({"a": [float("nan"), -float("inf"), 1.5]}) == {"a": ["nan", "-inf", 1.5]}
    assert info_jsonable({(1, 2): 3}) == "{(1, 2): 3}"  # JSON cannot hold the key: the whole value's str


def test_an_unexpected_failure_is_a_500_that_keeps_the_connection() -> None:
    def failing(req: Any, k: int) -> str:
        if "boom" in req.messages[-1]["content"]:
            raise RuntimeError("scripted failure")
        return script(req, k)

    with serving(ObservedEngine(failing, model=MODEL)) as (url, _st, _eng), \
            httpx.Client(base_url=url, timeout=30) as client:
        r = post(client, {"model": MODEL, "messages": [{"role": "user", "content": "boom"}]})
        assert r.status_code == 500
        assert r.json()["error"] == {"message": "internal error: RuntimeError: scripted failure",
                                     "type": "server_error", "param": None, "code": "internal_error"}
        ok = post(client, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "reply 0 to: hi"


# ------------------------------------------------------------------------------------------ item 2


STALL = {"model": f"self_consistency/{MODEL}", "messages": USER, "ttscale": {"params": {"n": 100_000, "max_tokens": 4}}}


def health_times_while(work: threading.Thread, url: str) -> list[float]:
    """Seconds each /health call took while ``work`` ran (at least three calls)."""
    times: list[float] = []
    with httpx.Client(timeout=5) as h:
        while work.is_alive() or len(times) < 3:
            t0 = time.perf_counter()
            assert h.get(f"{root(url)}/health").json()["status"] == "ok"
            times.append(time.perf_counter() - t0)
            time.sleep(0.05)
    return times


def test_the_stalling_request_is_refused_and_health_stays_fast() -> None:
    eng = ObservedEngine(script, model=MODEL, delay_s=0.3)
    with serving(eng) as (url, st, _eng):
        out: dict[str, httpx.Response] = {}
        work = threading.Thread(target=lambda: out.update(r=httpx.post(f"{url}/chat/completions", json=STALL,
                                                                       timeout=30)))
        work.start()
        times = health_times_while(work, url)
        work.join()
        assert max(times) < 1.0, times
        r = out["r"]
        assert r.status_code == 400
        assert r.json()["error"]["message"] == (
            "ttscale.params.n=100000 exceeds this server's limit of 256 generations per request "
            "(set by --max-request-generations / max_request_generations)")
        assert not eng.calls and st.in_flight == 0


def test_a_runaway_strategy_is_bounded_by_the_default_budget_and_health_stays_fast() -> None:
    # rsa with 1000 rounds of 4 would draw 4000 samples; the server's ceiling (16) is its budget
    eng = ObservedEngine(script, model=MODEL, delay_s=0.05)
    with serving(eng, max_request_generations=16, max_request_tokens=100) as (url, _st, _eng):
        body = {"model": f"rsa/{MODEL}", "messages": USER, "ttscale": {"params": {"n": 4, "rounds": 1000,
                                                                                  "max_tokens": 4}}}
        out: dict[str, httpx.Response] = {}
        work = threading.Thread(target=lambda: out.update(r=httpx.post(f"{url}/chat/completions", json=body,
                                                                       timeout=30)))
        work.start()
        times = health_times_while(work, url)
        work.join()
        assert max(times) < 1.0, times
        r = out["r"].json()
        assert r["ttscale"]["budget"] == {"max_generations": 16, "max_generated_tokens": 100}
        assert r["ttscale"]["stopped_by_budget"] is True
        # 16 samples of at most 4 tokens (the scripted engine cuts "Let me think. ..." at 4 words)
        assert (r["ttscale_usage"]["generations"], r["ttscale_usage"]["generated_tokens"]) == (16, 64)
        assert sum(c.n for c in eng.calls) == 16


def test_request_ceilings_refuse_passthrough_and_cap_budgets() -> None:
    with serving(max_request_generations=8, max_request_tokens=64) as (url, _st, eng), \
            httpx.Client(base_url=url, timeout=30) as client:
        r = post(client, {"model": MODEL, "messages": USER, "n": 9})
        assert r.json()["error"] == {
            "message": "n=9 exceeds this server's limit of 8 generations per request (set by "
                       "--max-request-generations / max_request_generations)",
            "type": "invalid_request_error", "param": "n", "code": "invalid_request"}
        r = post(client, {"model": MODEL, "messages": USER, "max_completion_tokens": 65})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_completion_tokens"
        assert "limit of 64 generated tokens per request (set by --max-request-tokens" in r.json()["error"]["message"]
        r = post(client, {"model": f"self_consistency/{MODEL}", "messages": USER, "max_tokens": 65})
        assert r.status_code == 400 and "--max-request-tokens" in r.json()["error"]["message"]
        assert not eng.calls
        # a request's own budget may lower the ceilings, never raise them; defaults above them are clipped
        r = post(client, {"model": f"self_consistency/{MODEL}", "messages": USER,
                          "ttscale": {"budget": {"max_generations": 100, "max_generated_tokens": 32}}})
        assert r.status_code == 200, r.text
        assert r.json()["ttscale"]["budget"] == {"max_generations": 8, "max_generated_tokens": 32}
        assert (eng.calls[-1].n, eng.calls[-1].max_tokens) == (8, 4)  # n=8 default; 32 tokens shared by 8


def test_request_ceilings_in_config_files_and_flags(tmp_path: Any) -> None:
    from ttscale.serve.command import build_config

    f = tmp_path / "serve.yaml"
    f.write_text("max_generations: 5\nmax_generated_tokens: 50\n")  # the earlier names still read
    cfg = build_config(f)
    assert (cfg.max_request_generations, cfg.max_request_tokens) == (5, 50)
    assert build_config(f, max_request_generations=7).max_request_generations == 7
    assert (ServeConfig().max_request_generations, ServeConfig().max_request_tokens) == (256, 262144)
    for bad in (0, None, 2.5):
        with pytest.raises(ConfigError, match="max_request_generations must be an integer >= 1"):
            ServeConfig(max_request_generations=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ item 7


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.3.4.5", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "192.168.1.10", "example.org"):
        assert not is_loopback(host), host
    assert ServeConfig(host="0.0.0.0").open_bind_problem() is not None
    assert ServeConfig(host="0.0.0.0", api_key="k").open_bind_problem() is None
    assert ServeConfig(host="0.0.0.0", allow_no_auth=True).open_bind_problem() is None
    assert ServeConfig().open_bind_problem() is None


def _serve_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    import typer
    import uvicorn
    from typer.testing import CliRunner

    from ttscale.serve.command import serve_command

    started: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw))
    app = typer.Typer()
    app.command("serve")(serve_command)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["serve", "--engine", "scripted", *args], env={API_KEY_ENV: None})
    return res, started


def test_non_loopback_bind_without_api_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    res, started = _serve_cli(["--host", "0.0.0.0"], monkeypatch)
    assert res.exit_code == 2
    assert "refusing to serve on '0.0.0.0' without an API key" in res.output
    assert "--api-key" in res.output and "--allow-no-auth" in res.output
    assert not started
    res, started = _serve_cli(["--host", "0.0.0.0", "--allow-no-auth"], monkeypatch)
    assert res.exit_code == 0, res.output
    assert started[0]["host"] == "0.0.0.0"
    res, started = _serve_cli(["--host", "0.0.0.0", "--api-key", "sk-1"], monkeypatch)
    assert res.exit_code == 0 and started[0]["host"] == "0.0.0.0"
    res, started = _serve_cli(["--max-request-generations", "4", "--max-request-tokens", "99"], monkeypatch)
    assert res.exit_code == 0 and started[0]["host"] == "127.0.0.1"
