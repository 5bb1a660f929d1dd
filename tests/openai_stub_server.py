"""TEST SUPPORT: a real OpenAI-compatible HTTP server on 127.0.0.1, backed by ``ScriptedEngine``.

A small FastAPI app served by uvicorn in a background thread, on a free port::

    with start_stub_server({"What is 2+3?": ["The answer is 5"]}) as (base_url, control):
        ...  # base_url = "http://127.0.0.1:PORT/v1"

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (JSON or SSE with
``stream: true``, ``stream_options.include_usage`` honoured) and ``GET /v1/models``.

Texts come from a :class:`~ttscale.engines.scripted.ScriptedEngine`: tokens are words, so counts
are exact. The script is either a mapping ``key -> [text, ...]`` (the key is the last user message,
or the raw prompt; ``"*"`` matches any key) or a callable ``(GenerationRequest, k) -> text`` as for
the scripted engine. A trailing assistant message is a prefix to continue (as vLLM with
``continue_final_message`` and llama.cpp do). Token strings in logprobs are the words with a
leading space after the first, so they concatenate to the text; ``/completions`` answers in the
legacy logprobs format unless ``control.chat_logprobs_on_completions`` (as llama.cpp does).

Fault injection and observation go through :class:`StubControl` (thread-safe): ``fail_next``,
``bad_request_next``, ``ignore_n``, ``delay_s``, ``token_delay_s``, ``echo_prefix``; every request
body is kept in ``requests``, and ``max_in_flight`` records the most concurrent requests.
:func:`start_hanging_server` is an upstream that accepts connections and never answers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ttscale.core.types import Completion, GenerationRequest
from ttscale.engines.scripted import Script, ScriptedEngine


@dataclass
class StubControl:
    """Programmable faults and recorded traffic of a stub server."""

    engine: ScriptedEngine
    model: str = "stub-model"
    delay_s: float = 0.0
    """Seconds each generation request waits before answering (to test concurrency)."""
    token_delay_s: float = 0.0
    """Seconds between streamed chunks."""
    ignore_n: bool = False
    """Return one choice whatever ``n`` says (as some servers do)."""
    max_n: int | None = None
    """Reject ``n`` above this with llama.cpp's 400 message."""
    echo_prefix: bool = False
    """Repeat the assistant prefix at the start of chat replies (as llama.cpp does)."""
    chat_logprobs_on_completions: bool = False
    """Answer /completions logprobs in the chat format (as llama.cpp does)."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    stream_chunks_sent: int = 0
    stream_disconnects: int = 0
    _faults: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, k: int = 1, status: int = 503, *, retry_after: str | None = None,
                  body: Mapping[str, Any] | None = None) -> None:
        """The next ``k`` generation requests fail with ``status`` (e.g. 429 with retry_after="0")."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        payload = dict(body or {"error": {"message": f"stub: injected failure {status}", "code": status}})
        with self._lock:
            self._faults.extend([(status, payload, headers)] * k)

    def bad_request_next(self, message: str = "stub: bad request", k: int = 1) -> None:
        """The next ``k`` generation requests get a 400 with an OpenAI-style JSON error body."""
        self.fail_next(k, 400, body={"error": {"message": message, "type": "invalid_request_error",
                                               "code": 400}})

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.paths.clear()
            self.max_in_flight = self.in_flight
            self.stream_chunks_sent = 0
            self.stream_disconnects = 0

    @property
    def n_requests(self) -> int:
        return len(self.requests)

    def _take_fault(self) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _enter(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)
            self.paths.append(path)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _key_script(script: Mapping[str, Any]) -> Script:
    def pick(req: GenerationRequest, k: int) -> Any:
        texts = script.get(req.problem_id or "") or script.get("*")
        if not texts:
            raise KeyError(f"stub server: no script for {req.problem_id!r} (and no '*' entry)")
        return texts[k % len(texts)]

    return pick


def _token_id(word: str) -> int:
    return zlib.crc32(word.encode()) % 50000


def _tokens(text: str) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(text.split())]


def _to_request(body: dict[str, Any], chat: bool, ignore_n: bool) -> GenerationRequest:
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    common: dict[str, Any] = {
        "n": 1 if ignore_n else int(body.get("n") or 1),
        "temperature": float(body.get("temperature", 1.0)),
        "top_p": float(body.get("top_p", 1.0)),
        "max_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
        "stop": stop,
        "seed": body.get("seed"),
    }
    if chat:
        msgs = [{"role": str(m.get("role")), "content": str(m.get("content") or "")}
                for m in body.get("messages") or []]
        prefix = ""
        if msgs and msgs[-1]["role"] == "assistant":
            prefix = msgs.pop()["content"]
        users = [m["content"] for m in msgs if m["role"] == "user"]
        lp = (body.get("top_logprobs") or 1) if body.get("logprobs") else None
        return GenerationRequest(messages=tuple(msgs), prefix=prefix, logprobs=lp,
                                 problem_id=users[-1] if users else "", **common)
    prompt = body.get("prompt") or ""
    if isinstance(prompt, list):
        prompt = " ".join(str(p) for p in prompt)
    lp = body.get("logprobs")
    return GenerationRequest(raw_prompt=str(prompt), logprobs=int(lp) if lp else None,
                             problem_id=str(prompt), **common)


def _logprobs(c: Completion, chat_format: bool) -> dict[str, Any] | None:
    if c.logprobs is None:
        return None
    toks = _tokens(c.text)
    vals = [t.logprob for t in c.logprobs]
    if chat_format:
        return {"content": [
            {"token": tok, "logprob": v, "id": _token_id(tok), "bytes": list(tok.encode()),
             "top_logprobs": [{"token": tok, "logprob": v}, {"token": " <alt>", "logprob": v - 1.0}]}
            for tok, v in zip(toks, vals, strict=False)
        ]}
    offsets, pos = [], 0
    for tok in toks:
        offsets.append(pos)
        pos += len(tok)
    return {"tokens": toks, "token_logprobs": vals,
            "top_logprobs": [{tok: v, " <alt>": v - 1.0} for tok, v in zip(toks, vals, strict=False)],
            "text_offset": offsets}


def make_app(control: StubControl) -> FastAPI:
    app = FastAPI(title="ttscale OpenAI stub")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": control.model, "object": "model", "owned_by": "stub"}]}

    async def handle(request: Request, chat: bool) -> Any:
        body = await request.json()
        control._enter(request.url.path, body)
        try:
            fault = control._take_fault()
            if fault is not None:
                status, payload, headers = fault
                return JSONResponse(payload, status_code=status, headers=headers)
            n = int(body.get("n") or 1)
            if control.max_n is not None and n > control.max_n:
                return JSONResponse({"error": {
                    "code": 400, "type": "invalid_request_error",
                    "message": f"Field 'n': Value must be between 1 <= value <= {control.max_n}, but got {n}"}},
                    status_code=400)
            req = _to_request(body, chat, control.ignore_n)
            if control.delay_s:
                await asyncio.sleep(control.delay_s)
            comps = await control.engine.generate(req)
        except Exception:
            control._leave()
            raise
        if body.get("stream"):
            return StreamingResponse(_stream(control, body, req, comps, chat), media_type="text/event-stream")
        control._leave()
        return _json_reply(control, body, req, comps, chat)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await handle(request, True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await handle(request, False)

    return app


def _usage(comps: list[Completion]) -> dict[str, int]:
    gen = sum(c.completion_tokens for c in comps)
    prompt = sum(c.prompt_tokens for c in comps)
    return {"prompt_tokens": prompt, "completion_tokens": gen, "total_tokens": prompt + gen}


def _json_reply(control: StubControl, body: dict[str, Any], req: GenerationRequest,
                comps: list[Completion], chat: bool) -> dict[str, Any]:
    choices = []
    for i, c in enumerate(comps):
        choice: dict[str, Any] = {"index": i, "finish_reason": c.finish_reason}
        if chat:
            text = (req.prefix + c.text) if (control.echo_prefix and req.prefix) else c.text
            choice["message"] = {"role": "assistant", "content": text}
            choice["logprobs"] = _logprobs(c, True) if body.get("logprobs") else None
        else:
            choice["text"] = c.text
            choice["logprobs"] = (_logprobs(c, control.chat_logprobs_on_completions)
                                  if body.get("logprobs") else None)
        choices.append(choice)
    return {
        "id": f"stub-{time.monotonic_ns()}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model") or control.model,
        "choices": choices,
        "usage": _usage(comps),
    }


async def _stream(control: StubControl, body: dict[str, Any], req: GenerationRequest,
                  comps: list[Completion], chat: bool) -> Any:
    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        obj = {"id": "stub-stream", "object": "chat.completion.chunk" if chat else "text_completion",
               "created": int(time.time()), "model": body.get("model") or control.model,
               "choices": choices, **extra}
        return f"data: {json.dumps(obj)}\n\n"

    want_lp = bool(body.get("logprobs"))
    finished = False
    try:
        for i, c in enumerate(comps):
            if chat:
                yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            toks = _tokens(c.text)
            lps = _logprobs(c, chat or control.chat_logprobs_on_completions) if want_lp else None
            for j, tok in enumerate(toks):
                if control.token_delay_s:
                    await asyncio.sleep(control.token_delay_s)
                choice: dict[str, Any] = {"index": i, "finish_reason": None}
                if chat:
                    choice["delta"] = {"content": tok}
                else:
                    choice["text"] = tok
                if lps is not None:
                    if "content" in lps:
                        choice["logprobs"] = {"content": [lps["content"][j]]}
                    else:
                        choice["logprobs"] = {k: [v[j]] for k, v in lps.items()}
                with control._lock:
                    control.stream_chunks_sent += 1
                yield event([choice])
            done: dict[str, Any] = {"index": i, "finish_reason": c.finish_reason}
            if chat:
                done["delta"] = {}
            else:
                done["text"] = ""
            yield event([done])
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event([], usage=_usage(comps))
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            with control._lock:
                control.stream_disconnects += 1
        control._leave()


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def start_stub_server(script: Script | Mapping[str, Any] | ScriptedEngine, *,
                      model: str = "stub-model", **control_fields: Any) -> Iterator[tuple[str, StubControl]]:
    """Serve the stub in a background thread; yields ``(base_url, control)`` and stops on exit.

    ``script`` is a mapping (see the module docstring), a scripted-engine callable, or a ready
    :class:`ScriptedEngine`. Extra keyword arguments set :class:`StubControl` fields.
    """
    if isinstance(script, ScriptedEngine):
        eng = script
    elif isinstance(script, Mapping):
        eng = ScriptedEngine(_key_script(script), model=model)
    else:
        eng = ScriptedEngine(script, model=model)
    control = StubControl(engine=eng, model=model, **control_fields)
    sock = _free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(control), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"openai-stub-{port}")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("stub server did not start within 10 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1", control
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class HangingServer:
    """What :func:`start_hanging_server` saw: connections accepted and bytes received."""

    connections: int = 0
    received: int = 0


@contextmanager
def start_hanging_server() -> Iterator[tuple[str, HangingServer]]:
    """A TCP server on 127.0.0.1 that accepts every connection, reads the request and never
    answers (an upstream that is up but stuck); yields ``(base_url, seen)``."""
    sock = _free_socket()
    sock.listen(64)
    sock.settimeout(0.05)
    port = sock.getsockname()[1]
    seen = HangingServer()
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                pass
            else:
                conn.settimeout(0.0)
                held.append(conn)
                seen.connections += 1
            for c in held:
                try:
                    seen.received += len(c.recv(65536))
                except (BlockingIOError, OSError):
                    pass

    thread = threading.Thread(target=serve, daemon=True, name=f"hanging-{port}")
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        stop.set()
        thread.join(timeout=5)
        for c in held:
            c.close()
        sock.close()
