"""Running a :class:`~ttscale.serve.plan.Plan`: a :class:`Job` runs the strategy (or one plain
generation) through one observed context and meter; :func:`run_unary` waits for it, cancelling it on
timeout (504) or when the client goes away."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ttscale.core.budget import CostMeter
from ttscale.core.io import jsonable
from ttscale.core.types import Cost, GenerationRequest, Problem, TokenLogprob
from ttscale.serve.errors import ClientGone, timeout_error
from ttscale.serve.observed import ObservedContext
from ttscale.serve.plan import Plan
from ttscale.serve.state import ServeState
from ttscale.strategies.base import Outcome


@dataclass
class Choice:
    text: str
    finish_reason: str
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass
class Answer:
    """What a plan produced: the choices, the cost and the strategy's summary."""

    choices: list[Choice]
    cost: Cost
    info: dict[str, Any]


def finish_reason(reason: str) -> str:
    """OpenAI's finish reason of an engine's (a budget cut is a ``length``)."""
    return "length" if reason in ("length", "budget") else "stop"


def info_jsonable(obj: Any) -> Any:
    """``obj`` made JSON-ready for a response; never raises: non-finite floats (which strict JSON
    cannot hold) become ``"inf"``, ``"-inf"``, ``"nan"``, and a value JSON cannot hold at all (keys
    that are not strings or numbers, cycles) becomes the ``str`` of the whole value."""
    try:
        return _finite(jsonable(obj))
    except (TypeError, ValueError, RecursionError):
        return str(obj)


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


class Job:
    """One plan running on the engine, observable (progress) and cancellable."""

    def __init__(self, plan: Plan, state: ServeState,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.plan = plan
        self.state = state
        self.on_progress = on_progress
        self.t0 = time.perf_counter()
        engine = state.upstream
        self.meter = CostMeter(plan.budget, engine.params_count)
        if plan.kind == "chat":
            problem = Problem(id=plan.id, messages=plan.messages)
        else:
            problem = Problem(id=plan.id, prompt=plan.prompt)
        self.ctx = ObservedContext(
            problem=problem, engine=engine, answers=state.answers, meter=self.meter,
            seed=plan.seed if plan.seed is not None else state.config.seed,
            make_verifier=state.verifier_factory(), system_prompt=state.config.system_prompt,
            on_generate=self._progress,
            rng_key=f"serve:{plan.seed}" if plan.seed is not None else None,
        )

    def progress(self, event: str) -> dict[str, Any]:
        m = self.meter
        return {
            "event": event,
            "engine_calls": m.engine_calls,
            "generations": m.generations,
            "prompt_tokens": m.prompt_tokens,
            "generated_tokens": m.generated_tokens,
            "verifier_calls": m.verifier_calls,
            "verifier_tokens": m.verifier_prompt_tokens + m.verifier_generated_tokens,
            "elapsed_s": round(time.perf_counter() - self.t0, 3),
        }

    def _progress(self, role: str) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress("generate" if role == "policy" else "verify"))

    async def run(self) -> Answer:
        plan = self.plan
        info: dict[str, Any] = {"strategy": plan.strategy, "params": plan.params_dict(),
                                "budget": plan.budget.to_dict(), "upstream_model": self.state.upstream.model}
        try:
            if plan.entry is None:
                choices = await self._passthrough()
            else:
                outcome: Outcome = await plan.entry.target(self.ctx.problem, self.ctx, plan.params)
                choices = [self._choice(outcome, info)]
        finally:
            self.meter.stop_clock()
        info["stopped_by_budget"] = self.meter.stopped_by_budget
        return Answer(choices, self.meter.snapshot(), info)

    async def _passthrough(self) -> list[Choice]:
        p = self.plan
        common: dict[str, Any] = dict(n=p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                                      stop=p.stop, seed=p.seed, logprobs=p.logprobs)
        if p.kind == "chat":
            req = GenerationRequest(messages=self.ctx.messages(), **common)
        else:
            req = GenerationRequest(raw_prompt=p.prompt or "", **common)
        comps = await self.ctx.generate(req)
        return [Choice(c.text, finish_reason(c.finish_reason), c.logprobs if p.logprobs else None) for c in comps]

    def _choice(self, outcome: Outcome, info: dict[str, Any]) -> Choice:
        cands = list(outcome.candidates)
        chosen = outcome.chosen or (cands[0] if cands else None)
        info["answer"] = outcome.answer
        info["candidates"] = len(cands)
        info["chosen"] = chosen.id if chosen is not None else None
        extra = {k: v for k, v in outcome.extra.items() if k != "trace"}
        if extra:
            info["extra"] = info_jsonable(extra)
        if chosen is None:
            return Choice("", "length" if self.meter.stopped_by_budget else "stop")
        return Choice(chosen.text, finish_reason(chosen.finish_reason))


async def settle(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait (briefly) until it has unwound."""
    if not task.done():
        task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(_swallow(task)), timeout=5.0)
    except (TimeoutError, asyncio.CancelledError):
        pass


async def _swallow(task: asyncio.Task[Any]) -> None:
    try:
        await task
    except BaseException:
        pass


def consume(task: asyncio.Task[Any]) -> None:
    """Done-callback that retrieves a cancelled task's exception (no 'never retrieved' warning)."""
    if not task.cancelled():
        task.exception()


async def run_unary(job: Job, request: Request) -> Answer:
    """Run a job to completion, cancelling it on timeout (504) or client disconnect."""
    st = job.state
    cfg = st.config
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.timeout_s
    task = asyncio.create_task(job.run())
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                st.metrics.cancel("timeout")
                await settle(task)
                raise timeout_error(cfg.timeout_s)
            done, _ = await asyncio.wait({task}, timeout=min(cfg.disconnect_poll_s, remaining))
            if done:
                return task.result()
            if await request.is_disconnected():
                st.metrics.cancel("disconnect")
                await settle(task)
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()
