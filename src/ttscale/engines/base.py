"""Engine registration for the backends (the registry itself is :data:`ttscale.core.plugins.ENGINES`)."""

from __future__ import annotations

from ttscale.core.plugins import ENGINES, EngineFactory, load_engines, make_engine

engine = ENGINES.register

__all__ = ["ENGINES", "EngineFactory", "engine", "load_engines", "make_engine"]
