"""One budget notion for every strategy, and the meter that charges against it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ttscale.core.errors import BudgetExhausted
from ttscale.core.types import Completion, Cost


@dataclass(frozen=True)
class Budget:
    """A cap on policy generations and/or generated tokens for one problem (``None`` = no cap).

    Every strategy runs through :class:`ttscale.core.context.Context`, which clips requests to what
    is left and raises :class:`BudgetExhausted` when nothing is; strategies catch it where they can
    still answer with what they have.
    """

    max_generations: int | None = None
    max_generated_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_generations", "max_generated_tokens"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"budget {name} must be >= 1 or unset, got {v}")

    def to_dict(self) -> dict[str, Any]:
        return {"max_generations": self.max_generations, "max_generated_tokens": self.max_generated_tokens}

    @property
    def unlimited(self) -> bool:
        return self.max_generations is None and self.max_generated_tokens is None


class LiveTally:
    """Running totals of policy tokens and finished samples over a whole run, for progress displays.

    Shared by the meters of all problems; engines that stream add tokens as they arrive (through
    ``GenerationRequest.on_tokens``, wired by the context), and the context settles each request's
    exact counts when it returns. Thread-safe (streaming engines call from worker threads). Never
    used for budgets or results: those come from the meter's own counters.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tokens = 0
        self.samples = 0
        self.first_token_at: float | None = None

    def add(self, tokens: int = 0, samples: int = 0) -> None:
        with self._lock:
            self.tokens += tokens
            self.samples += samples
            if self.first_token_at is None and self.tokens > 0:
                self.first_token_at = time.perf_counter()

    def read(self) -> tuple[int, int]:
        """``(tokens, samples)`` so far."""
        with self._lock:
            return self.tokens, self.samples


class CostMeter:
    """Counts everything one problem spends. Not shared between problems (``live`` may be)."""

    def __init__(
        self, budget: Budget | None = None, params_count: float | None = None, live: LiveTally | None = None
    ) -> None:
        self.budget = budget or Budget()
        self.params_count = params_count
        self.live = live
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        self.generated_tokens = 0
        self.generations = 0
        self.engine_calls = 0
        self.verifier_prompt_tokens = 0
        self.verifier_generated_tokens = 0
        self.verifier_calls = 0
        self.reserved_generations = 0
        self.reserved_tokens = 0
        self.stopped_by_budget = False
        self._t0 = time.perf_counter()
        self._t1: float | None = None

    # --- budget -------------------------------------------------------------------------------
    def remaining_generations(self) -> int | None:
        b = self.budget.max_generations
        return None if b is None else max(0, b - self.generations - self.reserved_generations)

    def remaining_tokens(self) -> int | None:
        b = self.budget.max_generated_tokens
        return None if b is None else max(0, b - self.generated_tokens - self.reserved_tokens)

    def clip(self, n: int, max_tokens: int) -> tuple[int, int]:
        """Clip a request's sample count and per-sample token cap to what the budget leaves.

        The token cap is shared among the ``n`` samples so that the request can never overshoot.
        Raises :class:`BudgetExhausted` when not even one sample of one token fits.
        """
        rg = self.remaining_generations()
        rt = self.remaining_tokens()
        if rg is not None:
            n = min(n, rg)
        if rt is not None and n > 0:
            n = min(n, rt)
            max_tokens = min(max_tokens, rt // n) if n else 0
        if n < 1 or max_tokens < 1:
            self.stopped_by_budget = True
            raise BudgetExhausted(self.budget, self.snapshot())
        return n, max_tokens

    def reserve(self, n: int, max_tokens: int) -> None:
        self.reserved_generations += n
        if self.budget.max_generated_tokens is not None:
            self.reserved_tokens += n * max_tokens

    def release(self, n: int, max_tokens: int) -> None:
        self.reserved_generations -= n
        if self.budget.max_generated_tokens is not None:
            self.reserved_tokens -= n * max_tokens

    # --- charging -----------------------------------------------------------------------------
    def charge_policy(self, completions: list[Completion]) -> None:
        self.engine_calls += 1
        self.generations += len(completions)
        for c in completions:
            self.prompt_tokens += c.prompt_tokens
            self.cached_prompt_tokens += c.cached_prompt_tokens
            self.generated_tokens += c.completion_tokens

    def charge_verifier(self, prompt_tokens: int, generated_tokens: int, calls: int = 1) -> None:
        self.verifier_calls += calls
        self.verifier_prompt_tokens += prompt_tokens
        self.verifier_generated_tokens += generated_tokens

    def stop_clock(self) -> None:
        if self._t1 is None:
            self._t1 = time.perf_counter()

    def snapshot(self) -> Cost:
        end = self._t1 if self._t1 is not None else time.perf_counter()
        tokens = (
            self.prompt_tokens + self.generated_tokens + self.verifier_prompt_tokens + self.verifier_generated_tokens
        )
        return Cost(
            prompt_tokens=self.prompt_tokens,
            generated_tokens=self.generated_tokens,
            generations=self.generations,
            engine_calls=self.engine_calls,
            verifier_prompt_tokens=self.verifier_prompt_tokens,
            verifier_generated_tokens=self.verifier_generated_tokens,
            verifier_calls=self.verifier_calls,
            wall_time_s=round(end - self._t0, 4),
            flops=2.0 * self.params_count * tokens if self.params_count else None,
            cached_prompt_tokens=self.cached_prompt_tokens,
        )
