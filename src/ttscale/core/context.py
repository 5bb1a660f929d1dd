"""The one object a strategy talks to: engine, verifiers, budget, seeded RNG and trace.

Every engine and verifier call goes through here, so this is where cost is charged and the budget
is enforced, in one place for every strategy.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ttscale.core.budget import CostMeter, LiveTally
from ttscale.core.errors import ConfigError
from ttscale.core.execution import CodeExecutor
from ttscale.core.protocols import AnswerSpace, Engine, Verifier
from ttscale.core.types import Candidate, Completion, GenerationRequest, Problem

Role = Literal["policy", "verifier"]


class _Streamed:
    """The ``on_tokens`` hook of one policy request: forwards what a streaming engine reports to the
    run's live tally (and to a hook the strategy set), then settles the exact counts on return."""

    def __init__(self, live: LiveTally, inner: Callable[[int, bool], None] | None) -> None:
        self.live = live
        self.inner = inner
        self.tokens = 0
        self.samples = 0
        self._lock = threading.Lock()

    def __call__(self, new_tokens: int, finished: bool) -> None:
        with self._lock:
            self.tokens += new_tokens
            self.samples += bool(finished)
        self.live.add(new_tokens, int(bool(finished)))
        if self.inner is not None:
            self.inner(new_tokens, finished)

    def settle(self, out: Sequence[Completion]) -> None:
        """Correct the tally to the completions' real counts (all of it for a non-streaming engine)."""
        with self._lock:
            dt = sum(c.completion_tokens for c in out) - self.tokens
            ds = len(out) - self.samples
            self.tokens += dt
            self.samples += ds
        self.live.add(dt, ds)


def split_steps(text: str, delimiter: str = "\n\n") -> tuple[str, ...]:
    """Split a solution into reasoning steps at ``delimiter`` (empty pieces dropped)."""
    return tuple(s for s in (p.strip() for p in text.split(delimiter)) if s)


@dataclass
class Context:
    """Per-problem state handed to a strategy. Create one per (problem, strategy, seed)."""

    problem: Problem
    engine: Engine
    answers: AnswerSpace
    meter: CostMeter
    seed: int = 0
    verifiers: dict[str, Verifier] = field(default_factory=dict)
    make_verifier: Callable[[str], Verifier] | None = None
    system_prompt: str | None = None
    step_delimiter: str = "\n\n"
    trace: list[dict[str, Any]] = field(default_factory=list)
    engines: dict[str, Engine] = field(default_factory=dict)
    """Other engines by name (e.g. models as AB-MCTS arms); ``policy`` is always ``engine``."""
    executor: CodeExecutor | None = None
    """Runs programs against tests in the sandbox (set for code datasets; see core.execution)."""

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}:{self.problem.id}")
        self._next_id = 0

    # --- engines ------------------------------------------------------------------------------
    def engine_named(self, name: str | None) -> Engine:
        """The engine called ``name`` (``None``/``"policy"``: the policy engine)."""
        if name in (None, "", "policy"):
            return self.engine
        if name not in self.engines:
            raise ConfigError(
                f"unknown engine {name!r}; configured: policy{''.join(', ' + k for k in self.engines)} "
                "(add one with --extra-engine NAME=ENGINE:MODEL)"
            )
        return self.engines[name]

    def messages(self) -> tuple[dict[str, str], ...]:
        return tuple(self.problem.chat(self.system_prompt))

    async def generate(
        self, req: GenerationRequest, *, role: Role = "policy", engine: Engine | None = None
    ) -> list[Completion]:
        """Send one request, charged to this problem. Policy requests are clipped to the budget
        (``BudgetExhausted`` when nothing is left); verifier requests are counted, not capped."""
        eng = engine or self.engine
        seed = req.seed if req.seed is not None else self.rng.randrange(2**31)
        req = req.with_(seed=seed, problem_id=self.problem.id, run_seed=self.seed)
        if role == "verifier":
            out = await eng.generate(req)
            self.meter.charge_verifier(
                sum(c.prompt_tokens for c in out), sum(c.completion_tokens for c in out)
            )
            return out
        n, max_tokens = self.meter.clip(req.n, req.max_tokens)
        req = req.with_(n=n, max_tokens=max_tokens)
        live = self.meter.live
        streamed = _Streamed(live, req.on_tokens) if live is not None else None
        if streamed is not None:
            req = req.with_(on_tokens=streamed)
        self.meter.reserve(n, max_tokens)
        try:
            out = await eng.generate(req)
        finally:
            self.meter.release(n, max_tokens)
        self.meter.charge_policy(out)
        if streamed is not None:
            streamed.settle(out)
        return out

    def to_candidate(self, c: Completion, *, prefix: str = "", parent: int | None = None) -> Candidate:
        text = prefix + c.text
        answer = c.answer_hint if c.answer_hint is not None else self.answers.extract(text)
        cand = Candidate(
            text=text,
            answer=answer,
            steps=split_steps(text, self.step_delimiter),
            finish_reason=c.finish_reason,
            completion_tokens=c.completion_tokens,
            token_ids=c.token_ids,
            logprobs=c.logprobs,
            id=self._next_id,
            parent=parent,
        )
        self._next_id += 1
        return cand

    async def sample(
        self,
        n: int,
        *,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 512,
        stop: Sequence[str] = (),
        logprobs: int | None = None,
        per_request: int | None = None,
    ) -> list[Candidate]:
        """Sample ``n`` complete solutions to the problem, as concurrent requests of at most
        ``per_request`` samples each (default: one request), clipped to the budget."""
        per = per_request or n
        sizes = [min(per, n - i) for i in range(0, n, per)]
        base = GenerationRequest(
            messages=self.messages(), temperature=temperature, top_p=top_p, max_tokens=max_tokens,
            stop=tuple(stop), logprobs=logprobs,
        )
        batches = await asyncio.gather(*(self.generate(base.with_(n=k)) for k in sizes))
        return [self.to_candidate(c) for batch in batches for c in batch]

    # --- verifiers ----------------------------------------------------------------------------
    def verifier(self, name: str | None = None) -> Verifier:
        """A verifier by name (built on first use by ``make_verifier``); ``None`` = the first one
        configured for the run."""
        if name is None:
            if not self.verifiers:
                raise ConfigError("this strategy needs a verifier; pass one with --verifier NAME")
            return next(iter(self.verifiers.values()))
        if name not in self.verifiers:
            if self.make_verifier is None:
                raise ConfigError(f"unknown verifier {name!r}; configured: {', '.join(self.verifiers) or 'none'}")
            self.verifiers[name] = self.make_verifier(name)
        return self.verifiers[name]

    async def score(self, candidates: Sequence[Candidate], verifier: str | None = None) -> list[Candidate]:
        """Attach a verifier score to each candidate."""
        if not candidates:
            return []
        scores = await self.verifier(verifier).score(self.problem, candidates, self)
        return [c.with_(score=float(s)) for c, s in zip(candidates, scores, strict=True)]

    async def score_steps(
        self, candidates: Sequence[Candidate], verifier: str | None = None
    ) -> list[Candidate]:
        """Attach per-step scores to each (possibly partial) candidate."""
        if not candidates:
            return []
        steps = await self.verifier(verifier).score_steps(self.problem, candidates, self)
        return [c.with_(step_scores=tuple(map(float, s))) for c, s in zip(candidates, steps, strict=True)]

    def log(self, event: str, **data: Any) -> None:
        self.trace.append({"event": event, **data})
