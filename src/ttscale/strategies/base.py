"""What a strategy is: an async function ``(problem, ctx, params) -> Outcome``, registered by name."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttscale.core.context import Context
from ttscale.core.registry import Registry
from ttscale.core.types import Candidate, Problem


@dataclass(frozen=True)
class Outcome:
    """What a strategy returns: its answer, the candidate it chose, and every candidate it made."""

    answer: str | None
    chosen: Candidate | None
    candidates: Sequence[Candidate]
    extra: Mapping[str, Any] = field(default_factory=dict)


StrategyFn = Callable[[Problem, Context, Any], Awaitable[Outcome]]

STRATEGIES: Registry[StrategyFn] = Registry("strategy")
strategy = STRATEGIES.register

_loaded = False


def load_strategies() -> Registry[StrategyFn]:
    """Import every module in this package so that each registers itself."""
    global _loaded
    if not _loaded:
        import ttscale.strategies as pkg

        for mod in pkgutil.iter_modules(pkg.__path__):
            if mod.name != "base" and not mod.name.startswith("_"):
                importlib.import_module(f"ttscale.strategies.{mod.name}")
        _loaded = True
    return STRATEGIES
