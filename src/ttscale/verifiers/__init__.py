"""Verifiers: how to score candidates. Registered by name in ``VERIFIERS``."""

from ttscale.verifiers.base import VERIFIERS, load_verifiers, make_verifier

__all__ = ["VERIFIERS", "load_verifiers", "make_verifier"]
