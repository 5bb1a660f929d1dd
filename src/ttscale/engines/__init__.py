"""Engines: how to generate. Each backend is one module, registered by name in ``ENGINES``."""

from ttscale.engines.base import ENGINES, load_engines, make_engine

__all__ = ["ENGINES", "load_engines", "make_engine"]
