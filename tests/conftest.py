"""Shared pytest fixtures (keep minimal; other modules may append their own)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def embedded_small() -> Iterator[object]:
    """One embedded llama.cpp engine on SmolLM2-135M for the whole session (skipped when the model
    package is not installed)."""
    from ttscale.core.errors import ModelFileError
    from ttscale.engines.embedded import EmbeddedEngine, EmbeddedParams

    try:
        eng = EmbeddedEngine("smollm2-135m", EmbeddedParams(n_parallel=4, n_ctx=4 * 2048))
    except ModelFileError as e:
        pytest.skip(f"smollm2-135m not available: {e}")
    yield eng
    asyncio.run(eng.aclose())
