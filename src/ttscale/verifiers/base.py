"""Verifier registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import Registry

VerifierFactory = Callable[[Engine, Any], Verifier]
"""``factory(policy_engine, params) -> Verifier``; model-based verifiers default to the policy engine."""

VERIFIERS: Registry[VerifierFactory] = Registry("verifier")
verifier = VERIFIERS.register

_MODULES = ("answer_check", "llm_judge", "confidence", "prm", "reward_http", "pmi")
_loaded = False


def load_verifiers() -> Registry[VerifierFactory]:
    global _loaded
    if not _loaded:
        for m in _MODULES:
            importlib.import_module(f"ttscale.verifiers.{m}")
        _loaded = True
    return VERIFIERS


def make_verifier(name: str, engine: Engine, params: dict[str, Any] | None = None) -> Verifier:
    entry = load_verifiers().get(name)
    return entry.target(engine, entry.make_params(params or {}))
