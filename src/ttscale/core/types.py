"""Core value types: problems, generation requests, candidates, results.

Everything here is small, typed and (where it can be) frozen. Records that go to disk have a
``to_dict`` / ``from_dict`` pair so the runner, the report and the replay engine read one format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Message = Mapping[str, str]
"""One chat message: ``{"role": "user" | "system" | "assistant", "content": "..."}``."""

FinishReason = Literal["stop", "length", "cancelled", "budget", "error"]


@dataclass(frozen=True)
class Problem:
    """One question to answer.

    ``messages`` is the chat form; ``prompt`` the raw-text form (used as a single user message
    when ``messages`` is empty). ``answer`` is the reference answer when known; ``metadata`` carries
    whatever the dataset's grader needs (for example a reasoning-gym entry).
    """

    id: str
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    answer: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.messages and self.prompt is None:
            raise ValueError(f"problem {self.id!r} has neither messages nor a prompt")

    def chat(self, system: str | None = None) -> list[dict[str, str]]:
        """The problem as chat messages, with an optional system prompt prepended."""
        msgs = [dict(m) for m in self.messages] or [{"role": "user", "content": self.prompt or ""}]
        if system and msgs[0].get("role") != "system":
            msgs.insert(0, {"role": "system", "content": system})
        return msgs

    @property
    def question(self) -> str:
        """The text of the last user message (or the prompt)."""
        if self.messages:
            users = [m["content"] for m in self.messages if m.get("role") == "user"]
            return users[-1] if users else self.messages[-1]["content"]
        return self.prompt or ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messages": [dict(m) for m in self.messages],
            "prompt": self.prompt,
            "answer": self.answer,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability and the top-k alternatives at its position."""

    token: str
    logprob: float
    token_id: int | None = None
    top: tuple[tuple[str, float], ...] = ()


StreamMonitor = Callable[[Sequence[TokenLogprob], str], bool]
"""Called by an engine as tokens arrive (tokens so far, text so far); returning True stops that
sample at once. The engine reports it with ``finish_reason="cancelled"`` and charges only the tokens
actually produced."""

TokenProgress = Callable[[int, bool], None]
"""Optional live progress hook: an engine that streams calls ``on_tokens(new_tokens, finished)`` as a
sample's tokens arrive (``new_tokens`` produced since its last call for that sample; ``finished``
once, when that sample ends). It may be called from any thread; keep it quick. Engines that do not
stream never call it: the context then counts a request's tokens when it returns."""


@dataclass(frozen=True)
class GenerationRequest:
    """What a strategy asks an engine for.

    ``prefix`` continues a partial assistant message (step-wise search): the engine renders the chat
    template, then appends the prefix without closing the assistant turn. ``prefix_token_ids``, when
    set, are the exact ids of that prefix (from a previous completion) and engines that accept token
    ids continue from them rather than re-tokenising ``prefix``. ``raw_prompt`` bypasses the chat
    template entirely (completions endpoint). ``problem_id`` and ``run_seed`` are set by the context
    (the replay engine draws its samples by them).
    """

    messages: tuple[Message, ...] = ()
    raw_prompt: str | None = None
    prefix: str = ""
    prefix_token_ids: tuple[int, ...] | None = None
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None
    problem_id: str | None = None
    run_seed: int | None = None
    monitor: StreamMonitor | None = field(default=None, compare=False, repr=False)
    on_tokens: TokenProgress | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.messages and self.raw_prompt is None:
            raise ValueError("a generation request needs messages or a raw_prompt")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def with_(self, **changes: Any) -> GenerationRequest:
        return replace(self, **changes)


@dataclass(frozen=True)
class Completion:
    """One sample returned by an engine. ``prompt_tokens`` is what the engine processed for the
    request this sample belongs to, split evenly over its samples so that sums are right."""

    text: str
    finish_reason: FinishReason = "stop"
    completion_tokens: int = 0
    prompt_tokens: int = 0
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    cached_prompt_tokens: int = 0
    answer_hint: str | None = None
    """The final answer when the engine knows it (replay, scripted); skips text extraction."""


@dataclass(frozen=True)
class Candidate:
    """A candidate solution: the text, its extracted final answer, its steps and its scores."""

    text: str
    answer: str | None = None
    steps: tuple[str, ...] = ()
    finish_reason: FinishReason = "stop"
    completion_tokens: int = 0
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    score: float | None = None
    step_scores: tuple[float, ...] | None = None
    correct: bool | None = None
    id: int = 0
    parent: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> Candidate:
        return replace(self, **changes)

    def to_dict(self, *, with_tokens: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "parent": self.parent,
            "text": self.text,
            "answer": self.answer,
            "steps": list(self.steps),
            "finish_reason": self.finish_reason,
            "completion_tokens": self.completion_tokens,
            "score": self.score,
            "step_scores": list(self.step_scores) if self.step_scores is not None else None,
            "correct": self.correct,
            "extra": dict(self.extra),
        }
        if with_tokens and self.token_ids is not None:
            d["token_ids"] = list(self.token_ids)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(
            text=d.get("text", ""),
            answer=d.get("answer"),
            steps=tuple(d.get("steps") or ()),
            finish_reason=d.get("finish_reason", "stop"),
            completion_tokens=int(d.get("completion_tokens") or 0),
            token_ids=tuple(d["token_ids"]) if d.get("token_ids") is not None else None,
            score=d.get("score"),
            step_scores=tuple(d["step_scores"]) if d.get("step_scores") is not None else None,
            correct=d.get("correct"),
            id=int(d.get("id") or 0),
            parent=d.get("parent"),
            extra=dict(d.get("extra") or {}),
        )


@dataclass(frozen=True)
class Cost:
    """What one problem cost. Generated tokens are the policy's; verifier tokens are kept apart."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    generations: int = 0
    engine_calls: int = 0
    verifier_prompt_tokens: int = 0
    verifier_generated_tokens: int = 0
    verifier_calls: int = 0
    wall_time_s: float = 0.0
    flops: float | None = None
    cached_prompt_tokens: int = 0
    """Of ``prompt_tokens``, those the engine served from its prefix cache (where it reports them)."""

    @property
    def total_tokens(self) -> int:
        return (
            self.prompt_tokens
            + self.generated_tokens
            + self.verifier_prompt_tokens
            + self.verifier_generated_tokens
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cost:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Result:
    """The outcome of one strategy on one problem."""

    problem_id: str
    answer: str | None
    chosen: Candidate | None
    candidates: tuple[Candidate, ...]
    cost: Cost
    strategy: str
    params: Mapping[str, Any]
    seed: int
    budget: Mapping[str, Any] = field(default_factory=dict)
    correct: bool | None = None
    reference: str | None = None
    engine: str = ""
    model: str = ""
    stopped_by_budget: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem_id": self.problem_id,
            "answer": self.answer,
            "reference": self.reference,
            "correct": self.correct,
            "strategy": self.strategy,
            "params": dict(self.params),
            "seed": self.seed,
            "budget": dict(self.budget),
            "engine": self.engine,
            "model": self.model,
            "cost": self.cost.to_dict(),
            "stopped_by_budget": self.stopped_by_budget,
            "chosen": self.chosen.id if self.chosen is not None else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        cands = tuple(Candidate.from_dict(c) for c in d.get("candidates") or ())
        chosen_id = d.get("chosen")
        chosen = next((c for c in cands if c.id == chosen_id), None) if chosen_id is not None else None
        return cls(
            problem_id=str(d["problem_id"]),
            answer=d.get("answer"),
            chosen=chosen,
            candidates=cands,
            cost=Cost.from_dict(d.get("cost") or {}),
            strategy=d.get("strategy", ""),
            params=dict(d.get("params") or {}),
            seed=int(d.get("seed") or 0),
            budget=dict(d.get("budget") or {}),
            correct=d.get("correct"),
            reference=d.get("reference"),
            engine=d.get("engine", ""),
            model=d.get("model", ""),
            stopped_by_budget=bool(d.get("stopped_by_budget", False)),
            extra=dict(d.get("extra") or {}),
        )
