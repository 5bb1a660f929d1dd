"""Engine registry and helpers shared by the backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ttscale.core.protocols import Engine
from ttscale.core.registry import Registry

EngineFactory = Callable[[str | None, Any], Engine]
"""``factory(model, params) -> Engine``; ``model`` is a path, a name or ``None`` for the default."""

ENGINES: Registry[EngineFactory] = Registry("engine")
engine = ENGINES.register

_MODULES = ("embedded", "openai", "replay", "scripted", "ensemble")


def load_engines() -> Registry[EngineFactory]:
    """Import the built-in modules (each registers itself) and return the registry."""
    return ENGINES.load_modules("ttscale.engines", _MODULES)


def make_engine(name: str, model: str | None = None, params: dict[str, Any] | None = None) -> Engine:
    """Build a registered engine by name (the CLI's and the lab's entry point)."""
    entry = load_engines().get(name)
    return entry.target(model, entry.make_params(params or {}))
