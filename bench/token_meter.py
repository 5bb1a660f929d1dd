"""A counting pass-through in front of an OpenAI-compatible endpoint, for side-by-side benches.

Every request to ``/c/<client>/v1/...`` or ``/v1/...`` (the client is then the API key of
``Authorization: Bearer <key>``, else ``default``) is forwarded unchanged
to the upstream base URL, and the ``usage`` of the upstream's answer (prompt and completion tokens)
is charged to ``<client>``. The upstream is the one that does the work, so a client that never
reads or reports ``usage`` (a peer library's internal judge or step calls) is charged all the same.
A streamed request is forwarded with ``stream_options.include_usage`` turned on so that the
upstream sends its usage chunk; when the client did not ask for that chunk it is dropped from
what the client sees.

``GET /meter`` returns the counts (``{client: {requests, errors, prompt_tokens, completion_tokens,
unmetered}}``); ``unmetered`` counts successful answers without usage (tokens not known).

    app = meter_app("http://127.0.0.1:8000/v1")        # a Starlette app; Meter is app.state.meter
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding"}


@dataclass
class Tally:
    """What one client was served."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unmetered: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Meter:
    """Per-client token counts (thread-safe: the bench reads them from another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[str, Tally] = {}

    def charge(self, client: str, usage: Mapping[str, Any] | None, *, ok: bool = True) -> None:
        with self._lock:
            t = self._tallies.setdefault(client, Tally())
            t.requests += 1
            if not ok:
                t.errors += 1
                return
            if not isinstance(usage, Mapping):
                t.unmetered += 1
                return
            t.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            t.completion_tokens += int(usage.get("completion_tokens") or 0)

    def tally(self, client: str) -> Tally:
        with self._lock:
            return Tally(**asdict(self._tallies.get(client, Tally())))

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {c: asdict(t) for c, t in self._tallies.items()}


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None


def _usage_of_sse(line: str) -> Mapping[str, Any] | None:
    """The ``usage`` of one SSE ``data:`` line, or None."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    usage = obj.get("usage") if isinstance(obj, dict) else None
    return usage if isinstance(usage, Mapping) else None


def _is_usage_only(line: str) -> bool:
    """A chunk that only carries usage (no choices): what include_usage adds at the end."""
    if _usage_of_sse(line) is None:
        return False
    obj = json.loads(line[5:].strip())
    return not obj.get("choices")


def meter_app(upstream: str, *, meter: Meter | None = None, timeout_s: float = 1800.0) -> Starlette:
    """The counting pass-through to ``upstream`` (a base URL ending in ``/v1``)."""
    base = upstream.rstrip("/")
    meter = meter or Meter()
    client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=httpx.Limits(max_connections=256))

    async def forward(request: Request) -> Response:
        who = request.path_params.get("client") or _bearer(request) or "default"
        path = request.path_params["path"]
        raw = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body: Any = None
        if raw and request.method == "POST":
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        url = f"{base}/{path}"
        if isinstance(body, dict) and body.get("stream"):
            return await _stream(who, url, headers, body)
        try:
            resp = await client.request(request.method, url, content=raw, headers=headers,
                                        params=request.query_params)
        except httpx.HTTPError as exc:
            meter.charge(who, None, ok=False)
            return JSONResponse({"error": {"message": f"meter: upstream unreachable: {exc}"}}, status_code=502)
        if request.method == "POST":
            usage = None
            try:
                usage = resp.json().get("usage")
            except (ValueError, AttributeError):
                pass
            meter.charge(who, usage, ok=resp.status_code < 400)
        out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS | {"content-encoding"}}
        return Response(resp.content, status_code=resp.status_code, headers=out_headers)

    async def _stream(who: str, url: str, headers: dict[str, str], body: dict[str, Any]) -> Response:
        so = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        wanted = bool(so.get("include_usage"))
        sent = {**body, "stream_options": {**so, "include_usage": True}}
        req = client.build_request("POST", url, json=sent, headers=headers)
        resp = await client.send(req, stream=True)
        if resp.status_code >= 400:
            content = await resp.aread()
            await resp.aclose()
            meter.charge(who, None, ok=False)
            return Response(content, status_code=resp.status_code, media_type=resp.headers.get("content-type"))

        async def lines() -> AsyncIterator[str]:
            usage = None
            try:
                async for line in resp.aiter_lines():
                    found = _usage_of_sse(line)
                    if found is not None:
                        usage = found
                        if not wanted and _is_usage_only(line):
                            continue
                    yield line + "\n"
            finally:
                await resp.aclose()
                meter.charge(who, usage)

        return StreamingResponse(lines(), media_type="text/event-stream")

    async def counts(_request: Request) -> Response:
        return JSONResponse(meter.snapshot())

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST"]
    app = Starlette(routes=[
        Route("/meter", counts),
        Route("/c/{client}/v1/{path:path}", forward, methods=methods),
        Route("/v1/{path:path}", forward, methods=methods),
    ], lifespan=lifespan)
    app.state.meter = meter
    return app
