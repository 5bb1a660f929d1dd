"""Verifier registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import Registry

VerifierFactory = Callable[[Engine, Any], Verifier]
"""``factory(policy_engine, params) -> Verifier``; model-based verifiers default to the policy engine."""

VERIFIERS: Registry[VerifierFactory] = Registry("verifier")
verifier = VERIFIERS.register

_MODULES = ("answer_check", "llm_judge", "confidence", "prm", "reward_http", "pmi", "code")


def load_verifiers() -> Registry[VerifierFactory]:
    """Import the built-in modules (each registers itself) and return the registry."""
    return VERIFIERS.load_modules("ttscale.verifiers", _MODULES)


def make_verifier(name: str, engine: Engine, params: dict[str, Any] | None = None) -> Verifier:
    entry = load_verifiers().get(name)
    return entry.target(engine, entry.make_params(params or {}))
