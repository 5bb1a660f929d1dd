"""Errors of the server, answered in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``,
and the mapping from any exception a request can raise to its HTTP status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from ttscale.core.errors import ConfigError, EngineError, TtscaleError


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


class ClientGone(Exception):
    """The client disconnected; nobody is listening for a response."""


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error`` naming the problem (and the offending field in ``param``)."""
    return ApiError(400, message, "invalid_request_error", "invalid_request", param)


def show_value(v: Any) -> str:
    """A client's value for an error message, cut short (an integer of thousands of digits, a deep list)."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"an integer of about {int(v.bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(v)
    except RecursionError:
        text = f"a nested {type(v).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body larger than {limit} bytes", "invalid_request_error", "request_too_large")


def timeout_error(timeout_s: float) -> ApiError:
    return ApiError(504, f"request timed out after {timeout_s:g} s; its upstream work was cancelled",
                    "timeout", "timeout")


def error_for(exc: BaseException) -> ApiError:
    """The API error of any exception a request raised: configuration problems are the client's
    (400), engine failures are upstream's (502), anything else is ours (500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ConfigError):
        return bad_request(str(exc))
    if isinstance(exc, EngineError):
        return ApiError(502, f"upstream engine failed: {exc}", "upstream_error", "engine_error")
    if isinstance(exc, TtscaleError | ValueError):
        return ApiError(500, f"{type(exc).__name__}: {exc}", "server_error", "internal_error")
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error", "internal_error")
