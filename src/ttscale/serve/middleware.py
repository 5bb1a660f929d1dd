"""The guard in front of every route (pure ASGI): API key (401), body size (413) and requests in
flight (429 + ``Retry-After``, never queued), plus the request metrics. It runs before any routing
work and covers a streaming response until its last byte."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from ttscale.serve.errors import ApiError, error_for, too_large
from ttscale.serve.state import ServeState

GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")
_KNOWN_PATHS = (*GENERATION_PATHS, "/v1/models", "/health", "/metrics")
log = logging.getLogger("ttscale.serve")


def endpoint_label(path: str) -> str:
    """The metrics label of a request path (unknown paths share one label)."""
    if path in _KNOWN_PATHS:
        return path
    return "/v1/models/{id}" if path.startswith("/v1/models/") else "other"


class GuardMiddleware:
    """Pure ASGI middleware: API key, body size, in-flight limit and request metrics. It runs
    before any routing work and covers a streaming response until its last byte."""

    def __init__(self, app: Any, state: ServeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st = self.state
        path: str = scope.get("path", "")
        t0 = time.perf_counter()
        status = {"code": 0}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        acquired = False
        try:
            err = self._unauthorized(scope, path)
            if err is None and scope.get("method", "GET") == "POST" and path in GENERATION_PATHS:
                err = self._refused(scope)
                if err is None:
                    self._acquire()
                    acquired = True
                    body, err = await self._read_body(receive)
                    if body is None and err is None:  # the client went away while sending
                        return
                    if body is not None:
                        receive = _replay(body, receive)
            if err is not None:
                await err.response()(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        except Exception as e:
            # Answer it here: an exception that reaches the server also resets the connection.
            if status["code"]:
                raise  # the response has started; nothing else can be sent
            err = error_for(e)
            log.error("%s %s failed: %s", scope.get("method"), path, err.message, exc_info=e)
            await err.response()(scope, receive, send_wrapper)
        finally:
            if acquired:
                st.in_flight -= 1
                st.metrics.in_flight = st.in_flight
            st.metrics.observe_request(endpoint_label(path), status["code"] or 499, time.perf_counter() - t0)

    def _unauthorized(self, scope: Any, path: str) -> ApiError | None:
        """401 for /v1/* without the configured bearer key."""
        key = self.state.config.api_key
        if not path.startswith("/v1/") or not key:
            return None
        headers = dict(scope.get("headers") or ())
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode()):
            return None
        self.state.metrics.reject("unauthorized")
        return ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                        "authentication_error", "invalid_api_key")

    def _refused(self, scope: Any) -> ApiError | None:
        """413 on a declared body over the limit, 429 when the in-flight limit is reached."""
        st = self.state
        cfg = st.config
        headers = dict(scope.get("headers") or ())
        try:
            length = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            length = -1
        if length > cfg.max_body_bytes:
            st.metrics.reject("too_large")
            return too_large(cfg.max_body_bytes)
        if st.in_flight >= cfg.max_concurrency:
            st.metrics.reject("over_limit")
            return ApiError(
                429, f"server busy: {st.in_flight} requests in flight (limit {cfg.max_concurrency}); "
                     f"retry after {cfg.retry_after_s} s",
                "rate_limit_exceeded", "too_many_requests", headers={"Retry-After": str(cfg.retry_after_s)})
        return None

    def _acquire(self) -> None:
        st = self.state
        st.in_flight += 1
        st.metrics.in_flight = st.in_flight

    async def _read_body(self, receive: Any) -> tuple[bytes | None, ApiError | None]:
        """The whole body (None when the client disconnected), or a 413 once it outgrows the limit."""
        limit = self.state.config.max_body_bytes
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None, None
            body.extend(msg.get("body", b""))
            if len(body) > limit:
                self.state.metrics.reject("too_large")
                return None, too_large(limit)
            if not msg.get("more_body", False):
                return bytes(body), None


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
