"""MITS-style step scores (Li et al. 2025, "MITS: Mutual Information Tree Search"): the pointwise
mutual information between the question and a step, from the proposer's own log-probabilities::

    PMI(step_k) = log p(step_k | question, steps_<k) − log p(step_k | steps_<k)

A step the question makes more likely scores higher; a generic step that would follow the previous
steps anyway scores ~0. (The exact form is marked unverified in the shared notes.) The
question-free term uses the same chat template with an empty user message, so only the question's
information is removed. By default the PMI is averaged per token of the step (``per_token``) and
squashed by a sigmoid (``squash``) into (0, 1) so that search strategies (Beta posteriors, weighted
votes) can use it as a step reward.

Both terms need the engine to score *given* text (teacher forcing), which completion APIs offer
only with prompt logprobs / ``echo``:

- an engine with ``async score_text(req: GenerationRequest, text: str) -> list[float]`` (the
  per-token logprobs of ``text`` continuing ``req``'s messages + prefix) is used as is;
- the embedded llama.cpp engine: llama.cpp's server rejects ``echo`` (no prompt logprobs), so the
  step's token ids are *forced* with a token-literal grammar (``root ::= <[id]> <[id]> ...``) at
  T=0 while ``logprobs`` reports the raw (pre-grammar) model probabilities of each forced token;
  the prompt is sent as token ids (the engine's own template + prefix ids), so the prefix cache
  serves it;
- any other engine gets a ConfigError.

Scores cost verifier tokens (charged to the problem). ``score_last_steps`` scores only the last
step (what the tree searches ask for); ``score_steps`` every step; ``score`` the mean step PMI.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import param
from ttscale.core.types import Candidate, GenerationRequest, Problem
from ttscale.verifiers.base import verifier

if TYPE_CHECKING:
    from ttscale.core.context import Context


@dataclass(frozen=True)
class PMIParams:
    per_token: bool = param(True, "average the PMI over the step's tokens (False: sum)")
    squash: Literal["sigmoid", "none"] = param("sigmoid", "map the PMI into (0, 1) with a sigmoid, or keep it raw")
    scale: float = param(1.0, "PMI multiplier before the sigmoid")
    delimiter: str = param("\n\n", "how steps are joined in the prefix (the strategies' step delimiter)")


def can_score_text(engine: Any) -> bool:
    """Whether PMI can be computed with this engine."""
    return callable(getattr(engine, "score_text", None)) or _is_llamacpp(engine)


def _is_llamacpp(engine: Any) -> bool:
    return all(hasattr(engine, a) for a in ("base_url", "prompt_ids", "tokenize")) and \
        getattr(engine, "name", "") == "embedded"


def token_grammar(ids: Sequence[int]) -> str:
    """A GBNF grammar that accepts exactly this token sequence (llama.cpp token literals)."""
    return "root ::= " + " ".join(f"<[{int(t)}]>" for t in ids)


async def llamacpp_score_text(engine: Any, req: GenerationRequest, text: str) -> tuple[list[float], int]:
    """Per-token logprobs of ``text`` after ``req`` (messages + prefix) on the embedded llama.cpp
    engine, by grammar-forced decoding at T=0; also the prompt's token count."""
    import httpx

    prompt = await asyncio.to_thread(engine.prompt_ids, req)
    target = await asyncio.to_thread(engine.tokenize, text)
    if not target:
        return [], len(prompt)
    body = {"prompt": list(prompt), "max_tokens": len(target), "temperature": 0.0, "logprobs": 1,
            "grammar": token_grammar(target), "cache_prompt": True, "stream": False}
    try:
        async with httpx.AsyncClient(base_url=engine.base_url, timeout=120.0, trust_env=False) as http:
            r = await http.post("/v1/completions", json=body)
    except httpx.HTTPError as e:
        raise EngineError(f"pmi: scoring on the embedded engine failed: {e}") from e
    if r.status_code != 200:
        raise EngineError(f"pmi: llama.cpp returned {r.status_code}: {r.text[:300]}")
    content = ((r.json().get("choices") or [{}])[0].get("logprobs") or {}).get("content") or []
    got = [int(c["id"]) for c in content][: len(target)]
    if got != list(target):
        raise EngineError(f"pmi: llama.cpp did not follow the forced tokens ({got[:8]} vs {list(target)[:8]})")
    return [float(c["logprob"]) for c in content[: len(target)]], len(prompt)


class PMIVerifier(Verifier):
    """MITS PMI step scores (module docstring), through the policy engine by default."""

    name = "pmi"

    def __init__(self, engine: Engine | None = None, params: PMIParams | None = None) -> None:
        self.engine = engine
        self.params = params or PMIParams()

    def _engine(self, ctx: Context) -> Any:
        eng = self.engine or ctx.engine
        if not can_score_text(eng):
            raise ConfigError(
                f"verifier 'pmi' needs an engine that can score given text (prompt logprobs / echo); "
                f"engine {getattr(eng, 'name', eng)!r} cannot. Use the embedded engine (llama.cpp, scored by "
                "grammar-forced decoding) or an engine with a score_text method."
            )
        return eng

    async def _logprob(self, eng: Any, ctx: Context, messages: tuple[dict[str, str], ...], prefix: str,
                       text: str) -> tuple[float, int]:
        req = GenerationRequest(messages=messages, prefix=prefix, max_tokens=1, temperature=0.0)
        if callable(getattr(eng, "score_text", None)):
            lps = list(await eng.score_text(req, text))
            ctx.meter.charge_verifier(len(" ".join(m["content"] for m in messages).split()), len(lps))
        else:
            lps, n_prompt = await llamacpp_score_text(eng, req, text)
            ctx.meter.charge_verifier(n_prompt, len(lps))
        return float(sum(lps)), len(lps)

    async def step_pmi(self, ctx: Context, steps: Sequence[str], k: int) -> float:
        """The (averaged, squashed) PMI of ``steps[k]`` given the question and ``steps[:k]``."""
        eng = self._engine(ctx)
        d = self.params.delimiter
        prefix = "".join(s + d for s in steps[:k])
        text = steps[k]
        with_q = ctx.messages()
        without_q = tuple({**m, "content": ""} if m.get("role") == "user" else dict(m) for m in with_q)
        (a, n), (b, _) = await asyncio.gather(self._logprob(eng, ctx, with_q, prefix, text),
                                              self._logprob(eng, ctx, without_q, prefix, text))
        return self.transform(a - b, n)

    def transform(self, pmi: float, n_tokens: int) -> float:
        p = self.params
        v = pmi / n_tokens if p.per_token and n_tokens else pmi
        v *= p.scale
        if p.squash == "sigmoid":
            return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, v))))
        return v

    async def score_last_steps(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        return list(await asyncio.gather(*(
            self.step_pmi(ctx, c.steps, len(c.steps) - 1) if c.steps else _zero() for c in candidates
        )))

    async def score_steps(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[list[float]]:
        return list(await asyncio.gather(*(
            asyncio.gather(*(self.step_pmi(ctx, c.steps, k) for k in range(len(c.steps)))) for c in candidates
        )))

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        steps = await self.score_steps(problem, candidates, ctx)
        return [sum(s) / len(s) if s else 0.0 for s in steps]


async def _zero() -> float:
    return 0.0


@verifier("pmi", PMIParams, "MITS step PMI: log p(step | question, prefix) - log p(step | prefix), from the policy")
def make_pmi(engine: Engine, params: PMIParams) -> PMIVerifier:
    return PMIVerifier(engine, params)
