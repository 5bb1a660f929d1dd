"""A generation cache in front of any engine: seeded samples are stored in SQLite and served again
when the same request comes back (``ttscale run --cache FILE``, ``cache:`` in a sweep recipe).

Why: strategies that begin by sampling N programs or solutions from the same prompt with the same
seed (the code strategies, best-of-N against self-consistency, a budget sweep at N = 4 then 8) then
share their samples, so a sweep generates each sample once and every strategy is compared on the
same draws (a paired comparison, lower variance than independent runs).

Rules, so that a cached run is a run the engine could have produced:

- Only seeded requests without a stream monitor are cached (the context seeds every request; a
  monitor stops samples early depending on the caller, so its results are not reusable).
- Sample ``i`` of a request seeded ``s`` is stored as the sample seeded ``s + i``: what the embedded
  and vLLM engines draw for it. A request whose samples are partly stored asks the engine only for
  the missing ones, as runs of consecutive seeds (one request per run, so the engine still shares
  the prompt's prefill among them). Samples are stored when their request returns: a run stopped
  mid-request keeps the samples of the requests that had finished.
- The key is everything that changes the text: engine, model, messages, raw prompt, prefix and its
  token ids, temperature, top-p, max tokens, stop strings, logprobs and the seed. Samples that ended
  ``cancelled``, ``budget`` or ``error`` are not stored.
- A reused sample keeps its token counts: the run is charged what the strategy spent, as if it had
  generated it (the cache saves wall time, not cost). :attr:`CachingEngine.hits` counts reuses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Engine
from ttscale.core.types import Completion, GenerationRequest, TokenLogprob

KEPT = ("stop", "length")
"""Finish reasons of samples worth storing."""


def request_key(engine: Engine, req: GenerationRequest, seed: int) -> str:
    """The cache key of the sample of ``req`` seeded ``seed`` (a SHA-256 hex digest)."""
    body = {
        "engine": engine.name, "model": engine.model, "messages": [dict(m) for m in req.messages],
        "raw_prompt": req.raw_prompt, "prefix": req.prefix,
        "prefix_token_ids": list(req.prefix_token_ids) if req.prefix_token_ids is not None else None,
        "temperature": req.temperature, "top_p": req.top_p, "max_tokens": req.max_tokens,
        "stop": list(req.stop), "logprobs": req.logprobs, "seed": seed,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def dump_completion(c: Completion) -> str:
    return json.dumps({
        "text": c.text, "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens,
        "prompt_tokens": c.prompt_tokens, "cached_prompt_tokens": c.cached_prompt_tokens,
        "token_ids": list(c.token_ids) if c.token_ids is not None else None,
        "logprobs": None if c.logprobs is None else [
            [t.token, t.logprob, t.token_id, [list(p) for p in t.top]] for t in c.logprobs],
        "answer_hint": c.answer_hint,
    })


def load_completion(raw: str) -> Completion:
    d = json.loads(raw)
    lps = d["logprobs"]
    return Completion(
        text=d["text"], finish_reason=d["finish_reason"], completion_tokens=d["completion_tokens"],
        prompt_tokens=d["prompt_tokens"], cached_prompt_tokens=d["cached_prompt_tokens"],
        token_ids=tuple(d["token_ids"]) if d["token_ids"] is not None else None,
        logprobs=None if lps is None else tuple(
            TokenLogprob(token=t, logprob=lp, token_id=tid, top=tuple((a, b) for a, b in top))
            for t, lp, tid, top in lps),
        answer_hint=d["answer_hint"],
    )


def missing_runs(found: Sequence[object | None]) -> list[tuple[int, int]]:
    """``(start, length)`` of each run of consecutive ``None`` in ``found``."""
    runs: list[tuple[int, int]] = []
    for i, f in enumerate(found):
        if f is not None:
            continue
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


class CachingEngine:
    """``inner`` with its seeded samples stored in the SQLite file ``path`` (created if missing).
    Everything else (tokenize, detokenize, replica stats, ...) is ``inner``'s."""

    def __init__(self, inner: Engine, path: str | Path) -> None:
        self.inner = inner
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS samples (key TEXT PRIMARY KEY, completion TEXT NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"generation cache {str(self.path)!r}: cannot open it as SQLite: {e}") from e
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str) -> Any:  # optional capabilities of the wrapped engine
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    def _get(self, key: str) -> Completion | None:
        row = self._db.execute("SELECT completion FROM samples WHERE key = ?", (key,)).fetchone()
        return load_completion(row[0]) if row else None

    def _put(self, rows: list[tuple[str, str]]) -> None:
        if rows:
            self._db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?)", rows)
            self._db.commit()

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        if req.seed is None or req.monitor is not None:
            return await self.inner.generate(req)
        keys = [request_key(self.inner, req, req.seed + i) for i in range(req.n)]
        found: list[Completion | None] = [self._get(k) for k in keys]
        self.hits += sum(f is not None for f in found)
        runs = missing_runs(found)
        self.misses += sum(n for _, n in runs)
        made = await asyncio.gather(*(self.inner.generate(req.with_(n=n, seed=req.seed + start))
                                      for start, n in runs))
        fresh: list[tuple[str, str]] = []
        for (start, n), outs in zip(runs, made, strict=True):
            for j, c in enumerate(outs[:n]):
                found[start + j] = c
                if c.finish_reason in KEPT:
                    fresh.append((keys[start + j], dump_completion(c)))
        self._put(fresh)
        return [c for c in found if c is not None]

    def stats(self) -> dict[str, int]:
        """Samples served from the cache and generated, since this engine was made."""
        return {"hits": self.hits, "misses": self.misses}

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self._db.close()
