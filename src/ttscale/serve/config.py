"""Settings of ``ttscale serve``: one dataclass, loadable from YAML/JSON and overridable by flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.core.errors import ConfigError

API_KEY_ENV = "TTSCALE_SERVE_API_KEY"


@dataclass
class ServeConfig:
    """Everything the server needs. Field names are also the keys of a ``--config`` file."""

    engine: str = "embedded"
    """Upstream engine name (any registered ttscale engine)."""
    model: str | None = None
    """Upstream model (engine-specific: a name, a GGUF path, an upstream model id); None = engine default."""
    engine_params: dict[str, Any] = field(default_factory=dict)
    served_model_name: str | None = None
    """Name the upstream model is listed under in /v1/models (default: the engine's model)."""
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    """When set, /v1/* requires ``Authorization: Bearer <key>`` (the CLI also reads $TTSCALE_SERVE_API_KEY)."""
    max_concurrency: int = 16
    """Requests to /v1/chat/completions and /v1/completions in flight at once; the excess gets 429."""
    retry_after_s: int = 1
    """``Retry-After`` seconds sent with a 429."""
    timeout_s: float = 600.0
    """Per-request wall-clock limit (504 after it)."""
    max_body_bytes: int = 1_000_000
    """Largest request body accepted (413 above it)."""
    default_max_tokens: int = 1024
    """``max_tokens`` of pass-through requests that do not set it."""
    seed: int = 0
    """Run seed of strategy requests that do not set ``seed``."""
    max_request_generations: int = 256
    """Ceiling on policy generations per request: the default budget of every request (a request's
    own ``ttscale.budget`` may only lower it), the largest pass-through ``n`` and the largest
    sample-count parameter of a strategy (a larger value is refused with 400)."""
    max_request_tokens: int = 262144
    """Ceiling on generated policy tokens per request: the default budget of every request, the
    largest ``max_tokens`` and the largest token parameter of a strategy (larger is refused)."""
    allow_no_auth: bool = False
    """Allow binding a non-loopback address without an API key (refused otherwise)."""
    system_prompt: str | None = None
    """Prepended only when a request has no system message of its own (None = send messages as they are)."""
    verifier_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Options of verifiers built on demand (verifier name -> key/values)."""
    heartbeat_s: float = 10.0
    """Streaming: a progress event at least this often while a strategy runs."""
    disconnect_poll_s: float = 0.2
    """Non-streaming: how often to check whether the client went away."""
    log_level: str = "info"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.max_concurrency < 1:
            raise ConfigError(f"serve: max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.timeout_s <= 0:
            raise ConfigError(f"serve: timeout_s must be > 0, got {self.timeout_s}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"serve: max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"serve: port must be in 1..65535, got {self.port}")
        if self.default_max_tokens < 1:
            raise ConfigError(f"serve: default_max_tokens must be >= 1, got {self.default_max_tokens}")
        for name in ("max_request_generations", "max_request_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"serve: {name} must be an integer >= 1, got {v!r}")

    def open_bind_problem(self) -> str | None:
        """Why this config must not start: a non-loopback address without an API key (unless
        ``allow_no_auth``); None when it may."""
        if self.api_key or self.allow_no_auth or is_loopback(self.host):
            return None
        return (f"refusing to serve on {self.host!r} without an API key: anyone who can reach it could "
                f"spend the upstream engine. Set --api-key (or ${API_KEY_ENV}), bind 127.0.0.1, or pass "
                "--allow-no-auth to serve without one anyway")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> ServeConfig:
        data = {_RENAMED.get(k, k): v for k, v in data.items()}
        known = cls.field_names()
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**dict(data))
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from e

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> ServeConfig:
        """Read a YAML (or JSON) file of settings; ``overrides`` that are not None win over it."""
        data = read_config_file(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(data, source=str(path))


_RENAMED = {"max_generations": "max_request_generations", "max_generated_tokens": "max_request_tokens"}
"""Earlier names of settings, still read from config files."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"serve: cannot read config file {p}: {e.strerror}") from e
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:
        raise ConfigError(f"serve: config file {p} is not valid YAML/JSON: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"serve: config file {p} must hold a mapping of settings")
    return dict(data)
