"""Compute-optimal dispatch (Snell et al. 2024): predict a problem's difficulty, then run the
strategy a fitted policy chose for that difficulty and budget.

1. Sample ``probe_n`` solutions and score them with ``verifier`` (both charged to the problem: they
   go through the context, on top of what the dispatched strategy spends).
2. Predicted difficulty = the mean probe score; it is binned with the policy's predicted-difficulty
   edges (``predicted_binning``, written by ``ttscale fit-policy``; bin 0 = easiest).
3. The policy's entry for (bin, the largest policy budget <= ``budget``) names a registered
   strategy and its parameters; it runs through the registry with the same context, and its
   Outcome is returned with ``extra`` += ``difficulty_bin``, ``predicted_difficulty``,
   ``probe_scores`` and ``dispatched`` ({strategy, params, budget}). When no probe could be drawn
   or scored (budget spent), the policy's overall choice at that budget is used
   (``difficulty_bin`` = None). The probe candidates are listed first in ``candidates``
   (``extra.role = "probe"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted, ConfigError
from ttscale.core.policy import Binning, load_policy, lookup
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem
from ttscale.strategies.base import Outcome, load_strategies, strategy


@dataclass(frozen=True)
class ComputeOptimalParams:
    policy: str = param("", "policy JSON written by `ttscale fit-policy`")
    budget: int = param(16, "generations for the dispatched strategy (uses the largest policy budget <= this)")
    probe_n: int = param(4, "samples drawn and scored to predict the difficulty")
    verifier: str = param("llm_judge", "verifier that scores the probe samples")
    temperature: float = param(0.7, "probe sampling temperature")
    max_tokens: int = param(1024, "max generated tokens per probe sample")
    logprobs: int = param(0, "top-k logprobs of the probe samples (the confidence verifier needs them)")

    def __post_init__(self) -> None:
        if self.probe_n < 1:
            raise ValueError(f"probe_n must be >= 1, got {self.probe_n}")
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}")


_cache: dict[tuple[str, float], dict[str, Any]] = {}


def _policy(path: str) -> dict[str, Any]:
    if not path:
        raise ConfigError("strategy 'compute_optimal': parameter policy is required (a `ttscale fit-policy` JSON)")
    p = Path(path)
    try:
        key = (str(p.resolve()), p.stat().st_mtime)
    except OSError as e:
        raise ConfigError(f"strategy 'compute_optimal': policy={path!r} cannot be read: {e.strerror}") from e
    if key not in _cache:
        pol = load_policy(p)
        if not pol.get("predicted_binning"):
            raise ConfigError(f"policy file {p}: field predicted_binning is null (the table it was fitted on had "
                              "no verifier scores), so compute_optimal cannot bin new problems")
        _cache[key] = pol
    return _cache[key]


@strategy("compute_optimal", ComputeOptimalParams,
          "predict difficulty from a few scored samples, then run the policy's strategy for it (Snell et al.)")
async def compute_optimal(problem: Problem, ctx: Context, p: ComputeOptimalParams) -> Outcome:
    pol = _policy(p.policy)
    binning = Binning.from_dict(pol["predicted_binning"], f"policy file {p.policy}: field predicted_binning")
    probes: list[Candidate] = []
    try:
        probes = await ctx.sample(p.probe_n, temperature=p.temperature, max_tokens=p.max_tokens,
                                   logprobs=p.logprobs or None)
    except BudgetExhausted:
        probes = []
    probes = await ctx.score(probes, p.verifier) if probes else []
    probes = [c.with_(extra={**c.extra, "role": "probe"}) for c in probes]
    scores = [float(c.score) for c in probes if c.score is not None]
    predicted = fmean(scores) if scores else None
    dbin = binning.bin_of(predicted) if predicted is not None else None
    entry = lookup(pol, dbin, p.budget, where=f"policy file {p.policy}")
    ctx.log("compute_optimal", predicted_difficulty=predicted, difficulty_bin=dbin,
            strategy=entry["strategy"], params=entry["params"], budget=entry["budget"])
    target = load_strategies().get(entry["strategy"])
    out = await target.target(problem, ctx, target.make_params(entry["params"]))
    extra = {**out.extra, "difficulty_bin": dbin, "predicted_difficulty": predicted, "probe_scores": scores,
             "dispatched": {"strategy": entry["strategy"], "params": dict(entry["params"]),
                            "budget": entry["budget"]}}
    return Outcome(out.answer, out.chosen, [*probes, *out.candidates], extra)
