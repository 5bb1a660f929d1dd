"""The OpenAI-compatible server: ``create_app(config, engine=...)`` returns a FastAPI app.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` (and
``/v1/models/{id}``), ``GET /health``, ``GET /metrics`` (Prometheus text).

How a request is served:

- **Strategy selection**: model ``STRATEGY/UPSTREAM`` (the prefix is a registered strategy), or
  ``"ttscale": {"strategy", "params", "budget"}`` in the body (the openai client's ``extra_body``).
  Any other model name is a plain pass-through: one generation on the upstream engine with the
  request's ``n``, ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed`` and ``logprobs``.
  With a strategy, ``temperature``/``top_p``/``max_tokens`` set in the request become the strategy's
  parameters of the same name unless ``ttscale.params`` sets them.
- **Messages** go to the strategy as ``Problem(messages=...)`` unchanged (system prompt and every
  turn); ``config.system_prompt`` is added only when the request has no system message.
- **Cost**: every engine call of the request goes through one :class:`~ttscale.core.context.Context`
  and its meter; ``usage`` counts all of it (policy and verifier) and ``ttscale_usage`` breaks it
  down. ``ttscale`` names the strategy, its params, the budget and the extracted answer.
- **Streaming**: the strategy runs as a task; each engine call it makes (observed by
  :class:`ObservedContext`) and a heartbeat every ``heartbeat_s`` become chunks whose delta is empty
  and which carry ``ttscale_progress``; then the chosen text streams as ordinary deltas, a finish
  chunk, an optional usage chunk (``stream_options.include_usage``) and ``[DONE]``.
- **Limits** (:class:`GuardMiddleware`, before any work): API key (401), body size (413),
  requests in flight (429 + ``Retry-After``, never queued). Per-request timeout gives 504.
- **Cancellation**: a client that goes away cancels the strategy task (so the engine's pending
  ``generate`` calls are cancelled): streaming through Starlette's disconnect listener and the
  generator's ``finally``, non-streaming by polling ``request.is_disconnected()`` while waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttscale.core.budget import Budget, CostMeter
from ttscale.core.context import Context, Role
from ttscale.core.errors import ConfigError, EngineError, TtscaleError
from ttscale.core.protocols import AnswerSpace, Engine, Verifier
from ttscale.core.registry import Entry
from ttscale.core.types import Completion, Cost, GenerationRequest, Problem, TokenLogprob
from ttscale.serve.config import ServeConfig
from ttscale.serve.metrics import CONTENT_TYPE, Metrics, render_replicas
from ttscale.strategies.base import STRATEGIES, Outcome, load_strategies

GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")
_ROLES = {"system", "user", "assistant", "tool", "developer"}


# ------------------------------------------------------------------------------------------ errors


class ApiError(Exception):
    """An error answered in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", "invalid_request", param)


class ClientGone(Exception):
    """The client disconnected; nobody is listening for a response."""


# ------------------------------------------------------------------------------------------ state


class SimpleAnswers:
    """Fallback answer space when ``ttscale.verifiers.math_answers`` is not available: the last
    ``\\boxed{...}`` (else the last number) and exact equality after whitespace normalisation."""

    _NUM = re.compile(r"-?\d+(?:[.,]\d+)*(?:/\d+)?")

    def extract(self, text: str) -> str | None:
        i = text.rfind("\\boxed{")
        if i >= 0:
            depth, j = 1, i + 7
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth == 0:
                return text[i + 7: j - 1].strip()
        nums = self._NUM.findall(text)
        return nums[-1].replace(",", "") if nums else None

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        seen: dict[str, int] = {}
        out: list[int | None] = []
        for a in answers:
            if a is None:
                out.append(None)
                continue
            key = " ".join(a.split())
            out.append(seen.setdefault(key, len(seen)))
        return out


def default_answers() -> AnswerSpace:
    try:
        from ttscale.verifiers.math_answers import MathAnswers
    except ImportError:
        return SimpleAnswers()
    return MathAnswers()


@dataclass
class ServeState:
    """What the routes share: config, engine, answer space, metrics."""

    config: ServeConfig
    engine: Engine | None
    answers: AnswerSpace
    metrics: Metrics
    make_verifier: Callable[[str], Verifier] | None = None
    owns_engine: bool = False
    in_flight: int = 0
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def upstream(self) -> Engine:
        if self.engine is None:
            raise ApiError(503, "the upstream engine is not loaded yet", "server_error", "engine_not_ready")
        return self.engine

    @property
    def served_model(self) -> str:
        if self.config.served_model_name:
            return self.config.served_model_name
        if self.engine is not None:
            return self.engine.model
        return self.config.model or self.config.engine

    def verifier_factory(self) -> Callable[[str], Verifier]:
        if self.make_verifier is not None:
            return self.make_verifier

        def make(name: str) -> Verifier:
            try:
                from ttscale.verifiers import make_verifier
            except ImportError as e:  # pragma: no cover - depends on the installed verifiers
                raise ConfigError(f"verifier {name!r} is unavailable: {e}") from e
            try:
                return make_verifier(name, self.upstream, self.config.verifier_params.get(name))
            except ImportError as e:
                raise ConfigError(f"verifier {name!r} is unavailable: {e}") from e

        return make


# ------------------------------------------------------------------------------------------ context


@dataclass
class ObservedContext(Context):
    """A context that reports every finished engine call (policy or verifier) to ``on_generate``,
    and whose RNG depends on the request's seed only when the client gave one (reproducible)."""

    on_generate: Callable[[str], None] | None = None
    rng_key: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rng_key is not None:
            import random

            self.rng = random.Random(self.rng_key)

    async def generate(self, req: GenerationRequest, *, role: Role = "policy",
                       engine: Engine | None = None) -> list[Completion]:
        out = await super().generate(req, role=role, engine=engine)
        if self.on_generate is not None:
            self.on_generate(role)
        return out


# ------------------------------------------------------------------------------------------ middleware


class GuardMiddleware:
    """Pure ASGI middleware: API key, body size, in-flight limit and request metrics. It runs
    before any routing work and covers a streaming response until its last byte."""

    def __init__(self, app: Any, state: ServeState) -> None:
        self.app = app
        self.state = state

    async def _reply(self, scope: Any, receive: Any, send: Any, err: ApiError) -> None:
        await err.response()(scope, receive, send)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st = self.state
        cfg = st.config
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        endpoint = path if path in (*GENERATION_PATHS, "/v1/models", "/health", "/metrics") else (
            "/v1/models/{id}" if path.startswith("/v1/models/") else "other")
        t0 = time.perf_counter()
        status = {"code": 0}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        acquired = False
        try:
            if path.startswith("/v1/") and cfg.api_key:
                headers = dict(scope.get("headers") or ())
                auth = headers.get(b"authorization", b"").decode("latin-1")
                scheme, _, token = auth.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                         cfg.api_key.encode()):
                    st.metrics.reject("unauthorized")
                    await self._reply(scope, receive, send_wrapper, ApiError(
                        401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                        "authentication_error", "invalid_api_key"))
                    return
            if method == "POST" and path in GENERATION_PATHS:
                headers = dict(scope.get("headers") or ())
                try:
                    length = int(headers.get(b"content-length", b"-1"))
                except ValueError:
                    length = -1
                if length > cfg.max_body_bytes:
                    st.metrics.reject("too_large")
                    await self._reply(scope, receive, send_wrapper, _too_large(cfg.max_body_bytes))
                    return
                if st.in_flight >= cfg.max_concurrency:
                    st.metrics.reject("over_limit")
                    await self._reply(scope, receive, send_wrapper, ApiError(
                        429, f"server busy: {st.in_flight} requests in flight (limit {cfg.max_concurrency}); "
                             f"retry after {cfg.retry_after_s} s",
                        "rate_limit_exceeded", "too_many_requests",
                        headers={"Retry-After": str(cfg.retry_after_s)}))
                    return
                st.in_flight += 1
                st.metrics.in_flight = st.in_flight
                acquired = True
                body = bytearray()
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    body.extend(msg.get("body", b""))
                    if len(body) > cfg.max_body_bytes:
                        st.metrics.reject("too_large")
                        await self._reply(scope, receive, send_wrapper, _too_large(cfg.max_body_bytes))
                        return
                    if not msg.get("more_body", False):
                        break
                receive = _replay(bytes(body), receive)
            await self.app(scope, receive, send_wrapper)
        finally:
            if acquired:
                st.in_flight -= 1
                st.metrics.in_flight = st.in_flight
            st.metrics.observe_request(endpoint, status["code"] or 499, time.perf_counter() - t0)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body larger than {limit} bytes", "invalid_request_error", "request_too_large")


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# ------------------------------------------------------------------------------------------ request parsing


@dataclass
class Plan:
    """A validated generation request."""

    kind: str  # "chat" | "completion"
    id: str
    model: str
    entry: Entry[Any] | None
    params: Any
    budget: Budget
    messages: tuple[dict[str, str], ...] = ()
    prompt: str | None = None
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None
    stream: bool = False
    include_usage: bool = False

    @property
    def strategy(self) -> str | None:
        return self.entry.name if self.entry is not None else None

    def params_dict(self) -> dict[str, Any]:
        if self.params is None:
            return {}
        return _jsonable(dataclasses.asdict(self.params))


def _jsonable(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj, default=str))
    except (TypeError, ValueError):
        return str(obj)


def _num(body: Mapping[str, Any], key: str, kind: type, lo: float | None = None, hi: float | None = None,
         default: Any = None) -> Any:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or (kind is int and not float(v).is_integer()):
        raise bad_request(f"'{key}' must be {'an integer' if kind is int else 'a number'}, got {v!r}", key)
    v = kind(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise bad_request(f"'{key}' must be {rng}, got {v!r}", key)
    return v


def _content(msg: Mapping[str, Any], i: int) -> str:
    c = msg.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        parts = []
        for p in c:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                kind = p.get("type") if isinstance(p, Mapping) else type(p).__name__
                raise bad_request(f"messages[{i}]: content part of type {kind!r} is not supported "
                                  "(text only)", "messages")
        return "".join(parts)
    raise bad_request(f"messages[{i}].content must be a string or a list of text parts", "messages")


def _messages(raw: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping):
            raise bad_request(f"messages[{i}] must be an object", "messages")
        role = m.get("role")
        if role not in _ROLES:
            raise bad_request(f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}, got {role!r}",
                              "messages")
        if m.get("tool_calls"):
            raise bad_request(f"messages[{i}]: tool calls are not supported by ttscale serve", "messages")
        out.append({"role": "system" if role == "developer" else role, "content": _content(m, i)})
    return tuple(out)


def _stop(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(s, str) for s in v) and len(v) <= 16:
        return tuple(s for s in v if s)
    raise bad_request("'stop' must be a string or a list of at most 16 strings", "stop")


def parse_plan(body: Any, kind: str, state: ServeState) -> Plan:
    """Validate a request body; unknown fields are ignored (as other OpenAI-compatible servers do)."""
    cfg = state.config
    if not isinstance(body, Mapping):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (a model name, or STRATEGY/MODEL)", "model")
    tt = body.get("ttscale") or {}
    if not isinstance(tt, Mapping):
        raise bad_request("'ttscale' must be an object {strategy, params, budget}", "ttscale")
    unknown = sorted(set(tt) - {"strategy", "params", "budget"})
    if unknown:
        raise bad_request(f"'ttscale' has unknown key(s) {', '.join(unknown)}; known: strategy, params, budget",
                          "ttscale")
    load_strategies()
    # strategy from the model name, then from the body
    strategy: str | None = None
    prefix, slash, rest = model.partition("/")
    if slash and prefix in STRATEGIES:
        strategy = prefix
    elif slash and rest == state.served_model:
        try:
            STRATEGIES.get(prefix)
        except ConfigError as e:
            raise bad_request(str(e), "model") from None
    if tt.get("strategy") is not None:
        if not isinstance(tt["strategy"], str):
            raise bad_request("'ttscale.strategy' must be a string", "ttscale")
        if strategy is not None and tt["strategy"] != strategy:
            raise bad_request(f"model names strategy {strategy!r} but ttscale.strategy is {tt['strategy']!r}",
                              "ttscale")
        strategy = tt["strategy"]
    if tt.get("params") and strategy is None:
        raise bad_request("'ttscale.params' given without a strategy", "ttscale")

    # budget: the request's, capped by the server's
    braw = tt.get("budget") or {}
    if not isinstance(braw, Mapping):
        raise bad_request("'ttscale.budget' must be an object {max_generations, max_generated_tokens}", "ttscale")
    bad = sorted(set(braw) - {"max_generations", "max_generated_tokens"})
    if bad:
        raise bad_request(f"'ttscale.budget' has unknown key(s) {', '.join(bad)}; known: max_generations, "
                          "max_generated_tokens", "ttscale")
    caps = {"max_generations": cfg.max_generations, "max_generated_tokens": cfg.max_generated_tokens}
    bvals: dict[str, int | None] = {}
    for k, cap in caps.items():
        v = _num(braw, k, int, 1)
        bvals[k] = v if cap is None else (cap if v is None else min(v, cap))
    budget = Budget(**bvals)

    n = _num(body, "n", int, 1, 128, 1)
    temperature = _num(body, "temperature", float, 0.0, 2.0, 1.0)
    top_p = _num(body, "top_p", float, 0.0, 1.0, 1.0)
    max_tokens = _num(body, "max_completion_tokens", int, 1) or _num(body, "max_tokens", int, 1)
    seed = _num(body, "seed", int)
    stop = _stop(body.get("stop"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "stream")
    so = body.get("stream_options") or {}
    include_usage = bool(so.get("include_usage")) if isinstance(so, Mapping) else False
    if body.get("tools"):
        raise bad_request("'tools' are not supported by ttscale serve (the upstream engines take text only)",
                          "tools")

    logprobs: int | None = None
    if kind == "chat":
        lp = body.get("logprobs")
        if lp is not None and not isinstance(lp, bool):
            raise bad_request("'logprobs' must be a boolean", "logprobs")
        if lp:
            logprobs = max(1, _num(body, "top_logprobs", int, 0, 20, 0))
        messages = _messages(body.get("messages"))
        prompt = None
    else:
        logprobs = _num(body, "logprobs", int, 0, 20)
        logprobs = logprobs or None
        p = body.get("prompt")
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
            p = p[0]
        if not isinstance(p, str):
            raise bad_request("'prompt' must be a string (one prompt per request)", "prompt")
        prompt = p
        messages = ()

    entry = None
    params = None
    if strategy is not None:
        try:
            entry = STRATEGIES.get(strategy)
        except ConfigError as e:
            raise bad_request(str(e), "ttscale") from None
        if n != 1:
            raise bad_request("'n' must be 1 with a strategy (the strategy's params set how many samples "
                              "it draws)", "n")
        pvals = tt.get("params") or {}
        if not isinstance(pvals, Mapping):
            raise bad_request("'ttscale.params' must be an object", "ttscale")
        pvals = dict(pvals)
        fields = {f.name for f in entry.fields()}
        for key, value in (("temperature", body.get("temperature")), ("top_p", body.get("top_p")),
                           ("max_tokens", max_tokens)):
            if value is not None and key in fields and key not in pvals:
                pvals[key] = value
        try:
            params = entry.make_params(pvals)
        except ConfigError as e:
            raise bad_request(str(e), "ttscale") from None
    pfx = "chatcmpl" if kind == "chat" else "cmpl"
    return Plan(
        kind=kind, id=f"{pfx}-{uuid.uuid4().hex[:24]}", model=model, entry=entry, params=params, budget=budget,
        messages=messages, prompt=prompt, n=n, temperature=temperature, top_p=top_p,
        max_tokens=max_tokens or cfg.default_max_tokens, stop=stop, seed=seed, logprobs=logprobs,
        stream=stream, include_usage=include_usage,
    )


# ------------------------------------------------------------------------------------------ execution


@dataclass
class Choice:
    text: str
    finish_reason: str
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass
class Answer:
    """What a plan produced: the choices, the cost and the strategy's summary."""

    choices: list[Choice]
    cost: Cost
    info: dict[str, Any]


def _finish(reason: str) -> str:
    return "length" if reason in ("length", "budget") else "stop"


class Job:
    """One plan running on the engine, observable (progress) and cancellable."""

    def __init__(self, plan: Plan, state: ServeState,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.plan = plan
        self.state = state
        self.on_progress = on_progress
        self.t0 = time.perf_counter()
        engine = state.upstream
        self.meter = CostMeter(plan.budget, engine.params_count)
        if plan.kind == "chat":
            problem = Problem(id=plan.id, messages=plan.messages)
        else:
            problem = Problem(id=plan.id, prompt=plan.prompt)
        self.ctx = ObservedContext(
            problem=problem, engine=engine, answers=state.answers, meter=self.meter,
            seed=plan.seed if plan.seed is not None else state.config.seed,
            make_verifier=state.verifier_factory(), system_prompt=state.config.system_prompt,
            on_generate=self._progress,
            rng_key=f"serve:{plan.seed}" if plan.seed is not None else None,
        )

    def progress(self, event: str) -> dict[str, Any]:
        m = self.meter
        return {
            "event": event,
            "engine_calls": m.engine_calls,
            "generations": m.generations,
            "prompt_tokens": m.prompt_tokens,
            "generated_tokens": m.generated_tokens,
            "verifier_calls": m.verifier_calls,
            "verifier_tokens": m.verifier_prompt_tokens + m.verifier_generated_tokens,
            "elapsed_s": round(time.perf_counter() - self.t0, 3),
        }

    def _progress(self, role: str) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress("generate" if role == "policy" else "verify"))

    async def run(self) -> Answer:
        plan = self.plan
        info: dict[str, Any] = {"strategy": plan.strategy, "params": plan.params_dict(),
                                "budget": plan.budget.to_dict(), "upstream_model": self.state.upstream.model}
        try:
            if plan.entry is None:
                choices = await self._passthrough()
            else:
                outcome: Outcome = await plan.entry.target(self.ctx.problem, self.ctx, plan.params)
                choices = [self._choice(outcome, info)]
        finally:
            self.meter.stop_clock()
        info["stopped_by_budget"] = self.meter.stopped_by_budget
        return Answer(choices, self.meter.snapshot(), info)

    async def _passthrough(self) -> list[Choice]:
        p = self.plan
        common: dict[str, Any] = dict(n=p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                                      stop=p.stop, seed=p.seed, logprobs=p.logprobs)
        if p.kind == "chat":
            req = GenerationRequest(messages=self.ctx.messages(), **common)
        else:
            req = GenerationRequest(raw_prompt=p.prompt or "", **common)
        comps = await self.ctx.generate(req)
        return [Choice(c.text, _finish(c.finish_reason), c.logprobs if p.logprobs else None) for c in comps]

    def _choice(self, outcome: Outcome, info: dict[str, Any]) -> Choice:
        cands = list(outcome.candidates)
        chosen = outcome.chosen or (cands[0] if cands else None)
        info["answer"] = outcome.answer
        info["candidates"] = len(cands)
        info["chosen"] = chosen.id if chosen is not None else None
        extra = {k: v for k, v in outcome.extra.items() if k != "trace"}
        if extra:
            info["extra"] = _jsonable(extra)
        if chosen is None:
            return Choice("", "length" if self.meter.stopped_by_budget else "stop")
        return Choice(chosen.text, _finish(chosen.finish_reason))


def _error_for(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ConfigError):
        return bad_request(str(exc))
    if isinstance(exc, EngineError):
        return ApiError(502, f"upstream engine failed: {exc}", "upstream_error", "engine_error")
    if isinstance(exc, TtscaleError | ValueError):
        return ApiError(500, f"{type(exc).__name__}: {exc}", "server_error", "internal_error")
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error", "internal_error")


async def _settle(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait (briefly) until it has unwound."""
    if not task.done():
        task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(_swallow(task)), timeout=5.0)
    except (TimeoutError, asyncio.CancelledError):
        pass


async def _swallow(task: asyncio.Task[Any]) -> None:
    try:
        await task
    except BaseException:
        pass


def _timeout_error(timeout_s: float) -> ApiError:
    return ApiError(504, f"request timed out after {timeout_s:g} s; its upstream work was cancelled",
                    "timeout", "timeout")


async def run_unary(job: Job, request: Request) -> Answer:
    """Run a job to completion, cancelling it on timeout (504) or client disconnect."""
    st = job.state
    cfg = st.config
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.timeout_s
    task = asyncio.create_task(job.run())
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                st.metrics.cancel("timeout")
                await _settle(task)
                raise _timeout_error(cfg.timeout_s)
            done, _ = await asyncio.wait({task}, timeout=min(cfg.disconnect_poll_s, remaining))
            if done:
                return task.result()
            if await request.is_disconnected():
                st.metrics.cancel("disconnect")
                await _settle(task)
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()


# ------------------------------------------------------------------------------------------ responses


def usage_fields(cost: Cost) -> dict[str, Any]:
    prompt = cost.prompt_tokens + cost.verifier_prompt_tokens
    completion = cost.generated_tokens + cost.verifier_generated_tokens
    return {
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "ttscale_usage": {**cost.to_dict(), "total_tokens": cost.total_tokens},
    }


def _chat_logprobs(lps: Sequence[TokenLogprob], k: int) -> dict[str, Any]:
    def tok(t: str, lp: float) -> dict[str, Any]:
        return {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}

    return {"content": [{**tok(t.token, t.logprob), "top_logprobs": [tok(a, b) for a, b in t.top[:k]]}
                        for t in lps], "refusal": None}


def _completion_logprobs(lps: Sequence[TokenLogprob], k: int) -> dict[str, Any]:
    offsets, pos = [], 0
    for t in lps:
        offsets.append(pos)
        pos += len(t.token)
    return {"tokens": [t.token for t in lps], "token_logprobs": [t.logprob for t in lps],
            "top_logprobs": [dict(t.top[:k]) for t in lps], "text_offset": offsets}


def _choice_logprobs(plan: Plan, c: Choice) -> dict[str, Any] | None:
    if not plan.logprobs or c.logprobs is None:
        return None
    if plan.kind == "chat":
        return _chat_logprobs(c.logprobs, plan.logprobs)
    return _completion_logprobs(c.logprobs, plan.logprobs)


def render_json(plan: Plan, ans: Answer, created: int) -> dict[str, Any]:
    choices = []
    for i, c in enumerate(ans.choices):
        if plan.kind == "chat":
            choices.append({"index": i, "message": {"role": "assistant", "content": c.text, "refusal": None},
                            "logprobs": _choice_logprobs(plan, c), "finish_reason": c.finish_reason})
        else:
            choices.append({"index": i, "text": c.text, "logprobs": _choice_logprobs(plan, c),
                            "finish_reason": c.finish_reason})
    return {
        "id": plan.id,
        "object": "chat.completion" if plan.kind == "chat" else "text_completion",
        "created": created,
        "model": plan.model,
        "system_fingerprint": None,
        "choices": choices,
        **usage_fields(ans.cost),
        "ttscale": ans.info,
    }


def text_pieces(text: str) -> list[str]:
    """Split a text into word-sized stream deltas that concatenate back to it."""
    pieces = re.findall(r"\s*\S+|\s+$", text)
    return pieces if "".join(pieces) == text else [text]


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def stream_events(plan: Plan, state: ServeState, created: int) -> AsyncIterator[str]:
    """The SSE body of a streaming request (see the module docstring)."""
    cfg = state.config
    chat = plan.kind == "chat"
    obj = "chat.completion.chunk" if chat else "text_completion"
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    job = Job(plan, state, on_progress=queue.put_nowait)

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        return _sse({"id": plan.id, "object": obj, "created": created, "model": plan.model,
                     "system_fingerprint": None, "choices": choices, **extra})

    def empty(i: int = 0) -> dict[str, Any]:
        if chat:
            return {"index": i, "delta": {"content": ""}, "logprobs": None, "finish_reason": None}
        return {"index": i, "text": "", "logprobs": None, "finish_reason": None}

    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.timeout_s
    task = asyncio.create_task(job.run())
    task.add_done_callback(lambda _t: queue.put_nowait(None))
    finished = False
    try:
        if chat:
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None} for i in range(plan.n)])
        yield chunk([empty()], ttscale_progress=job.progress("start"))
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                state.metrics.cancel("timeout")
                await _settle(task)
                err = _timeout_error(cfg.timeout_s)
                yield _sse(err.body())
                yield "data: [DONE]\n\n"
                finished = True
                return
            try:
                item = await asyncio.wait_for(queue.get(), timeout=min(cfg.heartbeat_s, remaining))
            except TimeoutError:
                if loop.time() < deadline:
                    yield chunk([empty()], ttscale_progress=job.progress("heartbeat"))
                continue
            if item is None:
                break
            yield chunk([empty()], ttscale_progress=item)
        try:
            ans: Answer = task.result()
        except Exception as e:
            yield _sse(_error_for(e).body())
            yield "data: [DONE]\n\n"
            finished = True
            return
        state.metrics.charge(plan.strategy or "passthrough", ans.cost)
        extra = {**usage_fields(ans.cost)}
        usage = extra.pop("usage")
        for i, c in enumerate(ans.choices):
            lp = _choice_logprobs(plan, c)
            pieces = [c.text] if lp is not None else text_pieces(c.text)
            for j, piece in enumerate(pieces):
                ch: dict[str, Any] = {"index": i, "logprobs": lp if j == 0 else None, "finish_reason": None}
                if chat:
                    ch["delta"] = {"content": piece}
                else:
                    ch["text"] = piece
                yield chunk([ch])
            done: dict[str, Any] = {"index": i, "logprobs": None, "finish_reason": c.finish_reason}
            if chat:
                done["delta"] = {}
            else:
                done["text"] = ""
            last = i == len(ans.choices) - 1
            yield chunk([done], **({**extra, "ttscale": ans.info} if last else {}))
        if plan.include_usage:
            yield chunk([], usage=usage)
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not task.done():
            if not finished:
                state.metrics.cancel("disconnect")
            task.cancel()
            task.add_done_callback(_consume)


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


# ------------------------------------------------------------------------------------------ app


def create_app(config: ServeConfig | None = None, *, engine: Engine | None = None,
               answers: AnswerSpace | None = None,
               make_verifier: Callable[[str], Verifier] | None = None) -> FastAPI:
    """The server app. Without ``engine``, the app builds ``config.engine``/``config.model`` at
    startup (in its event loop) and closes it at shutdown; a given engine is left open."""
    config = config or ServeConfig()
    state = ServeState(config=config, engine=engine, answers=answers or default_answers(), metrics=Metrics(),
                       make_verifier=make_verifier)
    state.metrics.max_concurrency = config.max_concurrency
    load_strategies()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if state.engine is None:
            from ttscale.engines import make_engine

            state.engine = await asyncio.to_thread(make_engine, config.engine, config.model, config.engine_params)
            state.owns_engine = True
        try:
            yield
        finally:
            if state.owns_engine and state.engine is not None:
                await state.engine.aclose()

    app = FastAPI(title="ttscale serve", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.ttscale = state
    app.add_middleware(GuardMiddleware, state=state)

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, exc: StarletteHTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind, str(exc.status_code)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_r: Request, exc: RequestValidationError) -> Response:
        return JSONResponse(error_body(f"invalid request: {exc.errors()}", "invalid_request_error",
                                       "invalid_request"), status_code=400)

    @app.exception_handler(Exception)
    async def _any_error(_r: Request, exc: Exception) -> Response:
        return _error_for(exc).response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        eng = state.engine
        return {"status": "ok" if eng is not None else "loading", "engine": eng.name if eng else config.engine,
                "model": state.served_model, "in_flight": state.in_flight,
                "max_concurrency": config.max_concurrency}

    @app.get("/metrics")
    async def metrics() -> Response:
        from ttscale.core.protocols import replica_stats  # a pool engine's per-replica counters

        return PlainTextResponse(state.metrics.render() + render_replicas(replica_stats(state.engine)),
                                 media_type=CONTENT_TYPE)

    def model_card(mid: str) -> dict[str, Any]:
        return {"id": mid, "object": "model", "created": state.created, "owned_by": "ttscale"}

    def model_ids() -> list[str]:
        base = state.served_model
        return [base, *(f"{name}/{base}" for name in STRATEGIES.names())]

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(m) for m in model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Any:
        if model_id not in model_ids():
            raise ApiError(404, f"model {model_id!r} not found", "not_found_error", "model_not_found", "model")
        return model_card(model_id)

    async def generate(request: Request, kind: str) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad_request(f"the request body is not valid JSON: {e}") from None
        plan = parse_plan(body, kind, state)
        _ = state.upstream
        created = int(time.time())
        if plan.stream:
            return StreamingResponse(stream_events(plan, state, created), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            ans = await run_unary(Job(plan, state), request)
        except ClientGone:
            return Response(status_code=499)
        except ApiError:
            raise
        except Exception as e:
            raise _error_for(e) from e
        state.metrics.charge(plan.strategy or "passthrough", ans.cost)
        return JSONResponse(render_json(plan, ans, created))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completion")

    return app

