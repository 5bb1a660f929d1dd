"""ttscale: scaling LLM test-time compute.

    import ttscale
    r = ttscale.solve("What is 17 * 23?", strategy="self_consistency", n=8)
    s = ttscale.run("default", strategy="best_of_n", n=4, verifier="llm_judge", limit=5)

See :mod:`ttscale.api`. The names below load on first use, so ``import ttscale.core...`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "solve": "ttscale.api", "asolve": "ttscale.api", "run": "ttscale.api", "arun": "ttscale.api",
    "Budget": "ttscale.core.budget", "Problem": "ttscale.core.types", "Result": "ttscale.core.types",
    "RunSummary": "ttscale.lab.runner",
}
__all__ = ["Budget", "Problem", "Result", "RunSummary", "__version__", "arun", "asolve", "run", "solve"]

if TYPE_CHECKING:
    from ttscale.api import arun, asolve, run, solve
    from ttscale.core.budget import Budget
    from ttscale.core.types import Problem, Result
    from ttscale.lab.runner import RunSummary


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ttscale' has no attribute {name!r}")
