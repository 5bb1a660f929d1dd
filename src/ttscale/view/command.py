"""The ``ttscale view`` command: serve the viewer on loopback, or write one self-contained page."""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from ttscale.core.errors import ConfigError

HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def bind(port: int) -> socket.socket:
    """A listening socket on loopback (``port`` 0: any free port); a port in use is a ConfigError."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
    except OSError as e:
        sock.close()
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            raise ConfigError(f"port {port} on {HOST} is {'in use' if e.errno == errno.EADDRINUSE else 'not allowed'}"
                              " (pick another with --port, or --port 0 for any free port)") from e
        raise ConfigError(f"cannot listen on {HOST}:{port}: {e.strerror}") from e
    sock.listen(64)
    return sock


def write_export(cat: object, out: Path) -> Path:
    """The export page, written atomically (a temp file in the same folder, then renamed)."""
    from ttscale.view.app import export_html

    text = export_html(cat)  # type: ignore[arg-type]
    if out.is_dir():
        raise ConfigError(f"--export {out} is a folder: give a file name such as {out / 'view.html'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".view-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def view_command(
    paths: Annotated[list[Path] | None, typer.Argument(help="results files, sweep folders, sweep tables "
                                                            "(.jsonl/.parquet) and at most one policy JSON")] = None,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: any free port)")] = DEFAULT_PORT,
    export: Annotated[Path | None, typer.Option("--export", help="write one self-contained HTML page here "
                                                                   "instead of serving")] = None,
) -> None:
    """Look inside runs in the browser: problems, candidates, votes, search trees, sweeps; live."""
    from ttscale.view.catalog import Catalog

    cat = Catalog(paths or [])
    if export is not None:
        write_export(cat, export)
        print(f"wrote {export} ({export.stat().st_size:,} bytes)")
        return
    import uvicorn

    from ttscale.view.app import create_app

    sock = bind(port)
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    runs, sweeps = len(cat.runs), len(cat.sweeps)
    print(f"ttscale view: {runs} run{'s' * (runs != 1)}, {sweeps} sweep{'s' * (sweeps != 1)} at {url}  (Ctrl-C stops)",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(cat), log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    sys.stdout.flush()
