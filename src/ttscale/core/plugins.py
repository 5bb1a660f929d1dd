"""Registries of the parts that are looked up by name at run time: engines and evaluators.

Backends register themselves on import (``@engine("name", Params)``); code that needs a part by name
(the CLI, a recipe, a verifier that runs its own judge engine, a strategy that picks an evaluator)
asks these registries, which import the built-in modules on first use. Nothing here imports a
concrete backend statically, so every layer may use them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from ttscale.core.evaluation import Evaluator
from ttscale.core.protocols import Engine
from ttscale.core.registry import Registry

EngineFactory = Callable[[str | None, Any], Engine]
"""``factory(model, params) -> Engine``; ``model`` is a path, a name or ``None`` for the default."""

ENGINES: Registry[EngineFactory] = Registry("engine")
_ENGINE_MODULES = ("embedded", "openai", "replay", "scripted", "ensemble", "pool", "vllm_inproc")


def load_engines() -> Registry[EngineFactory]:
    """Import the built-in engine modules (each registers itself) and return the registry."""
    return ENGINES.load_modules("ttscale.engines", _ENGINE_MODULES)


def make_engine(name: str, model: str | None = None, params: dict[str, Any] | None = None) -> Engine:
    """Build a registered engine by name (the CLI's and the lab's entry point)."""
    entry = load_engines().get(name)
    return entry.target(model, entry.make_params(params or {}))


EvaluatorFactory = Callable[[Any], Evaluator]
"""``factory(params) -> Evaluator``."""

EVALUATORS: Registry[EvaluatorFactory] = Registry("evaluator")
_EVALUATOR_MODULES = ("base", "meeting")


def load_evaluators() -> Registry[EvaluatorFactory]:
    """Import the built-in evaluator modules (each registers itself) and return the registry."""
    return EVALUATORS.load_modules("ttscale.evaluators", _EVALUATOR_MODULES)


def make_evaluator(name: str, options: Mapping[str, Any] | None = None) -> Evaluator:
    """An evaluator by name. ``options`` may hold more keys than the evaluator takes (a strategy
    passes its relevant parameters to whichever evaluator is chosen); unknown ones are ignored."""
    entry = load_evaluators().get(name)
    known = {f.name for f in fields(entry.params_cls)}
    return entry.target(entry.make_params({k: v for k, v in (options or {}).items() if k in known}))
