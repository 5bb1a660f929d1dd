"""The interfaces everything else plugs into: engines, verifiers, answer spaces and graders.

A strategy sees only these protocols (through :class:`ttscale.core.context.Context`); nothing in
``core`` or ``strategies`` imports a concrete backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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


# --- optional engine capabilities: strategies check them with the helpers below, never hasattr ---
@runtime_checkable
class TokenIdEngine(Protocol):
    """An engine that continues a candidate from its token ids (``GenerationRequest.prefix_token_ids``)
    and decodes ids with its own tokenizer: tree search extends paths by ids so a prefix cache hits."""

    supports_token_ids: bool

    def detokenize(self, ids: Sequence[int]) -> str: ...


@runtime_checkable
class TokenizingEngine(TokenIdEngine, Protocol):
    """A :class:`TokenIdEngine` that also encodes text (``special=True`` parses special tokens such as
    ``<think>``): budget forcing inserts "Wait" and the answer cue as ids."""

    def tokenize(self, text: str, *, special: bool = False) -> Sequence[int]: ...


def token_id_engine(engine: object) -> TokenIdEngine | None:
    """``engine`` when it continues from token ids and decodes them, else None."""
    if isinstance(engine, TokenIdEngine) and engine.supports_token_ids:
        return engine
    return None


def tokenizing_engine(engine: object) -> TokenizingEngine | None:
    """``engine`` when it continues from token ids and both encodes and decodes text, else None."""
    if isinstance(engine, TokenizingEngine) and engine.supports_token_ids:
        return engine
    return None


@runtime_checkable
class ReplicaStatsEngine(Protocol):
    """An engine made of several replicas (the ``pool`` engine) that counts, per replica, requests,
    errors, tokens and prefix-cache hits: ``ttscale run`` prints them, ``ttscale serve`` exports them."""

    def replica_stats(self) -> list[dict[str, Any]]: ...


def replica_stats(engine: object) -> list[dict[str, Any]] | None:
    """Per-replica counters of ``engine`` when it has replicas, else None."""
    return engine.replica_stats() if isinstance(engine, ReplicaStatsEngine) else None


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


@runtime_checkable
class LastStepVerifier(Protocol):
    """A step verifier that can score only the newest step of each partial candidate (all steps
    shown), one query per candidate: step-wise search then pays once per new step instead of
    re-scoring every prefix (the ``llm_judge`` verifier)."""

    async def score_last_steps(
        self, problem: Problem, candidates: Sequence[Candidate], ctx: Context
    ) -> list[float]: ...


class AnswerSpace(Protocol):
    """How final answers are extracted from text and which answers count as the same.

    An answer space with a closed set of answers may declare it with an ``options: int`` attribute
    (e.g. 4 for A-D multiple choice): adaptive stopping then needs more agreement, since a few
    guesses among few options agree by chance. Read it with :func:`answer_options`."""

    def extract(self, text: str) -> str | None: ...

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """A class label per answer (``None`` for a missing answer): equal labels = equivalent."""
        ...


def answer_options(space: object) -> int:
    """The number of answers ``space`` declares (its ``options`` attribute), 0 for an open answer
    space (free-form answers) or one that declares nothing."""
    n = getattr(space, "options", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TypeError(f"answer space {type(space).__name__}: options must be a count >= 0, got {n!r}")
    return n


class Grader(Protocol):
    """Decides whether an answer is correct for a problem (needs the reference or the task)."""

    async def grade(self, problem: Problem, answer: str | None) -> bool | None: ...
