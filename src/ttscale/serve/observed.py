"""The per-request :class:`~ttscale.core.context.Context` of the server: it reports every finished
engine call (the streaming progress events) and seeds its RNG from the client's seed only."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ttscale.core.context import Context, Role
from ttscale.core.protocols import Engine
from ttscale.core.types import Completion, GenerationRequest


@dataclass
class ObservedContext(Context):
    """A context that reports every finished engine call (policy or verifier) to ``on_generate``,
    and whose RNG depends on the request's seed only when the client gave one (reproducible)."""

    on_generate: Callable[[str], None] | None = None
    rng_key: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rng_key is not None:
            self.rng = random.Random(self.rng_key)

    async def generate(self, req: GenerationRequest, *, role: Role = "policy",
                       engine: Engine | None = None) -> list[Completion]:
        out = await super().generate(req, role=role, engine=engine)
        if self.on_generate is not None:
            self.on_generate(role)
        return out
