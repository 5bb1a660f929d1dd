"""HTTP for the ``openai`` engine: one POST (plain or streamed), status checks, retries, timeouts.

429, 5xx, connection errors and timeouts are retried with exponential backoff and jitter
(``tenacity``), honouring ``Retry-After``; other 4xx fail at once. Three clocks bound a request:
``connect_timeout_s`` to open a connection, ``read_timeout_s`` of silence from a connected server
(for a non-streamed request that is the whole generation), and ``deadline_s`` for the request in
all, attempts and backoff included, so a server that accepts connections and then hangs fails in
``deadline_s`` rather than after every attempt's read timeout. The final
:class:`~ttscale.core.errors.EngineError` says which one fired (connection refused, connect
timeout, read timeout, dropped connection, deadline) and names the URL, the setting to change, the
HTTP status and a body excerpt where there is one, and the number of attempts. A 400 that says how
many samples the server accepts per request (llama.cpp's "Field 'n' ... <= value <= K") is raised
as :class:`NTooLarge` so the engine can ask again in chunks.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from ttscale.core.errors import EngineError

T = TypeVar("T")

_EXCERPT = 300
_MAX_RETRY_AFTER_S = 120.0
_N_LIMIT_RE = re.compile(r"""['"]?n['"]?\W.*?<=\s*value\s*<=\s*(\d+)""", re.IGNORECASE | re.DOTALL)


class Retryable(Exception):
    """A failure worth another attempt (429, 5xx, connection error, timeout)."""

    def __init__(self, url: str, status: int | None, body: str, retry_after: float | None = None,
                 cause: BaseException | None = None) -> None:
        super().__init__(f"{url}: {status} {body[:_EXCERPT]}")
        self.url = url
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.cause = cause


class NTooLarge(Exception):
    """The server rejected ``n`` and said how many samples it accepts per request."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def excerpt(body: str) -> str:
    """``body`` on one line, cut to a few hundred characters (for error messages)."""
    body = " ".join(body.split())
    return body if len(body) <= _EXCERPT else body[: _EXCERPT - 3] + "..."


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number or an HTTP date), if any."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def check_status(url: str, status: int, headers: httpx.Headers, text: str, n: int) -> None:
    """Raise :class:`Retryable` for 429/5xx, :class:`NTooLarge` for a 400 naming the most
    samples per request (when ``n`` is above it), :class:`EngineError` for other 4xx."""
    if status == 429 or status >= 500:
        raise Retryable(url, status, text, retry_after(headers))
    if status >= 400:
        if status == 400 and n > 1:
            m = _N_LIMIT_RE.search(text)
            if m and 1 <= int(m.group(1)) < n:
                raise NTooLarge(int(m.group(1)))
        raise EngineError(f"openai engine: POST {url} failed with HTTP {status} (not retried): {excerpt(text)}")


@dataclass(frozen=True)
class Clocks:
    """The time limits of one request, in seconds (``deadline_s`` 0: none)."""

    connect_timeout_s: float
    read_timeout_s: float
    deadline_s: float

    def timeout(self) -> httpx.Timeout:
        """httpx's per-attempt limits (writes share the read limit; the engine's semaphore keeps
        the connection pool from being waited on)."""
        return httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s, pool=None)


class Retrier:
    """Runs one request's attempts: up to ``max_retries`` more after the first, on
    :class:`Retryable` only, waiting ``backoff_s * 2**k`` plus jitter (at most ``backoff_max_s``)
    or what ``Retry-After`` asked, all within ``clocks.deadline_s``."""

    def __init__(self, max_retries: int, backoff_s: float, backoff_max_s: float, clocks: Clocks) -> None:
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.clocks = clocks
        self.attempts_made = 0
        """HTTP attempts made over the engine's life (for tests and diagnostics)."""

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, _MAX_RETRY_AFTER_S)
        exp = self.backoff_s * 2 ** max(0, state.attempt_number - 1)
        return min(self.backoff_max_s, exp + random.uniform(0, self.backoff_s))

    async def run(self, url: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()`` until it succeeds, fails for good, the attempts are used up or the
        deadline passes."""
        attempts = 0
        last: Retryable | None = None
        deadline = asyncio.timeout(self.clocks.deadline_s or None)
        try:
            async with deadline:
                async for a in AsyncRetrying(
                    stop=stop_after_attempt(self.max_retries + 1),
                    wait=self._wait,
                    retry=retry_if_exception_type(Retryable),
                    reraise=True,
                ):
                    with a:
                        attempts += 1
                        self.attempts_made += 1
                        try:
                            return await attempt()
                        except Retryable as e:
                            last = e
                            raise
        except Retryable as e:
            raise _give_up(url, e, attempts, self.clocks) from (e.cause if e.status is None else None)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise _past_deadline(url, last, attempts, self.clocks) from None
        raise AssertionError("unreachable")  # pragma: no cover


def _times(attempts: int) -> str:
    return f"{attempts} attempt{'s' if attempts != 1 else ''}"


def _give_up(url: str, e: Retryable, attempts: int, clocks: Clocks) -> EngineError:
    times = _times(attempts)
    if e.status is not None:
        return EngineError(f"openai engine: POST {url} failed after {times}: HTTP {e.status}: {excerpt(e.body)}")
    what, advice = _transport_failure(url, e.cause, clocks)
    return EngineError(f"openai engine: {what} (after {times}){advice}")


def _transport_failure(url: str, cause: BaseException | None, clocks: Clocks) -> tuple[str, str]:
    """What a transport error means, in words, and what to do about it."""
    name = type(cause).__name__
    reach = "; check that the server is running and that base_url is right"
    if isinstance(cause, httpx.ConnectTimeout):
        return f"cannot reach {url}: connecting timed out after connect_timeout_s={clocks.connect_timeout_s:g} s", reach
    if isinstance(cause, httpx.ConnectError):
        return f"cannot reach {url} ({name}: {cause})", reach
    if isinstance(cause, httpx.ReadTimeout):
        return (f"read timeout: {url} accepted the request but sent nothing for read_timeout_s="
                f"{clocks.read_timeout_s:g} s", "; the server is up but stuck or overloaded (a non-streamed "
                "answer arrives only when generation ends: raise read_timeout_s for long generations)")
    if isinstance(cause, httpx.TimeoutException):
        return f"{url} timed out ({name}: {cause})", ""
    return f"the connection to {url} broke off without an answer ({name}: {cause})", ""


def _past_deadline(url: str, last: Retryable | None, attempts: int, clocks: Clocks) -> EngineError:
    if last is None:
        why = "the first attempt was still waiting for an answer"
    elif last.status is not None:
        why = f"the last failure was HTTP {last.status}"
    else:
        why = "the last failure: " + _transport_failure(url, last.cause, clocks)[0]
    return EngineError(
        f"openai engine: deadline: POST {url} did not complete within deadline_s={clocks.deadline_s:g} s "
        f"({_times(attempts)}; {why}); the server is reachable but slow or stuck: raise deadline_s "
        "for long generations, or check the server")


async def post_json(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """One POST attempt; the response's JSON object."""
    try:
        resp = await client.post(url, json=body)
    except httpx.TransportError as e:  # connect errors, timeouts, dropped connections
        raise Retryable(url, None, str(e), cause=e) from e
    check_status(url, resp.status_code, resp.headers, resp.text, int(body.get("n", 1)))
    try:
        data = resp.json()
    except ValueError as e:
        raise EngineError(f"openai engine: POST {url} returned invalid JSON: {excerpt(resp.text)}") from e
    if not isinstance(data, dict):
        raise EngineError(f"openai engine: POST {url} returned {type(data).__name__}, not an object")
    return data


async def post_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                      on_line: Callable[[str], bool], has_output: Callable[[], bool]) -> None:
    """One streamed POST attempt: each line of the response to ``on_line`` until it returns True
    (then the stream is closed) or the stream ends. A transport error is retryable while
    ``has_output()`` is False; after that the sample is broken."""
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code >= 400:
                text = (await resp.aread()).decode("utf-8", "replace")
                check_status(url, resp.status_code, resp.headers, text, 1)
            async for line in resp.aiter_lines():
                if on_line(line):
                    break
    except httpx.TransportError as e:
        if not has_output():
            raise Retryable(url, None, str(e), cause=e) from e
        stalled = " (no data for read_timeout_s)" if isinstance(e, httpx.ReadTimeout) else ""
        raise EngineError(f"openai engine: stream from {url} broke off{stalled}: {type(e).__name__}: {e}") from e
