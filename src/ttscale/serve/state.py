"""What the routes of one app share: :class:`ServeState` (config, engine, answer space, metrics,
requests in flight) and the default answer space."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ttscale.core.errors import ConfigError
from ttscale.core.protocols import AnswerSpace, Engine, Verifier
from ttscale.serve.config import ServeConfig
from ttscale.serve.errors import ApiError
from ttscale.serve.metrics import Metrics


def default_answers() -> AnswerSpace:
    """The answer space of requests when the app is given none: math answers (boxed or last number,
    grouped by symbolic equality)."""
    from ttscale.verifiers.math_answers import MathAnswers

    return MathAnswers()


@dataclass
class ServeState:
    """What the routes share: config, engine, answer space, metrics."""

    config: ServeConfig
    engine: Engine | None
    answers: AnswerSpace
    metrics: Metrics
    make_verifier: Callable[[str], Verifier] | None = None
    owns_engine: bool = False
    in_flight: int = 0
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def upstream(self) -> Engine:
        if self.engine is None:
            raise ApiError(503, "the upstream engine is not loaded yet", "server_error", "engine_not_ready")
        return self.engine

    @property
    def served_model(self) -> str:
        if self.config.served_model_name:
            return self.config.served_model_name
        if self.engine is not None:
            return self.engine.model
        return self.config.model or self.config.engine

    def verifier_factory(self) -> Callable[[str], Verifier]:
        if self.make_verifier is not None:
            return self.make_verifier

        def make(name: str) -> Verifier:
            try:
                from ttscale.verifiers import make_verifier
            except ImportError as e:  # pragma: no cover - depends on the installed verifiers
                raise ConfigError(f"verifier {name!r} is unavailable: {e}") from e
            try:
                return make_verifier(name, self.upstream, self.config.verifier_params.get(name))
            except ImportError as e:
                raise ConfigError(f"verifier {name!r} is unavailable: {e}") from e

        return make
