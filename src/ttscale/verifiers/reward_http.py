"""A reward model served over HTTP (vLLM's pooling / classification / score APIs), with the same
interface as :mod:`ttscale.verifiers.prm`.

Endpoints (``endpoint``):

- ``pooling`` (``POST /pooling``): for a PRM served with step pooling, e.g. ``vllm serve
  Qwen/Qwen2.5-Math-PRM-7B --task reward`` (vLLM's ``STEP`` pooler returns one probability vector
  per step tag). Every candidate is one input text, ``template`` filled with the question and the
  steps each followed by ``step_separator``; all candidates of a call go in one request. A step's
  score is its vector's ``label_index`` entry (default -1: the "good" class), or a sigmoid of a
  single value. A flat list as long as the steps is read as per-step scores; any other flat vector
  is one outcome score.
- ``classify`` (``POST /classify``): a sequence classifier used as an ORM: each solution (or, for
  step scores, each prefix) is one input; the score is ``probs[label_index]``.
- ``score`` (``POST /v1/score``): a cross-encoder style scorer: ``text_1`` = the question,
  ``text_2`` = the solutions; the score is ``data[i].score``.

``path`` overrides the endpoint's path. Requests are retried on connection errors and 5xx
(``max_retries``); errors name the URL. Calls are counted as verifier calls of the problem (token
counts are not reported by these APIs).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem
from ttscale.verifiers.base import verifier

if TYPE_CHECKING:
    from ttscale.core.context import Context

QWEN_PRM_TEMPLATE = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
    "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{steps}<|im_end|><|endoftext|>"
)
PATHS = {"pooling": "/pooling", "classify": "/classify", "score": "/v1/score"}


@dataclass(frozen=True)
class RewardHTTPParams:
    url: str = param("http://127.0.0.1:8000", "server base URL (without the endpoint path)")
    model: str = param("Qwen/Qwen2.5-Math-PRM-7B", "model name sent with each request")
    endpoint: Literal["pooling", "classify", "score"] = param("pooling", "pooling (step PRM), classify or score")
    path: str | None = param(None, "override the endpoint's path, e.g. /v1/pooling")
    template: str = param(QWEN_PRM_TEMPLATE, "input text with {question} and {steps} (pooling/classify)")
    step_separator: str = param("<extra_0>", "appended to every step in {steps} (the PRM's step tag)")
    label_index: int = param(-1, "which class probability is the score (-1 = last, the 'good' class)")
    timeout_s: float = param(120.0, "per-request timeout")
    max_retries: int = param(2, "retries on connection errors and 5xx")
    api_key: str | None = param(None, "bearer token, if the server wants one")

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("url must not be empty")
        try:
            self.template.format(question="", steps="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"template may use only {{question}} and {{steps}}: {e!r}") from e


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


class RewardHTTPVerifier(Verifier):
    """See the module docstring."""

    name = "reward_http"

    def __init__(self, params: RewardHTTPParams) -> None:
        self.p = params
        headers = {"Authorization": f"Bearer {params.api_key}"} if params.api_key else {}
        self._http = httpx.AsyncClient(base_url=params.url.rstrip("/"), timeout=params.timeout_s,
                                       headers=headers, trust_env=False)
        self.path = params.path or PATHS[params.endpoint]

    def text(self, question: str, steps: Sequence[str]) -> str:
        sep = self.p.step_separator
        return self.p.template.format(question=question, steps="".join(s.strip() + sep for s in steps))

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.p.url.rstrip('/')}{self.path}"
        last: str = ""
        for attempt in range(self.p.max_retries + 1):
            try:
                r = await self._http.post(self.path, json=body)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code == 200:
                    return r.json()
                last = f"HTTP {r.status_code}: {r.text[:300]}"
                if r.status_code < 500 and r.status_code != 429:
                    break
            if attempt < self.p.max_retries:
                await asyncio.sleep(0.2 * 2**attempt)
        raise EngineError(f"reward model at {url} failed: {last}")

    def _pick(self, row: Sequence[Any]) -> float:
        if len(row) == 1:
            return _sigmoid(float(row[0]))
        return float(row[self.p.label_index])

    def _read_pooling(self, item: Any, n_steps: int) -> list[float]:
        data = item.get("data") if isinstance(item, dict) else item
        if not isinstance(data, list) or not data:
            raise EngineError(f"reward model at {self.p.url}{self.path}: no pooling data in {str(item)[:200]}")
        if all(isinstance(x, int | float) for x in data):
            return [float(x) for x in data] if len(data) == n_steps else [self._pick(data)]
        scores = [self._pick(row) for row in data]
        if len(scores) > n_steps and n_steps:
            raise ConfigError(
                f"reward model at {self.p.url}{self.path} returned {len(scores)} vectors for {n_steps} steps: "
                "serve it with step pooling (vLLM: pooling_type STEP with the step tag id)"
            )
        return scores

    async def _outcomes(self, question: str, solutions: list[list[str]]) -> list[float]:
        if not solutions:
            return []
        if self.p.endpoint == "score":
            body = {"model": self.p.model, "text_1": question, "text_2": ["\n\n".join(s) for s in solutions]}
            data = sorted((await self._post(body)).get("data") or [], key=lambda d: d.get("index", 0))
            return [float(d["score"]) for d in data]
        body = {"model": self.p.model, "input": [self.text(question, s) for s in solutions]}
        data = sorted((await self._post(body)).get("data") or [], key=lambda d: d.get("index", 0))
        if self.p.endpoint == "classify":
            return [self._pick(d["probs"]) for d in data]
        return [self._read_pooling(d, len(s))[-1] for d, s in zip(data, solutions, strict=True)]

    async def score_steps(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[list[float]]:
        q = problem.question
        steps = [list(c.steps or ((c.text,) if c.text.strip() else ())) for c in candidates]
        if self.p.endpoint == "pooling":
            body = {"model": self.p.model, "input": [self.text(q, s) for s in steps]}
            data = sorted((await self._post(body)).get("data") or [], key=lambda d: d.get("index", 0))
            ctx.meter.charge_verifier(0, 0)
            if len(data) != len(steps):
                raise EngineError(f"reward model at {self.p.url}{self.path}: {len(data)} results for {len(steps)} inputs")
            return [self._read_pooling(d, len(s)) for d, s in zip(data, steps, strict=True)]
        flat = [(i, s[: k + 1]) for i, s in enumerate(steps) for k in range(len(s))]
        got = await self._outcomes(q, [s for _, s in flat])
        ctx.meter.charge_verifier(0, 0)
        out: list[list[float]] = [[] for _ in candidates]
        for (i, _), v in zip(flat, got, strict=True):
            out[i].append(v)
        return out

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        if self.p.endpoint == "pooling":
            return [s[-1] if s else 0.0 for s in await self.score_steps(problem, candidates, ctx)]
        sols = [list(c.steps or (c.text,)) for c in candidates]
        ctx.meter.charge_verifier(0, 0)
        return await self._outcomes(problem.question, sols)

    async def aclose(self) -> None:
        await self._http.aclose()


@verifier("reward_http", RewardHTTPParams, "a reward model over HTTP (vLLM /pooling, /classify or /v1/score)")
def make_reward_http(engine: Engine, params: RewardHTTPParams) -> RewardHTTPVerifier:
    return RewardHTTPVerifier(params)
