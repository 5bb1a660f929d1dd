"""TEST SUPPORT: a deterministic engine that returns scripted texts. Not a model.

Tokens are whitespace-separated words, so token counts are exact and easy to predict in tests.
Every request is recorded in ``calls`` (in arrival order), so tests can assert what a strategy sent.

Scripts:
- a mapping ``problem_id -> [text, ...]``: the k-th sample drawn for that problem gets
  ``texts[k % len(texts)]``;
- a callable ``(request, k) -> str | ScriptedReply``, with ``k`` the per-problem sample index.

From the CLI: ``--engine scripted --model script.json`` with a JSON object of the first form.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ttscale.core.errors import ConfigError
from ttscale.core.registry import param
from ttscale.core.types import Completion, GenerationRequest, TokenLogprob
from ttscale.engines.base import engine


@dataclass(frozen=True)
class ScriptedReply:
    """A scripted sample with optional per-token logprobs (one per word) and a fixed answer."""

    text: str
    logprobs: Sequence[float] | None = None
    answer: str | None = None


Script = Mapping[str, Sequence[str]] | Callable[[GenerationRequest, int], "str | ScriptedReply"]


def _words(text: str) -> list[str]:
    return text.split()


class ScriptedEngine:
    """Deterministic engine for unit tests (see module docstring)."""

    name = "scripted"
    supports_token_ids = False
    supports_logprobs = True

    def __init__(self, script: Script, *, model: str = "scripted", params_count: float | None = None,
                 delay_s: float = 0.0) -> None:
        self.script = script
        self.model = model
        self.params_count = params_count
        self.delay_s = delay_s
        self.calls: list[GenerationRequest] = []
        self._drawn: dict[str, int] = defaultdict(int)

    def _reply(self, req: GenerationRequest) -> ScriptedReply:
        key = req.problem_id or ""
        k = self._drawn[key]
        self._drawn[key] += 1
        if callable(self.script):
            r = self.script(req, k)
        else:
            texts = self.script.get(key)
            if not texts:
                raise ConfigError(f"scripted engine: no script for problem {key!r}")
            r = texts[k % len(texts)]
        return r if isinstance(r, ScriptedReply) else ScriptedReply(str(r))

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        self.calls.append(req)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        msgs = " ".join(m["content"] for m in req.messages) if req.messages else req.raw_prompt or ""
        prompt_tokens = len(_words(msgs)) + len(_words(req.prefix))
        out = []
        for i in range(req.n):
            reply = self._reply(req)
            words = _words(reply.text)
            finish = "stop"
            for s in req.stop:
                cut = reply.text.find(s)
                if cut >= 0:
                    words = _words(reply.text[:cut])
                    break
            if len(words) > req.max_tokens:
                words, finish = words[: req.max_tokens], "length"
            lps = None
            if reply.logprobs is not None or req.logprobs:
                vals = list(reply.logprobs or [])
                lps = tuple(
                    TokenLogprob(w, vals[j] if j < len(vals) else -1.0,
                                 top=((w, vals[j] if j < len(vals) else -1.0),))
                    for j, w in enumerate(words)
                )
            if req.monitor is not None:
                for j in range(len(words)):
                    if req.monitor(lps[: j + 1] if lps else (), " ".join(words[: j + 1])):
                        words, finish = words[: j + 1], "cancelled"
                        lps = lps[: j + 1] if lps else None
                        break
            out.append(Completion(
                text=" ".join(words),
                finish_reason=finish,  # type: ignore[arg-type]
                completion_tokens=len(words),
                prompt_tokens=prompt_tokens if i == 0 else 0,
                logprobs=lps,
                answer_hint=reply.answer,
            ))
        return out

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class ScriptedParams:
    delay_s: float = param(0.0, "seconds to wait per request (to test concurrency)")


@engine("scripted", ScriptedParams, "TEST SUPPORT: deterministic scripted texts from a JSON file")
def make_scripted(model: str | None, params: ScriptedParams) -> ScriptedEngine:
    if not model:
        raise ConfigError("scripted engine needs --model SCRIPT.json (problem id -> list of texts)")
    path = Path(model)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"scripted engine: cannot read script {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"scripted engine: {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"scripted engine: {path} must hold a JSON object of problem id -> texts")
    return ScriptedEngine({str(k): list(v) for k, v in data.items()}, model=str(path), delay_s=params.delay_s)
