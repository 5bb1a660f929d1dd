"""The interfaces everything else plugs into: engines, verifiers, answer spaces and graders.

A strategy sees only these protocols (through :class:`ttscale.core.context.Context`); nothing in
``core`` or ``strategies`` imports a concrete backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ttscale.core.errors import ConfigError
from ttscale.core.types import Candidate, Completion, GenerationRequest, Problem

if TYPE_CHECKING:
    from ttscale.core.context import Context


@runtime_checkable
class Engine(Protocol):
    """An async text generator. Many problems call ``generate`` concurrently on one engine; the
    engine batches them (in-process) or sends them concurrently (HTTP) so it stays saturated.

    ``generate`` returns exactly ``req.n`` completions. Cancelling the awaiting task, or a
    ``req.monitor`` returning True, stops generation in the backend.
    """

    name: str
    model: str
    params_count: float | None
    supports_token_ids: bool
    supports_logprobs: bool

    async def generate(self, req: GenerationRequest) -> list[Completion]: ...

    async def aclose(self) -> None: ...


class Verifier:
    """Scores whole candidates (higher is better, usually in [0, 1]) and, where it can, each step
    of a partial candidate. Verifiers that call a model do so through ``ctx.generate(..., role=
    "verifier")`` so that their tokens are charged to the problem's verifier counters."""

    name: str = "verifier"

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        raise NotImplementedError

    async def score_steps(
        self, problem: Problem, candidates: Sequence[Candidate], ctx: Context
    ) -> list[list[float]]:
        raise ConfigError(f"verifier {self.name!r} scores whole candidates only, not steps")


class AnswerSpace(Protocol):
    """How final answers are extracted from text and which answers count as the same."""

    def extract(self, text: str) -> str | None: ...

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """A class label per answer (``None`` for a missing answer): equal labels = equivalent."""
        ...


class Grader(Protocol):
    """Decides whether an answer is correct for a problem (needs the reference or the task)."""

    async def grade(self, problem: Problem, answer: str | None) -> bool | None: ...
