"""``ttscale serve`` (register with ``app.command("serve")(serve_command)``) and a helper that runs
the server in a background thread on loopback (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ttscale.core.registry import parse_kv
from ttscale.serve.config import API_KEY_ENV, ServeConfig, read_config_file


def build_config(config: Path | None = None, **flags: Any) -> ServeConfig:
    """Settings from ``config`` (YAML/JSON) overridden by the flags that are not None."""
    data: dict[str, Any] = read_config_file(config) if config is not None else {}
    eparams = flags.pop("engine_params", None)
    if eparams:
        data["engine_params"] = {**(data.get("engine_params") or {}), **eparams}
    data.update({k: v for k, v in flags.items() if v is not None})
    return ServeConfig.from_mapping(data, source=str(config) if config else "ttscale serve")


def check_config(cfg: ServeConfig) -> None:
    """Fail fast (before binding a port or loading a model) on an unknown engine or engine option."""
    from ttscale.engines import load_engines

    entry = load_engines().get(cfg.engine)
    entry.make_params(cfg.engine_params)


def serve_command(
    engine: Annotated[str | None, typer.Option(help="upstream engine: embedded, openai, replay, scripted")] = None,
    model: Annotated[str | None, typer.Option(help="upstream model: a name, a GGUF path or an upstream model id")] = None,
    engine_param: Annotated[list[str] | None, typer.Option("--engine-param", help="engine option key=value")] = None,
    host: Annotated[str | None, typer.Option(help="address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port to bind (default 8000)")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar=API_KEY_ENV, show_envvar=True,
        help="require 'Authorization: Bearer KEY' on /v1/*")] = None,
    max_concurrency: Annotated[int | None, typer.Option(
        help="generation requests in flight at once; the excess gets 429 + Retry-After (default 16)")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="per-request time limit in seconds (default 600)")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="largest request body (default 1000000)")] = None,
    served_model_name: Annotated[str | None, typer.Option(help="name of the upstream model in /v1/models")] = None,
    max_request_generations: Annotated[int | None, typer.Option(
        "--max-request-generations", "--max-generations",
        help="ceiling on policy generations per request: the default budget, the largest n and sample-count "
             "parameter (larger is refused with 400) (default 256)")] = None,
    max_request_tokens: Annotated[int | None, typer.Option(
        "--max-request-tokens", "--max-generated-tokens",
        help="ceiling on generated tokens per request: the default budget, the largest max_tokens and token "
             "parameter (larger is refused with 400) (default 262144)")] = None,
    allow_no_auth: Annotated[bool, typer.Option(
        "--allow-no-auth", help="allow a non-loopback --host without an API key")] = False,
    config: Annotated[Path | None, typer.Option(help="YAML/JSON file of settings (flags override it)")] = None,
    log_level: Annotated[str | None, typer.Option(help="uvicorn log level (default info)")] = None,
) -> None:
    """Serve an OpenAI-compatible API that applies any strategy to any upstream engine."""
    import uvicorn

    from ttscale.serve.app import create_app

    cfg = build_config(
        config, engine=engine, model=model, engine_params=parse_kv(engine_param, "--engine-param"), host=host, port=port,
        api_key=api_key, max_concurrency=max_concurrency, timeout_s=timeout_s, max_body_bytes=max_body_bytes,
        served_model_name=served_model_name, max_request_generations=max_request_generations,
        max_request_tokens=max_request_tokens, allow_no_auth=allow_no_auth or None, log_level=log_level,
    )
    problem = cfg.open_bind_problem()
    if problem is not None:
        typer.echo(f"ttscale serve: {problem}", err=True)
        raise typer.Exit(2)
    check_config(cfg)
    auth = "API key required" if cfg.api_key else "no API key (set --api-key or $" + API_KEY_ENV + ")"
    typer.echo(f"ttscale serve: {cfg.engine}:{cfg.model or '(default model)'} on http://{cfg.host}:{cfg.port}/v1 "
               f"({auth}; max {cfg.max_concurrency} in flight, timeout {cfg.timeout_s:g} s; per request at most "
               f"{cfg.max_request_generations} generations and {cfg.max_request_tokens} tokens)", err=True)
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                timeout_graceful_shutdown=5, access_log=cfg.log_level == "debug")


def _free_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1", startup_timeout_s: float = 120.0,
                    log_level: str = "warning", backlog: int = 2048) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread on a free port of ``host``; yields the base URL
    (``http://HOST:PORT/v1``) once the server accepts connections, and stops it on exit."""
    import uvicorn

    sock = _free_socket(host)
    port = sock.getsockname()[1]
    cfg = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2,
                         backlog=backlog)
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"ttscale-serve-{port}")
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=5)
            sock.close()
            raise RuntimeError(f"ttscale serve did not start within {startup_timeout_s:g} s")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def main() -> None:
    """``python -m ttscale.serve.command ...``: the serve command without the ttscale CLI."""
    typer.run(serve_command)


if __name__ == "__main__":
    main()
