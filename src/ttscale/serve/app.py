"""The OpenAI-compatible server: ``create_app(config, engine=...)`` returns a FastAPI app.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` (and
``/v1/models/{id}``), ``GET /health``, ``GET /metrics`` (Prometheus text).

How a request is served (each part lives in its own module of :mod:`ttscale.serve`):

- **Strategy selection** (:mod:`~ttscale.serve.plan`): model ``STRATEGY/UPSTREAM`` (the prefix is a
  registered strategy), or ``"ttscale": {"strategy", "params", "budget"}`` in the body (the openai
  client's ``extra_body``). Any other model name is a plain pass-through: one generation on the
  upstream engine with the request's ``n``, ``temperature``, ``top_p``, ``max_tokens``, ``stop``,
  ``seed`` and ``logprobs``. With a strategy, ``temperature``/``top_p``/``max_tokens`` set in the
  request become the strategy's parameters of the same name unless ``ttscale.params`` sets them.
- **Messages** go to the strategy as ``Problem(messages=...)`` unchanged (system prompt and every
  turn); ``config.system_prompt`` is added only when the request has no system message.
- **Cost** (:mod:`~ttscale.serve.jobs`): every engine call of the request goes through one
  :class:`~ttscale.serve.observed.ObservedContext` and its meter; ``usage`` counts all of it (policy
  and verifier) and ``ttscale_usage`` breaks it down. ``ttscale`` names the strategy, its params,
  the budget and the extracted answer (:mod:`~ttscale.serve.render`).
- **Streaming** (:mod:`~ttscale.serve.streaming`): the strategy runs as a task; each engine call it
  makes and a heartbeat every ``heartbeat_s`` become chunks whose delta is empty and which carry
  ``ttscale_progress``; then the chosen text streams as ordinary deltas, a finish chunk, an optional
  usage chunk (``stream_options.include_usage``) and ``[DONE]``.
- **Limits** (:class:`~ttscale.serve.middleware.GuardMiddleware`, before any work): API key (401),
  body size (413), requests in flight (429 + ``Retry-After``, never queued). Per-request timeout
  gives 504. Per-request ceilings on generations and tokens (:mod:`~ttscale.serve.limits`) are
  every request's default budget; asking for more, or for a parameter value a strategy cannot take
  (or a body nested too deeply, a number too large), is a 400.
- **Cancellation**: a client that goes away cancels the strategy task (so the engine's pending
  ``generate`` calls are cancelled): streaming through Starlette's disconnect listener and the
  generator's ``finally``, non-streaming by polling ``request.is_disconnected()`` while waiting.
- **Errors** (:mod:`~ttscale.serve.errors`) are answered in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttscale.core.protocols import AnswerSpace, Engine, Verifier, replica_stats
from ttscale.serve.config import ServeConfig
from ttscale.serve.errors import ApiError, ClientGone, error_body, error_for
from ttscale.serve.jobs import Job, run_unary
from ttscale.serve.metrics import CONTENT_TYPE, Metrics, render_replicas
from ttscale.serve.middleware import GuardMiddleware
from ttscale.serve.observed import ObservedContext
from ttscale.serve.plan import decode_body, parse_plan
from ttscale.serve.render import render_json, text_pieces
from ttscale.serve.state import ServeState, default_answers
from ttscale.serve.streaming import stream_events
from ttscale.strategies.base import STRATEGIES, load_strategies

# names other code imports from here
__all__ = ["ObservedContext", "ServeState", "create_app", "text_pieces"]

log = logging.getLogger("ttscale.serve")


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
    app = FastAPI(title="ttscale serve", version="0.1.0", lifespan=_lifespan(state), docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.ttscale = state
    app.add_middleware(GuardMiddleware, state=state)
    _add_error_handlers(app)
    _add_info_routes(app, state)
    _add_generation_routes(app, state)
    return app


def _lifespan(state: ServeState) -> Callable[[FastAPI], Any]:
    """Builds the configured engine at startup when none was given, and closes the engine it built."""
    config = state.config

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

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
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
        return error_for(exc).response()


def _add_info_routes(app: FastAPI, state: ServeState) -> None:
    config = state.config

    @app.get("/health")
    async def health() -> dict[str, Any]:
        eng = state.engine
        return {"status": "ok" if eng is not None else "loading", "engine": eng.name if eng else config.engine,
                "model": state.served_model, "in_flight": state.in_flight,
                "max_concurrency": config.max_concurrency}

    @app.get("/metrics")
    async def metrics() -> Response:
        # a pool engine's per-replica counters follow the server's own
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


def _add_generation_routes(app: FastAPI, state: ServeState) -> None:
    async def generate(request: Request, kind: str) -> Response:
        try:
            plan = parse_plan(decode_body(await request.body()), kind, state)
            _ = state.upstream
            created = int(time.time())
            if plan.stream:
                return StreamingResponse(stream_events(plan, state, created), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            ans = await run_unary(Job(plan, state), request)
            state.metrics.charge(plan.strategy or "passthrough", ans.cost)
            return JSONResponse(render_json(plan, ans, created))
        except ClientGone:
            return Response(status_code=499)
        except ApiError:
            raise
        except Exception as e:  # answered here: an exception reaching Starlette would also drop the connection
            err = error_for(e)
            if err.status >= 500:
                log.error("%s %s failed: %s", request.method, request.url.path, err.message, exc_info=e)
            raise err from e

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completion")
