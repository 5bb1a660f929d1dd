"""Several engines as one proposer: each sample comes from engine k with probability w_k.

Used by Best-of-∞'s weighted multi-model ensemble (weights from
:func:`ttscale.lab.ensemble_weights.fit_ensemble_weights`). The engine choice for the j-th sample of
a problem in a run is drawn from ``random.Random(f"ensemble:{run_seed}:{problem_id}")`` in draw
order, so it is reproducible and independent of how a strategy splits its requests. A request for
n samples is split into one sub-request per chosen engine (sent concurrently) and the completions
are returned in draw order.

From the CLI: ``--engine ensemble --model "replay:a.jsonl,replay:b.jsonl" --engine-param weights=0.7,0.3``
(each member is ``ENGINE:MODEL``, built with that engine's default options).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Engine
from ttscale.core.registry import param
from ttscale.core.types import Completion, GenerationRequest
from ttscale.engines.base import engine, make_engine


class EnsembleEngine:
    """A mixture of engines with fixed weights (see module docstring)."""

    name = "ensemble"

    def __init__(self, engines: Sequence[Engine], weights: Sequence[float] | None = None) -> None:
        if not engines:
            raise ValueError("an ensemble needs at least one engine")
        w = list(weights) if weights is not None else [1.0] * len(engines)
        if len(w) != len(engines) or any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError("ensemble weights must be non-negative, one per engine, not all zero")
        self.engines = list(engines)
        self.weights = [x / sum(w) for x in w]
        self.model = "+".join(f"{e.model}@{x:.3g}" for e, x in zip(self.engines, self.weights, strict=True))
        pcs = [e.params_count for e in self.engines]
        self.params_count = None if any(p is None for p in pcs) else sum(
            p * x for p, x in zip(pcs, self.weights, strict=True))  # type: ignore[operator]
        self.supports_token_ids = all(e.supports_token_ids for e in self.engines)
        self.supports_logprobs = all(e.supports_logprobs for e in self.engines)
        self._rngs: dict[tuple[str, int], random.Random] = {}
        self.drawn: list[int] = []
        """Engine index of every sample handed out, in order (for inspection and tests)."""

    def choose(self, problem_id: str, run_seed: int, n: int) -> list[int]:
        key = (problem_id, run_seed)
        rng = self._rngs.setdefault(key, random.Random(f"ensemble:{run_seed}:{problem_id}"))
        return rng.choices(range(len(self.engines)), weights=self.weights, k=n)

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        picks = self.choose(req.problem_id or "", req.run_seed or 0, req.n)
        self.drawn.extend(picks)
        per: dict[int, int] = {}
        for k in picks:
            per[k] = per.get(k, 0) + 1
        keys = sorted(per)
        outs = await asyncio.gather(*(self.engines[k].generate(req.with_(n=per[k])) for k in keys))
        pools = {k: list(o) for k, o in zip(keys, outs, strict=True)}
        return [pools[k].pop(0) for k in picks]

    async def aclose(self) -> None:
        await asyncio.gather(*(e.aclose() for e in self.engines))


@dataclass(frozen=True)
class EnsembleParams:
    weights: list[float] = param([], "mixture weight per member (default: equal), e.g. 0.7,0.3")


@engine("ensemble", EnsembleParams, "several engines as one proposer, sampled by mixture weights")
def make_ensemble(model: str | None, params: EnsembleParams) -> EnsembleEngine:
    if not model:
        raise ConfigError('ensemble engine needs --model "ENGINE:MODEL,ENGINE:MODEL,..."')
    members = []
    for item in (m.strip() for m in model.split(",") if m.strip()):
        name, sep, sub = item.partition(":")
        if not sep or name == "ensemble":
            raise ConfigError(f"ensemble member {item!r} must look like ENGINE:MODEL (e.g. replay:file.jsonl)")
        members.append(make_engine(name, sub or None))
    try:
        return EnsembleEngine(members, params.weights or None)
    except ValueError as e:
        raise ConfigError(f"ensemble engine: {e} (got {len(members)} members, weights {params.weights})") from e
