"""Engine registry and helpers shared by the backends."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ttscale.core.protocols import Engine
from ttscale.core.registry import Registry

EngineFactory = Callable[[str | None, Any], Engine]
"""``factory(model, params) -> Engine``; ``model`` is a path, a name or ``None`` for the default."""

ENGINES: Registry[EngineFactory] = Registry("engine")
engine = ENGINES.register

_MODULES = ("embedded", "openai", "replay", "scripted", "ensemble")
_loaded = False


def load_engines() -> Registry[EngineFactory]:
    global _loaded
    if not _loaded:
        for m in _MODULES:
            importlib.import_module(f"ttscale.engines.{m}")
        _loaded = True
    return ENGINES


def make_engine(name: str, model: str | None = None, params: dict[str, Any] | None = None) -> Engine:
    """Build a registered engine by name (the CLI's and the lab's entry point)."""
    entry = load_engines().get(name)
    return entry.target(model, entry.make_params(params or {}))
