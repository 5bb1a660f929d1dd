"""Errors with messages a user can act on. The CLI prints ``TtscaleError`` without a traceback."""

from __future__ import annotations

from typing import Any


class TtscaleError(Exception):
    """An error whose message names the thing that is wrong and what to do about it."""


class ConfigError(TtscaleError):
    """Bad user input: unknown strategy, bad parameter, unreadable file, missing field."""


class EngineError(TtscaleError):
    """An engine failed (after its retries, where it has them)."""


class ModelFileError(TtscaleError):
    """A model file is missing, incomplete or corrupt."""


class BudgetExhausted(TtscaleError):
    """Raised by the context when a problem's budget leaves no room for another request."""

    def __init__(self, budget: Any, cost: Any) -> None:
        super().__init__(f"budget exhausted: {budget} after {cost}")
        self.budget = budget
        self.cost = cost
