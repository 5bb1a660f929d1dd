"""Several replicas of one model behind one engine, routed for prefix-cache locality.

``--engine pool --model NAME --engine-param base_url=http://a:8000/v1,http://b:8000/v1`` builds one
:class:`~ttscale.engines.openai.OpenAIEngine` per upstream (vLLM, SGLang, llama.cpp servers, other
``ttscale serve`` instances); ``--engine pool --model "embedded:smollm2-135m,embedded:smollm2-135m"``
(no ``base_url``) wraps any engines, ``ENGINE:MODEL`` each. In a recipe, ``base_url`` may be a list.

Routing and health are :mod:`ttscale.engines.routing`'s: requests of one problem (and every
continuation of its tree paths) go to the replica that holds their prefix; a saturated replica
spills to the least-loaded one. A replica that refuses connections, or fails ``max_failures`` times
in a row, is taken out with a warning; the failed request is retried on another replica (so a
replica dying mid-run loses nothing) and the replica is probed back in every ``probe_s`` seconds
(``GET /models`` for HTTP upstreams). Only when every replica is down does a request fail.

Per-replica counters (requests, tokens, errors, prefix-cache hits where the server reports cached
prompt tokens) come from :meth:`PoolEngine.replica_stats`; ``ttscale run`` prints them and
``ttscale serve`` exports them on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ttscale.core.errors import ConfigError, EngineError, TtscaleError
from ttscale.core.protocols import Engine
from ttscale.core.registry import param
from ttscale.core.types import Completion, GenerationRequest
from ttscale.engines.base import engine, make_engine
from ttscale.engines.routing import Router, affinity_key

log = logging.getLogger("ttscale.pool")

Probe = Callable[[], Awaitable[bool]]


def _unreachable(exc: BaseException) -> bool:
    """True when the error chain holds a transport failure (connection refused, reset, timeout)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, httpx.TransportError | ConnectionError | OSError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def classify(exc: BaseException) -> str | None:
    """``"down"`` (take the replica out now), ``"failure"`` (count it; retry elsewhere) or None
    (the request's own fault, e.g. HTTP 400: re-raise)."""
    if _unreachable(exc):
        return "down"
    if isinstance(exc, EngineError):
        msg = str(exc)
        return "failure" if ("HTTP 5" in msg or "HTTP 429" in msg or "cannot reach" in msg) else None
    if isinstance(exc, TtscaleError):
        return None
    return "failure"  # an unexpected crash of an in-process member


class PoolEngine:
    """Replicas of one model as one engine (see the module docstring)."""

    name = "pool"

    def __init__(self, members: Sequence[Engine], *, names: Sequence[str] | None = None,
                 routing: str = "affinity", saturation: int = 0, max_failures: int = 3, probe_s: float = 5.0,
                 probes: Sequence[Probe | None] | None = None) -> None:
        if not members:
            raise ConfigError("pool engine: needs at least one replica")
        self.members = list(members)
        labels = list(names) if names is not None else [f"{i}:{m.model}" for i, m in enumerate(members)]
        try:
            self.router = Router(labels, policy=routing, saturation=saturation, max_failures=max_failures,
                                 probe_s=probe_s)
        except ValueError as e:
            raise ConfigError(f"pool engine: {e}") from e
        self._probes = list(probes) if probes is not None else [None] * len(self.members)
        self._probing: set[int] = set()
        models = sorted({m.model for m in self.members})
        self.model = models[0] if len(models) == 1 else "+".join(models)
        self.params_count = self.members[0].params_count
        self.supports_token_ids = all(m.supports_token_ids for m in self.members)
        self.supports_logprobs = all(m.supports_logprobs for m in self.members)

    # --- token ids: replicas of one model share a tokenizer ------------------------------------
    def detokenize(self, ids: Sequence[int]) -> str:
        return self.members[0].detokenize(ids)  # type: ignore[attr-defined, no-any-return]

    def tokenize(self, text: str, *, special: bool = False) -> Sequence[int]:
        return self.members[0].tokenize(text, special=special)  # type: ignore[attr-defined, no-any-return]

    # --- health ----------------------------------------------------------------------------------
    async def _probe(self, i: int) -> None:
        probe = self._probes[i]
        try:
            ok = True if probe is None else await probe()
        except Exception:
            ok = False
        finally:
            self._probing.discard(i)
        self.router.probe_result(i, ok)
        if ok:
            log.warning("warning: pool replica %s is back in", self.router.replicas[i].name)

    def _start_probes(self) -> list[asyncio.Task[None]]:
        tasks = []
        for i in self.router.due_for_probe():
            if i not in self._probing:
                self._probing.add(i)
                tasks.append(asyncio.create_task(self._probe(i)))
        return tasks

    async def _probe_all_down(self) -> None:
        """Every replica is down: probe them all now, before giving up on a request."""
        down = [i for i, r in enumerate(self.router.replicas) if not r.healthy and i not in self._probing]
        for i in down:
            self._probing.add(i)
        await asyncio.gather(*(self._probe(i) for i in down))

    def _all_down(self) -> EngineError:
        why = "; ".join(f"{r.name}: {r.last_error or 'down'}" for r in self.router.replicas)
        return EngineError(f"pool engine: all {len(self.members)} replicas are down ({why})")

    # --- generation ------------------------------------------------------------------------------
    async def generate(self, req: GenerationRequest) -> list[Completion]:
        self._start_probes()
        key = affinity_key(req)
        tried: set[int] = set()
        probed_all = False
        while True:
            i = self.router.pick(key, frozenset(tried))
            if i is None:
                if probed_all or len(tried) >= len(self.members):
                    raise self._all_down()
                probed_all = True
                await self._probe_all_down()
                continue
            r = self.router.replicas[i]
            r.requests += 1
            r.in_flight += 1
            try:
                out = await self.members[i].generate(req)
            except Exception as e:
                kind = classify(e)
                if kind is None:
                    raise
                tried.add(i)
                if self.router.failed(i, f"{type(e).__name__}: {e}"[:300], fatal=kind == "down"):
                    log.warning("warning: pool replica %s is down (%s); its requests go to the other replicas",
                                r.name, r.last_error[:200])
                continue
            finally:
                r.in_flight -= 1
            self.router.succeeded(i, prompt=sum(c.prompt_tokens for c in out),
                                  cached=sum(c.cached_prompt_tokens for c in out),
                                  generated=sum(c.completion_tokens for c in out))
            return out

    def replica_stats(self) -> list[dict[str, Any]]:
        """Counters per replica: requests, errors, tokens, prefix-cache hit rate, health."""
        return [r.stats() for r in self.router.replicas]

    async def aclose(self) -> None:
        await asyncio.gather(*(m.aclose() for m in self.members), return_exceptions=True)


def _http_probe(base_url: str, timeout_s: float = 3.0) -> Probe:
    async def probe() -> bool:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            resp = await client.get(f"{base_url.rstrip('/')}/models")
            return resp.status_code < 500

    return probe


def check_url(url: str) -> str:
    """``url`` when it is an absolute http(s) URL, else a :class:`ConfigError` naming it."""
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as e:
        raise ConfigError(f"pool engine: replica URL {url!r} is not a URL ({e})") from e
    if u.scheme not in ("http", "https") or not u.host:
        raise ConfigError(f"pool engine: replica URL {url!r} must look like http://HOST:PORT/v1")
    return url


@dataclass(frozen=True)
class PoolParams:
    base_url: list[str] = param([], "upstream base URLs (comma-separated), one OpenAI-compatible replica each")
    routing: Literal["affinity", "round_robin", "least_loaded"] = param(
        "affinity", "affinity: consistent hashing on problem id / prompt (prefix-cache locality); "
        "round_robin; least_loaded")
    saturation: int = param(0, "in-flight requests at which a replica spills to the least-loaded one "
                                "(0: max_concurrency for HTTP upstreams, never for engine members)")
    max_failures: int = param(3, "failures in a row (5xx after retries) that take a replica out")
    probe_s: float = param(5.0, "seconds between health probes of a replica that is out")
    api_key: str | None = param(None, "API key of the upstreams (default: $TTSCALE_API_KEY, then $OPENAI_API_KEY)")
    endpoint: Literal["chat", "completions"] = param("chat", "as the openai engine's endpoint")
    max_concurrency: int = param(64, "most HTTP requests in flight per replica")
    connect_timeout_s: float = param(10.0, "seconds to open a connection to a replica")
    read_timeout_s: float = param(300.0, "seconds a replica may stay silent on an accepted request")
    deadline_s: float = param(900.0, "seconds one request may take on one replica, retries included (0 = none)")
    max_retries: int = param(1, "retries on one replica before the pool tries another")
    params_count: float | None = param(None, "model parameter count, for FLOPs estimates")
    max_n: int = param(0, "most samples per HTTP request (as the openai engine's max_n)")


@engine("pool", PoolParams, "replicas of one model (HTTP upstreams or any engines) with prefix-affinity routing")
def make_pool(model: str | None, params: PoolParams) -> PoolEngine:
    from ttscale.engines.openai import OpenAIEngine, OpenAIParams

    common: dict[str, Any] = {"routing": params.routing, "saturation": params.saturation, "max_failures": params.max_failures,
              "probe_s": params.probe_s}
    urls = [u.strip() for item in params.base_url for u in str(item).split(",") if u.strip()]
    if urls:
        if not model:
            raise ConfigError("pool engine needs --model NAME (the upstream model name) with base_url")
        for u in urls:
            check_url(u)
        if len(set(urls)) != len(urls):
            raise ConfigError(f"pool engine: base_url lists a replica twice: {urls}")
        members = [OpenAIEngine(model, OpenAIParams(
            base_url=u, api_key=params.api_key, endpoint=params.endpoint, max_concurrency=params.max_concurrency,
            connect_timeout_s=params.connect_timeout_s, read_timeout_s=params.read_timeout_s,
            deadline_s=params.deadline_s, max_retries=params.max_retries, params_count=params.params_count,
            backoff_s=0.2, backoff_max_s=2.0, max_n=params.max_n)) for u in urls]
        common["saturation"] = params.saturation or params.max_concurrency
        return PoolEngine(members, names=urls, probes=[_http_probe(u) for u in urls], **common)
    if not model:
        raise ConfigError('pool engine needs --engine-param base_url=URL,URL,... or --model "ENGINE:MODEL,ENGINE:MODEL"')
    members = []
    for item in (m.strip() for m in model.split(",") if m.strip()):
        kind, sep, sub = item.partition(":")
        if not sep or kind == "pool":
            raise ConfigError(f"pool member {item!r} must look like ENGINE:MODEL (e.g. embedded:smollm2-135m)")
        members.append(make_engine(kind, sub or None))
    return PoolEngine(members, names=[f"{i}:{m}" for i, m in enumerate(model.split(","))], **common)
